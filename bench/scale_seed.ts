/**
 * A fast seeder for scale benchmarks: N connected accounts in the Admin DB (`nv_accounts`,
 * real AES-256-GCM ciphertexts in the format of `shared/platform/crypto.ts`) linked 1:1 to N
 * Backend `clients` whose cache holds the plaintext token at the same version, except a
 * fraction of drifted caches (mostly emptied, some stale: version 0 with an older token).
 * Both tables are loaded with COPY, in chunks generated on the fly, so memory stays bounded
 * at any N; nothing in the schema is disabled (constraints, indexes and triggers stay).
 *
 * Seeded rows are recognisable by their ids alone: accounts are `5ca1ab1e-acc0-4000-8000-…`
 * and clients `5ca1ab1e-c11e-4000-8000-…`, so `clearScale` deletes exactly those rows and
 * nothing else. The last 12 hex digits are a bijective scramble of the account's number, so
 * that, as with random uuids, neither table's physical order follows its ids.
 *
 * On its own: `deno run -A bench/scale_seed.ts [<state dir>] [<accounts>|clear]` against a
 * stack already running from `<state dir>/stack.env` (default `.local/dev`).
 */
import { randomFillSync } from "node:crypto";
import { once } from "node:events";
import type { Writable } from "node:stream";
import { parseKeyRing } from "../shared/platform/config.ts";
import { encryptSecretSync, importKeyRing } from "../shared/platform/crypto.ts";
import type { Sql } from "../shared/platform/db.ts";

/** The id prefix of every seeded account (`nv_accounts.id`). */
export const SCALE_ACCOUNT_PREFIX = "5ca1ab1e-acc0-4000-8000-";
/** The id prefix of every seeded client (`clients.id`). */
export const SCALE_CLIENT_PREFIX = "5ca1ab1e-c11e-4000-8000-";
/** The first seeded MercadoPago seller id (`mp_user_id`); seeded ones are consecutive. */
const SCALE_MP_USER_BASE = 7_000_000_000;

/** Rows generated (and encrypted) per chunk written to COPY. */
const CHUNK = 5000;
const DAY_MS = 86_400_000;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Account number `i` as a seeded id with `prefix` (12 hex digits). */
function scaleId(prefix: string, i: number): string {
  return prefix + i.toString(16).padStart(12, "0");
}

/** A bijection of the 32-bit integers (odd multiplier, xor-shift): ids out of order. */
function scramble(i: number, k: number): number {
  const h = Math.imul(i, k) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

/** The id of seeded account number `i` (0 ≤ i < 2^32). */
export function scaleAccountId(i: number): string {
  return scaleId(SCALE_ACCOUNT_PREFIX, scramble(i, 0x9e3779b1));
}

/** The id of the client seeded account number `i` feeds. */
export function scaleClientId(i: number): string {
  return scaleId(SCALE_CLIENT_PREFIX, scramble(i, 0x85ebca6b));
}

/** A 32-bit mix of `i` and `salt` (murmur3's finaliser): cheap, well spread, deterministic. */
function mix(i: number, salt: number): number {
  let h = Math.imul(i ^ salt, 0x9e3779b1) ^ salt;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function hex32(h: number): string {
  return HEX[h >>> 24] + HEX[(h >>> 16) & 255] + HEX[(h >>> 8) & 255] + HEX[h & 255];
}

/** Which seeded accounts have a drifted cache, and how. */
type Drift = "none" | "emptied" | "stale";

/** The plaintexts and drift of seeded account `i` (a pure function of `i` and the run's salt). */
function account(i: number, salt: number, driftPermille: number, fromDay = 1) {
  const userId = SCALE_MP_USER_BASE + i;
  const tokenHex = hex32(mix(i, salt)) + hex32(mix(i, salt ^ 0x1)) + hex32(mix(i, salt ^ 0x2)) +
    hex32(mix(i, salt ^ 0x3));
  // `fromDay` to 180 days (1 by default), in steps of ~29 minutes at most.
  const day = fromDay + ((mix(i, salt ^ 0x4) % 8950) / 8950) * (180 - fromDay);
  const d = mix(i, salt ^ 0x5) % 1_000_000;
  // Of the drifted caches, 4 in 5 were emptied and 1 in 5 hold an older token (version 0).
  const drift: Drift = d >= driftPermille * 1000 ? "none" : d % 5 === 4 ? "stale" : "emptied";
  return {
    accountId: scaleAccountId(i),
    clientId: scaleClientId(i),
    userId,
    accessToken: `APP_USR-5520606${String(i).padStart(9, "0")}-112406-${tokenHex}-${userId}`,
    oldAccessToken: `APP_USR-5520606${String(i).padStart(9, "0")}-052106-${tokenHex}-${userId}`,
    refreshToken: `TG-${tokenHex.slice(0, 24)}-${userId}`,
    publicKey: `APP_USR-${tokenHex.slice(0, 8)}-${tokenHex.slice(8, 12)}-${
      tokenHex.slice(12, 16)
    }-${tokenHex.slice(16, 20)}-${tokenHex.slice(20, 32)}`,
    expiresAt: new Date(Date.now() + day * DAY_MS).toISOString(),
    drift,
  };
}

/** Writes `chunk`, waiting while the stream's buffer is full. */
async function write(stream: Writable, chunk: string): Promise<void> {
  if (!stream.write(chunk)) await once(stream, "drain");
}

/** Ends a COPY stream and waits until the server has taken every row. */
async function end(stream: Writable): Promise<void> {
  const done = once(stream, "finish");
  stream.end();
  await done;
}

/** Streams rows 0 to `n` (exclusive) into one COPY, `CHUNK` rows at a time. */
async function copy(
  stream: Writable,
  n: number,
  line: (i: number) => string,
  onChunk: (rows: number) => void,
  chunkTokens?: ChunkTokens,
): Promise<void> {
  try {
    for (let start = 0; start < n; start += CHUNK) {
      const stop = Math.min(n, start + CHUNK);
      await chunkTokens?.take(start, stop);
      let text = "";
      for (let i = start; i < stop; i++) text += line(i);
      chunkTokens?.done(start);
      await write(stream, text);
      onChunk(stop - start);
      // Let the other COPY's generator and the socket take a turn.
      await new Promise((r) => setTimeout(r, 0));
    }
    await end(stream);
  } catch (err) {
    // The caller gets the error from the rejection; the stream's own `error` event is not a
    // second, uncaught report of it.
    stream.on("error", () => {});
    stream.destroy(err as Error);
    throw err;
  }
}

/** A token pair to seed in place of the generated one (e.g. one the sandbox issued). */
export interface SeedTokens {
  access_token: string;
  refresh_token: string;
  user_id: number;
  public_key: string;
}

/**
 * The given pairs of the chunks being written: each chunk's asked once, shared by the two COPYs,
 * and dropped once both have written it (memory stays bounded at any N).
 */
class ChunkTokens {
  readonly #chunks = new Map<number, { tokens: Promise<SeedTokens[]>; pairs?: SeedTokens[] }>();
  readonly #left = new Map<number, number>();
  constructor(readonly source: (start: number, stop: number) => Promise<SeedTokens[]>) {}

  /** Waits for the pairs of the chunk from `start` to `stop`. */
  async take(start: number, stop: number): Promise<void> {
    let chunk = this.#chunks.get(start);
    if (!chunk) {
      this.#chunks.set(start, chunk = { tokens: this.source(start, stop) });
      this.#left.set(start, 2);
    }
    const pairs = await chunk.tokens;
    if (pairs.length !== stop - start) throw new Error("tokens: wrong number of pairs");
    chunk.pairs = pairs;
  }

  /** The pair of account `i` (its chunk taken). */
  of(i: number): SeedTokens | undefined {
    const start = i - (i % CHUNK);
    return this.#chunks.get(start)?.pairs?.[i - start];
  }

  /** One COPY wrote the chunk from `start`. */
  done(start: number): void {
    const left = (this.#left.get(start) ?? 1) - 1;
    this.#left.set(start, left);
    if (left <= 0) {
      this.#chunks.delete(start);
      this.#left.delete(start);
    }
  }
}

/**
 * Seeds `opts.accounts` connected accounts linked 1:1 to fresh clients, with real ciphertexts
 * under the first key of `keys` (an `MP_TOKEN_KEYS` value) and `driftFraction` (default 0.1)
 * of the caches drifted; removes an earlier seed first.
 */
export async function seedScale(
  admin: Sql,
  backend: Sql,
  keys: string,
  opts: {
    accounts: number;
    driftFraction?: number;
    /** Deal the accounts round-robin over these sites (`mp_site_id`); unset: no site. */
    sites?: readonly string[];
    /** Tokens expire from this many days on (default 1), e.g. past the refresh window. */
    expiresFromDay?: number;
    /** Mark every token verified within the last this many days (`mp_verified_at`). */
    verifiedWithinDays?: number;
    /**
     * The pairs of accounts `start` to `stop` (exclusive), asked once per chunk in order, in
     * place of generated ones (e.g. grants the sandbox issued, so MercadoPago knows them).
     */
    tokens?: (start: number, stop: number) => Promise<SeedTokens[]>;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<{ accounts: number; drifted: number; seconds: number }> {
  const started = performance.now();
  const n = opts.accounts;
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error("accounts: 0 to 2^32-1");
  const driftPermille = Math.round((opts.driftFraction ?? 0.1) * 1000);
  const ring = await importKeyRing(parseKeyRing(keys));
  const salt = randomFillSync(new Uint32Array(1))[0];
  await clearScale(admin, backend);

  // Both COPYs run side by side; progress counts the Admin rows (the slower ones).
  let drifted = 0;
  let done = 0;
  const now = new Date().toISOString();
  const sites = opts.sites ?? [];
  const verifiedMs = (opts.verifiedWithinDays ?? 0) * DAY_MS;
  const extra = (i: number) =>
    (sites.length ? `\t${sites[i % sites.length]}` : "") +
    (verifiedMs
      ? `\t${new Date(Date.now() - (mix(i, salt ^ 0x6) / 0xffffffff) * verifiedMs).toISOString()}`
      : "");
  const chunkTokens = opts.tokens && new ChunkTokens(opts.tokens);
  const accountOf = (i: number) => {
    const a = account(i, salt, driftPermille, opts.expiresFromDay);
    const t = chunkTokens?.of(i);
    if (!t) return a;
    return {
      ...a,
      userId: t.user_id,
      accessToken: t.access_token,
      refreshToken: t.refresh_token,
      publicKey: t.public_key,
    };
  };
  const adminLine = (i: number) => {
    const a = accountOf(i);
    const access = encryptSecretSync(ring, a.accountId, "access_token", a.accessToken);
    const refresh = encryptSecretSync(ring, a.accountId, "refresh_token", a.refreshToken);
    return `${a.accountId}\t${a.clientId}\tt\t${a.userId}\t${access}\t${refresh}\t${a.publicKey}\t` +
      `15552000\t${a.expiresAt}\t1\tt\toffline_access read write\t${now}\t${now}${extra(i)}\n`;
  };
  const backendLine = (i: number) => {
    const a = accountOf(i);
    if (a.drift === "none") return `${a.clientId}\t${a.accessToken}\t${a.publicKey}\t1\t${now}\n`;
    drifted++;
    return a.drift === "emptied"
      ? `${a.clientId}\t\\N\t\\N\t\\N\t\\N\n`
      : `${a.clientId}\t${a.oldAccessToken}\t${a.publicKey}\t0\t${now}\n`;
  };
  const columns = [
    "id, backend_client_id, mp_connected, mp_user_id, mp_access_token_encrypted",
    "mp_refresh_token, mp_public_key, mp_expires_in, mp_token_expires_at, mp_token_version",
    "mp_live_mode, mp_scope, mp_connected_at, mp_updated_at",
    ...(sites.length ? ["mp_site_id"] : []),
    ...(verifiedMs ? ["mp_verified_at"] : []),
  ].join(", ");
  const adminCopy = await admin.unsafe(`copy nv_accounts (${columns}) from stdin`).writable();
  const backendCopy = await backend`
    copy clients (id, mp_access_token, mp_public_key, mp_token_version, mp_synced_at)
    from stdin`.writable();
  await Promise.all([
    copy(adminCopy, n, adminLine, (rows) => {
      done += rows;
      opts.onProgress?.(done, n);
    }, chunkTokens),
    copy(backendCopy, n, backendLine, () => {}, chunkTokens),
  ]);
  // The COPY wrote one `connected` event per seeded account (a real change: docs/contract.md,
  // "Events to the platform"); the
  // scale benchmarks measure the accounts, not a million-event backlog: drop those events.
  await clearScaleEvents(admin);
  return { accounts: n, drifted, seconds: (performance.now() - started) / 1000 };
}

/** Deletes the outbox events of the seeded accounts (by their id prefix). */
async function clearScaleEvents(admin: Sql): Promise<void> {
  const [a0, a1] = [
    scaleId(SCALE_ACCOUNT_PREFIX, 0),
    scaleId(SCALE_ACCOUNT_PREFIX, 0xffffffffffff),
  ];
  await admin`delete from mp_event_outbox where account_id between ${a0}::uuid and ${a1}::uuid`;
}

/** Deletes every seeded account and client (by their id prefixes), and nothing else. */
export async function clearScale(admin: Sql, backend: Sql): Promise<void> {
  const range = (prefix: string) => [scaleId(prefix, 0), scaleId(prefix, 0xffffffffffff)];
  const [a0, a1] = range(SCALE_ACCOUNT_PREFIX);
  const [c0, c1] = range(SCALE_CLIENT_PREFIX);
  await Promise.all([
    admin`delete from nv_accounts where id between ${a0}::uuid and ${a1}::uuid`,
    backend`delete from clients where id between ${c0}::uuid and ${c1}::uuid`,
  ]);
  await clearScaleEvents(admin);
}

if (import.meta.main) {
  const { parseEnvFile } = await import("../local/launch.ts");
  const { connect } = await import("../shared/platform/db.ts");
  const dir = Deno.args[0] ?? ".local/dev";
  const env = parseEnvFile(await Deno.readTextFile(`${dir}/stack.env`));
  const admin = connect(env.ADMIN_DB_URL, { max: 2, timeoutMs: 30_000 });
  const backend = connect(env.BACKEND_DB_URL, { max: 2, timeoutMs: 30_000 });
  try {
    if (Deno.args[1] === "clear") {
      await clearScale(admin, backend);
      console.log("cleared");
    } else {
      let last = 0;
      const r = await seedScale(admin, backend, env.MP_TOKEN_KEYS, {
        accounts: Number(Deno.args[1] ?? 1_000_000),
        onProgress(done, total) {
          if (done - last >= 100_000 || done === total) {
            last = done;
            console.log(`  ${done}/${total}`);
          }
        },
      });
      console.log(
        `seeded ${r.accounts} accounts (${r.drifted} drifted caches) in ${r.seconds.toFixed(1)} s`,
      );
    }
  } finally {
    await Promise.all([admin.end(), backend.end()]);
  }
}
