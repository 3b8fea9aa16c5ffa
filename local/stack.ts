/**
 * `deno task dev`: the whole system on this machine, no Docker — two throwaway PostgreSQL
 * clusters (Backend and Admin, both with pg_cron) bootstrapped by `supabase_admin` as
 * Supabase's image is (API roles, a non-superuser `postgres`, Vault and pg_net stand-ins),
 * both projects' migrations pushed by the real Supabase CLI as `postgres`, a transaction-mode
 * pgbouncer with TLS in front of each cluster (the functions' only way in), the functions
 * behind one gateway, the MercadoPago sandbox, and a real pg_cron schedule. `--profile test`
 * runs the same stack on its own ports for the tests. Stops everything it started on
 * SIGINT/SIGTERM.
 */
import { parseArgs } from "node:util";
import { connect, type Sql } from "../shared/platform/db.ts";
import { loadConfig } from "../shared/platform/config.ts";
import { createLogger } from "../shared/platform/log.ts";
import { ADMIN_PROJECT, BACKEND_PROJECT, migrate } from "../tooling/migrate.ts";
import { Cluster, ensureReachable, findPostgres, MissingPrerequisite } from "./postgres.ts";
import { bootstrap } from "./bootstrap.ts";
import { findPgbouncer, makeCertificate, Pooler } from "./pooler.ts";
import { createGateway } from "./gateway.ts";
import { resolveLimits } from "./edge/limits.ts";
import { createSandbox, type SandboxApp, serveSandbox } from "./sandbox.ts";
import { startNetWorker } from "./net_worker.ts";
import { createAppPage } from "./app_page.ts";
import { createPlatformReceiver } from "./platform_receiver.ts";
import { assertPortsFree, type Ports, resolvePorts } from "./ports.ts";
import { acquireStateLock } from "./state_lock.ts";
import { type MpSite, sandboxApps, stackSites, throwawayApps } from "./mp_apps.ts";
import {
  formatEnvFile,
  STACK_PROFILES,
  type StackProfile,
  stackStateDir,
} from "../tooling/env_file.ts";

/**
 * The project's secrets every function gets (`supabase secrets set` on hosted Supabase), on top
 * of what Supabase injects: the one list, for the stack's isolates and the tests' own serves.
 */
export const FUNCTION_SECRETS = [
  "MP_TOKEN_KEYS",
  "MP_APPS",
  "MP_SITE_ID",
  "MP_CLIENT_ID",
  "MP_CLIENT_SECRET",
  "MP_REDIRECT_URI",
  "MP_API_URL",
  "MP_AUTH_URL",
  "MP_OAUTH_PKCE",
  "MP_WEBHOOK_SECRET",
  "APP_RETURN_URL",
  "PLATFORM_WEBHOOK_URL",
  "PLATFORM_WEBHOOK_SECRETS",
  "PLATFORM_WEBHOOK_TIMEOUT_MS",
] as const;

const ROOT = new URL("../", import.meta.url).pathname;

const randomBase64 = (n: number) =>
  btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(n))));
const randomHex = (n: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
const b64url = (s: string | Uint8Array) =>
  (typeof s === "string" ? btoa(s) : btoa(String.fromCharCode(...s)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/** A legacy-style API-role JWT signed with a throwaway secret, as `supabase start` prints. */
async function roleJwt(role: "service_role" | "anon"): Promise<string> {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const now = Math.floor(Date.now() / 1000);
  const payload = b64url(
    JSON.stringify({
      iss: "supabase-local",
      role,
      iat: now,
      exp: now + 10 * 365 * 86400,
    }),
  );
  const key = await crypto.subtle.importKey(
    "raw",
    crypto.getRandomValues(new Uint8Array(32)),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const sig = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${header}.${payload}`)),
  );
  return `${header}.${payload}.${b64url(sig)}`;
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: { profile: { type: "string", default: "dev" } },
  });
  const name = values.profile!;
  if (!(name in STACK_PROFILES)) {
    throw new MissingPrerequisite(`unknown profile ${name} (dev or test)`);
  }
  const profile = name as StackProfile;
  const started = performance.now();
  // One MercadoPago application per site (MP_APPS), or the single app (the test profile's).
  const sites = stackSites(Deno.env.get("STACK_MP_SITES"), profile);
  const bin = await findPostgres();
  const pgbouncer = await findPgbouncer();
  if (!pgbouncer) {
    throw new MissingPrerequisite("pgbouncer is missing: run `sudo apt-get install pgbouncer`");
  }
  const env = (name: string) => Deno.env.get(name);
  const ports = resolvePorts(env, STACK_PROFILES[profile]);
  // The state folder follows the port base, and its lock refuses a second stack on it: a stack
  // beside this one never stops or wipes this one's databases.
  const relDir = stackStateDir(profile, env);
  const stateDir = relDir.startsWith("/") ? relDir : `${ROOT}${relDir}`;
  const release = await acquireStateLock(stateDir, relDir);
  try {
    assertPortsFree(ports);
    const envFile = `${relDir}/stack.env`;
    console.log(
      `Starting the local stack (${name}) on ports ${ports.gateway}–${ports.adminPooler}: state folder ${relDir}, env file ${envFile}`,
    );
    await Deno.remove(`${stateDir}/stack.env`).catch(() => {});
    const run = { name, stateDir, folder: relDir, envFile, started, ports, bin, release, sites };
    await startStack(run, pgbouncer);
  } catch (err) {
    await release();
    throw err;
  }
}

/** Creates and starts both clusters and their poolers under the (locked) state folder, then serves. */
async function startStack(run: ServeRun, pgbouncer: string) {
  const { stateDir, ports, bin } = run;
  const dataDir = await ensureReachable(`${stateDir}/pg`);
  const cron = [
    "shared_preload_libraries = 'pg_cron'",
    "cron.database_name = 'postgres'",
    "cron.use_background_workers = on",
    "max_worker_processes = 32",
  ];
  const backend = new Cluster(
    { name: "backend", dir: `${dataDir}/backend`, port: ports.backend, conf: cron },
    bin,
  );
  const admin = new Cluster(
    { name: "admin", dir: `${dataDir}/admin`, port: ports.admin, conf: cron },
    bin,
  );
  const password = randomHex(24);
  const cert = await makeCertificate(`${dataDir}/tls`);
  const pooler = (name: string, port: number, serverPort: number) =>
    new Pooler(
      { name, dir: `${dataDir}/${name}-pooler`, port, serverPort, cert, password },
      pgbouncer,
    );
  const backendPooler = pooler("backend", ports.backendPooler, ports.backend);
  const adminPooler = pooler("admin", ports.adminPooler, ports.admin);
  const stopClusters = () =>
    Promise.all([backendPooler.stop(), adminPooler.stop(), backend.stop(), admin.stop()]);
  try {
    await Promise.all([
      backend.create(),
      admin.create(),
      backendPooler.create(),
      adminPooler.create(),
    ]);
    await Promise.all([backend.start(), admin.start(), backendPooler.start(), adminPooler.start()]);
    await serve(run, {
      backend,
      admin,
      backendPooler,
      adminPooler,
      stopClusters,
    });
  } catch (err) {
    await stopClusters().catch(() => {});
    throw err;
  }
}

/** The stack's addresses and throwaway keys. */
async function makeKeys(ports: Ports) {
  const host = "127.0.0.1";
  return {
    host,
    gatewayUrl: `http://${host}:${ports.gateway}`,
    sandboxUrl: `http://${host}:${ports.sandbox}`,
    secretKey: `sb_secret_${randomHex(16)}`,
    serviceRoleKey: await roleJwt("service_role"),
    anonKey: await roleJwt("anon"),
    publishableKey: `sb_publishable_${randomHex(16)}`,
    limits: resolveLimits(),
  };
}

/**
 * The three environments of the stack: what the functions and the files share (`common`), the
 * functions' whole environment as Supabase gives it (`functionEnv`), and `stack.env` for
 * scripts and tests (`env`: direct superuser URLs and the poolers').
 */
function stackEnvironment(
  run: ServeRun,
  db: ServeDatabases,
  keys: Awaited<ReturnType<typeof makeKeys>>,
) {
  const { backend, admin, backendPooler, adminPooler } = db;
  const { ports } = run;
  const {
    host,
    gatewayUrl,
    sandboxUrl,
    secretKey,
    serviceRoleKey,
    anonKey,
    publishableKey,
    limits,
  } = keys;
  // What the functions and the files share; the database URLs differ (below).
  const redirectUri = `${gatewayUrl}/functions/v1/mp-oauth-callback`;
  const common: Record<string, string> = {
    SUPABASE_URL: gatewayUrl,
    FUNCTIONS_URL: `${gatewayUrl}/functions/v1`,
    SUPABASE_SERVICE_ROLE_KEY: serviceRoleKey,
    SERVICE_ROLE_KEY: serviceRoleKey,
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: secretKey }),
    SECRET_KEY: secretKey,
    MP_TOKEN_KEYS: `local1:${randomBase64(32)}`,
    MP_REDIRECT_URI: redirectUri,
    MP_API_URL: sandboxUrl,
    MP_AUTH_URL: sandboxUrl,
    SANDBOX_URL: sandboxUrl,
    MP_OAUTH_PKCE: "true",
    APP_RETURN_URL: `${gatewayUrl}/app`,
    // Events to the platform (docs/contract.md, "mp-deliver-events"): two secrets, as during a
    // rotation. The test profile
    // points at a receiver the tests run themselves on STACK_PORT_BASE + 7 (none by default).
    PLATFORM_WEBHOOK_URL: Deno.env.get("PLATFORM_WEBHOOK_URL") ??
      (run.name === "test"
        ? `http://${host}:${ports.gateway + 7}/platform/events`
        : `${gatewayUrl}/platform/events`),
    PLATFORM_WEBHOOK_SECRETS: `whsec_${randomBase64(24)} whsec_${randomBase64(24)}`,
    PLATFORM_WEBHOOK_TIMEOUT_MS: Deno.env.get("PLATFORM_WEBHOOK_TIMEOUT_MS") ??
      (run.name === "test" ? "1500" : "15000"),
    BACKEND_PGDATA: backend.spec.dir,
    ADMIN_PGDATA: admin.spec.dir,
    PG_BIN: run.bin,
    GATEWAY_PORT: String(ports.gateway),
    BACKEND_DB_PORT: String(ports.backend),
    ADMIN_DB_PORT: String(ports.admin),
    SANDBOX_PORT: String(ports.sandbox),
    BACKEND_POOLER_PORT: String(ports.backendPooler),
    ADMIN_POOLER_PORT: String(ports.adminPooler),
    ...mpApplications(run, redirectUri, sandboxUrl),
  };
  // The functions' whole environment, as on Supabase: what it injects (SUPABASE_DB_URL on the
  // pooler, as `postgres`) plus the project's secrets (ADMIN_DB_URL on the Admin pooler).
  const pick = (...names: string[]) =>
    Object.fromEntries(names.filter((n) => n in common).map((n) => [n, common[n]] as const));
  const functionEnv: Record<string, string> = {
    SUPABASE_URL: gatewayUrl,
    SUPABASE_DB_URL: backendPooler.url,
    SUPABASE_SECRET_KEYS: common.SUPABASE_SECRET_KEYS,
    SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: publishableKey }),
    SUPABASE_ANON_KEY: anonKey,
    SUPABASE_SERVICE_ROLE_KEY: serviceRoleKey,
    ADMIN_DB_URL: adminPooler.url,
    ...pick(...FUNCTION_SECRETS),
    // The wall clock the gateway enforces, which mp-refresh budgets against.
    EDGE_WALL_CLOCK_MS: String(limits.wallClockMs),
  };
  // stack.env, for scripts and tests: direct superuser URLs, and the poolers' URLs.
  const env: Record<string, string> = {
    ...common,
    SUPABASE_ANON_KEY: anonKey,
    BACKEND_DB_URL: backend.url,
    ADMIN_DB_URL: admin.url,
    SUPABASE_DB_URL: backendPooler.url,
    BACKEND_POOLER_URL: backendPooler.url,
    ADMIN_POOLER_URL: adminPooler.url,
    EDGE_WALL_CLOCK_MS: String(limits.wallClockMs),
  };
  return { common, functionEnv, env };
}

/**
 * The MercadoPago applications of the stack: with sites, `MP_APPS` of one throwaway application
 * each (the first's also as `MP_CLIENT_ID`, `MP_CLIENT_SECRET` and `MP_WEBHOOK_SECRET`, so
 * what reads the single app's variables finds the default application); without, the single
 * app (at `MP_SITE_ID` when the environment sets it).
 */
function mpApplications(
  run: ServeRun,
  redirectUri: string,
  sandboxUrl: string,
): Record<string, string> {
  if (run.sites.length === 0) {
    const site = Deno.env.get("MP_SITE_ID");
    return {
      MP_CLIENT_ID: randomClientId(),
      MP_CLIENT_SECRET: randomHex(16),
      MP_WEBHOOK_SECRET: randomHex(24),
      ...(site ? { MP_SITE_ID: site } : {}),
    };
  }
  const apps = throwawayApps(run.sites, {
    redirectUri,
    authUrl: sandboxUrl,
    random: { id: randomClientId, secret: () => randomHex(24) },
  });
  const first = apps[run.sites[0]];
  return {
    MP_APPS: JSON.stringify(apps),
    MP_CLIENT_ID: first.client_id,
    MP_CLIENT_SECRET: first.client_secret,
    MP_WEBHOOK_SECRET: first.webhook_secrets[0],
  };
}

/** A throwaway MercadoPago client id (digits, as MercadoPago's are). */
function randomClientId(): string {
  return String(1000000 + Math.floor(Math.random() * 8999999));
}

/** As supabase_admin what Supabase's image sets up, then as postgres (not a superuser) both projects' migrations with the real CLI, as a deploy does. */
async function prepareDatabases(db: ServeDatabases, backendSql: Sql, adminSql: Sql) {
  await bootstrap(backendSql, { cron: true, standIns: true });
  await bootstrap(adminSql, { cron: true });
  await Promise.all([
    migrate(db.backend.postgresUrl, BACKEND_PROJECT),
    migrate(db.admin.postgresUrl, ADMIN_PROJECT),
  ]);
}

/**
 * Writes `stack.env` whole or not at all (a reader polling for it never sees half of it), owner
 * only, with `STACK_PID` naming the stack that wrote it; every value quoted for `set -a; . FILE`
 * and dotenv alike.
 */
async function writeEnvFile(run: ServeRun, env: Record<string, string>) {
  const path = `${run.stateDir}/stack.env`;
  const text = formatEnvFile({ ...env, STACK_PID: String(Deno.pid) }, [
    `The local stack (${run.name}) on ports ${run.ports.gateway}–${run.ports.adminPooler}; removed when it stops.`,
    `In a shell: set -a; . ${run.envFile}; set +a`,
  ]);
  await Deno.writeTextFile(`${path}.tmp`, text, { mode: 0o600 });
  await Deno.rename(`${path}.tmp`, path);
}

/** The lines a person reads once the stack is up. */
function printBanner(
  run: ServeRun,
  env: Record<string, string>,
  host: string,
  sandboxUrl: string,
  apps: SandboxApp[],
) {
  const { ports } = run;
  const seconds = ((performance.now() - run.started) / 1000).toFixed(1);
  console.log([
    "",
    `MercadoPago credential sync — local stack (${run.name}) up in ${seconds}s`,
    `  functions     ${env.FUNCTIONS_URL}/<name>`,
    `  app page      ${env.APP_RETURN_URL}`,
    `  backend db    postgres://supabase_admin@${host}:${ports.backend}/postgres (pg_cron, vault, pg_net stand-ins)`,
    `  admin db      postgres://supabase_admin@${host}:${ports.admin}/postgres (pg_cron)`,
    `  poolers       pgbouncer, transaction mode, TLS: postgres@${host}:${ports.backendPooler} (backend), :${ports.adminPooler} (admin)`,
    `  mp sandbox    ${sandboxUrl}`,
    `  mp apps       ${apps.map((a) => `${a.siteId} (client ${a.clientId})`).join(", ")}${
      run.sites.length > 0 ? " in MP_APPS" : ", the single app"
    }`,
    `  state folder  ${run.folder} (fresh on each start; one stack at a time: STACK_PORT_BASE or STACK_STATE_DIR for another)`,
    `  env file      ${run.envFile} (keys and URLs for scripts and tests: set -a; . ${run.envFile}; set +a)`,
    "Ctrl-C stops everything.",
    "",
  ].join("\n"));
}

/** What `serve` is asked to run. */
interface ServeRun {
  name: string;
  /** The state folder: absolute, and as the person gave it (relative to the repository). */
  stateDir: string;
  folder: string;
  envFile: string;
  started: number;
  ports: Ports;
  bin: string;
  /** Gives the state folder's lock back. */
  release: () => Promise<void>;
  /** The sites of its MercadoPago applications (`MP_APPS`); none: the single app. */
  sites: MpSite[];
}

/** The clusters and poolers `serve` runs on. */
interface ServeDatabases {
  backend: Cluster;
  admin: Cluster;
  backendPooler: Pooler;
  adminPooler: Pooler;
  stopClusters: () => Promise<unknown>;
}

/**
 * Brings the stack up on started clusters: databases prepared, environments made, the sandbox,
 * accounts page, platform receiver, gateway and pg_net worker served, `stack.env` written; stops
 * everything on SIGINT/SIGTERM.
 */
async function serve(run: ServeRun, db: ServeDatabases) {
  const { backend, admin } = db;
  const { ports, stateDir } = run;
  const log = createLogger({ component: "local-stack" });
  const backendSql = connect(backend.url, { max: 4 });
  const adminSql = connect(admin.url, { max: 2 });
  await prepareDatabases(db, backendSql, adminSql);

  const keys = await makeKeys(ports);
  const { host, gatewayUrl, sandboxUrl, secretKey, limits } = keys;
  await backendSql`select vault.create_secret(${gatewayUrl}, 'project_url')`;
  await backendSql`select vault.create_secret(${secretKey}, 'mp_sync_secret_key')`;
  const { common, functionEnv, env } = stackEnvironment(run, db, keys);

  // The sandbox knows the applications the functions are given, read back as they read them.
  const { apps, multi } = sandboxApps((name) => env[name]);
  const sandbox = createSandbox(
    multi ? { apps } : {
      clientId: apps[0].clientId,
      clientSecret: apps[0].clientSecret,
      webhookSecret: apps[0].webhookSecrets[0],
      siteId: apps[0].siteId,
    },
  );
  const receiver = createPlatformReceiver(
    common.PLATFORM_WEBHOOK_SECRETS,
    log.child({ component: "platform" }),
  );
  // The page offers the sites of the applications the functions run, read as they read them.
  const { mpApps, mpDefaultSite } = loadConfig(functionEnv);
  const appPage = createAppPage({
    functionsUrl: env.FUNCTIONS_URL,
    serverKey: secretKey,
    adminDbUrl: admin.url,
    backendDbUrl: backend.url,
    sandboxUrl,
    events: () => receiver.received,
    apps: { sites: [...mpApps.keys()], defaultSite: mpDefaultSite ?? apps[0].siteId },
  });
  const gateway = await createGateway({
    env: functionEnv,
    limits,
    extra: { "/app": appPage, "/platform/events": receiver.fetch },
  });
  const quiet = { onListen: () => {} };
  const servers = [
    // A TCP front, so the sandbox's lose_answer fault can close a connection unanswered.
    serveSandbox(sandbox, { hostname: host, port: ports.sandbox }),
    Deno.serve({ hostname: host, port: ports.gateway, ...quiet }, gateway.fetch),
  ];
  const netWorker = startNetWorker(backendSql, log.child({ component: "pg_net" }));

  await writeEnvFile(run, env);
  printBanner(run, env, host, sandboxUrl, apps);

  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    log.info("Stopping local stack");
    await netWorker.stop().catch(() => {});
    await Promise.all(servers.map((s) => s.shutdown().catch(() => {})));
    sandbox.close();
    await appPage.close().catch(() => {});
    await gateway.close();
    await Promise.all([backendSql.end({ timeout: 1 }), adminSql.end({ timeout: 1 })]);
    await db.stopClusters();
    await Deno.remove(`${stateDir}/stack.env`).catch(() => {});
    await run.release();
    log.info("Local stack stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
}

if (import.meta.main) {
  main().catch((err) => {
    if (err instanceof MissingPrerequisite) console.error(err.message);
    else console.error(`local stack failed: ${err?.message ?? err}`);
    Deno.exit(1);
  });
}
