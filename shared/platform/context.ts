/**
 * What every function shares in one isolate: the configuration (read once from the
 * environment), the two database pools and the imported key ring, each created on first use.
 */
import { type Config, loadConfig, type Need, requireConfig } from "./config.ts";
import { connect, FUNCTION_POOL_MAX, Pool, query, type Sql } from "./db.ts";
import { importKeyRing, type KeyRing } from "./crypto.ts";

/** The configuration, pools and keys one request works with. */
export interface Context {
  config: Config;
  /** Runs `work` on the Backend DB with the configured time bound. */
  backend<T>(work: (sql: Sql) => Promise<T>): Promise<T>;
  /** Runs `work` on the Admin DB with the configured time bound. */
  admin<T>(work: (sql: Sql) => Promise<T>): Promise<T>;
  /** The imported `MP_TOKEN_KEYS` ring. */
  keys(): Promise<KeyRing>;
}

/** Builds a context over a configuration; pools open lazily and close with `close()`. */
export function createContext(config: Config): Context & { close(): Promise<void> } {
  const open = (url: string) => () =>
    connect(url, { max: FUNCTION_POOL_MAX, timeoutMs: config.dbTimeoutMs });
  let backendPool: Pool | undefined;
  let adminPool: Pool | undefined;
  let ring: Promise<KeyRing> | undefined;
  const need = (n: Need) => requireConfig(config, [n]);
  return {
    config,
    backend(work) {
      if (!backendPool) {
        need("backendDbUrl");
        backendPool = new Pool(open(config.backendDbUrl!));
      }
      const pool = backendPool;
      return query("backend", config.dbTimeoutMs, () => work(pool.sql), () => pool.reset());
    },
    admin(work) {
      if (!adminPool) {
        need("adminDbUrl");
        adminPool = new Pool(open(config.adminDbUrl!));
      }
      const pool = adminPool;
      return query("admin", config.dbTimeoutMs, () => work(pool.sql), () => pool.reset());
    },
    keys() {
      if (!ring) {
        need("tokenKeys");
        ring = importKeyRing(config.tokenKeys!);
      }
      return ring;
    },
    async close() {
      await Promise.all([backendPool?.end(), adminPool?.end()]);
    },
  };
}

let shared: ReturnType<typeof createContext> | undefined;

/** The isolate's context, built from `Deno.env` the first time it is asked for. */
export function getContext(): Context {
  shared ??= createContext(loadConfig(Deno.env.toObject()));
  return shared;
}
