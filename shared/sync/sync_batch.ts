/**
 * The sync of `shared/sync/sync.ts` for many accounts at once (backfill, reconciliation): pages of
 * accounts read from the Admin DB in one query, decrypted, and written to the cache in ONE
 * version-fenced statement per page (`writeCacheBatch`), with the outcomes `syncAccountRow`
 * reports for one account.
 */
import { BoundedTasks } from "../platform/pipeline.ts";
import type { AccountRow } from "../store/accounts.ts";
import {
  type BatchCacheResult,
  type BatchCacheWrite,
  readCacheStates,
  writeCacheBatch,
} from "../store/clients.ts";
import type { Context } from "../platform/context.ts";
import type { Sql } from "../platform/db.ts";
import { DecryptError, decryptSecretSync, logDecryptFailure } from "../platform/crypto.ts";
import type { Logger } from "../platform/log.ts";
import { type SyncResult, syncResultOf } from "./sync.ts";

/** What a batched sync did for one account (`cleared`: a disconnected account's cache emptied). */
export interface BatchOutcome {
  accountId: string;
  clientId: string | null;
  result: SyncResult | "failed";
  version: number;
  cleared: boolean;
}

function outcome(a: AccountRow, result: BatchOutcome["result"], cleared = false): BatchOutcome {
  return {
    accountId: a.id,
    clientId: a.backend_client_id,
    result,
    version: a.mp_token_version,
    cleared,
  };
}

/** Rows decrypted by `decryptRows`: the cache writes, and the outcomes already known. */
interface Decrypted {
  rows: AccountRow[];
  writes: (BatchCacheWrite & { account: AccountRow; connected: boolean })[];
  out: Map<string, BatchOutcome>;
}

/**
 * Decrypts each connected, linked row; one that fails to decrypt is logged and "failed".
 * Synchronous node:crypto (`decryptSecretSync`): a page of thousands takes a few milliseconds
 * per thousand of the event loop, a third of WebCrypto's CPU and no thread hop per value.
 */
async function decryptRows(
  ctx: Context,
  log: Logger,
  rows: AccountRow[],
  known?: Map<string, string>,
): Promise<Decrypted> {
  const ring = await ctx.keys();
  const done: Decrypted = { rows, writes: [], out: new Map() };
  for (const a of rows) {
    if (!a.backend_client_id) {
      done.out.set(a.id, outcome(a, "not_linked"));
      continue;
    }
    const connected = a.mp_connected && a.mp_access_token_encrypted !== null;
    try {
      const accessToken = !connected ? null : known?.get(a.id) ??
        decryptSecretSync(ring, a.id, "access_token", a.mp_access_token_encrypted!);
      done.writes.push({
        account: a,
        connected,
        clientId: a.backend_client_id,
        accessToken,
        publicKey: connected ? a.mp_public_key : null,
        siteId: connected ? a.mp_site_id ?? null : null,
        version: a.mp_token_version,
      });
    } catch (err) {
      if (!(err instanceof DecryptError)) throw err;
      logDecryptFailure(log, a.id, err.field);
      done.out.set(a.id, outcome(a, "failed"));
    }
  }
  return done;
}

/** Options of a `SyncPipeline`. */
interface SyncOptions {
  /** Write nothing: read the cache versions and report what the write would do. */
  dryRun?: boolean;
  /**
   * Read the page's cache versions first (ids and versions, never the tokens) and send to the
   * fenced write only the accounts whose cache is behind or missing: the others are
   * "already_current", exactly what the fence would answer, since a cache version only goes
   * up. Every row is still decrypted (a value that fails is still "failed"). For passes where
   * most caches are current (a backfill rerun); one small query more per page.
   */
  skipCurrent?: boolean;
}

/**
 * What the fenced write would answer for each of `writes`, from the cache versions alone (ids
 * and versions, never the tokens; nothing written): a cache version only goes up, so a cache
 * at or past the write's version is "already_current" now and after.
 */
async function predictWrites(sql: Sql, writes: BatchCacheWrite[]): Promise<BatchCacheResult[]> {
  const states = new Map(
    (await readCacheStates(sql, writes.map((w) => w.clientId))).map((s) => [s.id, s]),
  );
  return writes.map((w) => {
    const s = states.get(w.clientId.toLowerCase());
    return {
      clientId: w.clientId,
      result: !s
        ? "client_not_found"
        : (s.mp_token_version ?? -1) < w.version
        ? "synced"
        : "already_current",
      hadCredentials: !!s && (s.has_token || s.has_public_key),
    };
  });
}

/** The fenced write of `writes`, sending only the ones not already current (`skipCurrent`). */
async function writeBehind(sql: Sql, writes: BatchCacheWrite[]): Promise<BatchCacheResult[]> {
  const predicted = await predictWrites(sql, writes);
  const behind = writes.filter((_, i) => predicted[i].result !== "already_current");
  const written = await writeCacheBatch(sql, behind);
  let next = 0;
  return predicted.map((p) => p.result === "already_current" ? p : written[next++]);
}

/** Writes decrypted rows in one version-fenced statement (or, dry, predicts what it would do). */
async function writeRows(
  ctx: Context,
  { rows, writes, out }: Decrypted,
  opts: SyncOptions,
): Promise<BatchOutcome[]> {
  const results = await ctx.backend((sql) =>
    opts.dryRun
      ? predictWrites(sql, writes)
      : opts.skipCurrent
      ? writeBehind(sql, writes)
      : writeCacheBatch(sql, writes)
  );
  writes.forEach((w, i) => {
    const r = results[i];
    const result = syncResultOf(r.result, w.connected);
    out.set(
      w.account.id,
      outcome(w.account, result, !w.connected && r.result === "synced" && r.hadCredentials),
    );
  });
  return rows.map((a) => out.get(a.id)!);
}

/** Pages a `SyncPipeline` holds at once (read or decrypted, waiting or being written). */
const PIPELINE_DEPTH = 3;

/**
 * Syncs pages of already-read account rows to their clients' caches: decrypts each connected
 * one and writes each page in one version-fenced statement. A value that fails to decrypt is
 * logged (account id only) and reported as "failed"; the others still sync. With `dryRun`,
 * nothing is written: the cache versions are read and the outcome the write would have is
 * reported. One page is decrypted at a time while the ones before it are written, so the
 * decrypting and the database work side by side. `add` resolves once there is room for the
 * next page; `finish` waits for all of them. The first error is rethrown by the next `add` or
 * by `finish`.
 */
export class SyncPipeline {
  #decrypting: Promise<unknown> = Promise.resolve();
  #writes = new BoundedTasks(PIPELINE_DEPTH);

  constructor(
    private ctx: Context,
    private log: Logger,
    private opts: SyncOptions = {},
  ) {}

  /**
   * Queues the page `rows` resolves to; `done` gets its outcomes once it is written. `known`:
   * access tokens (by account id) this process encrypted into those rows itself, used as they
   * are instead of decrypted again.
   */
  async add(
    rows: AccountRow[] | Promise<AccountRow[]>,
    done: (outcomes: BatchOutcome[]) => void,
    known?: Map<string, string>,
  ): Promise<void> {
    const decrypted = Promise.all([rows, this.#decrypting])
      .then(([page]) => decryptRows(this.ctx, this.log, page, known));
    this.#decrypting = decrypted.catch(() => {});
    await this.#writes.add(decrypted.then((d) => writeRows(this.ctx, d, this.opts)).then(done));
  }

  /** Waits for every page added; rethrows the first error. */
  async finish(): Promise<void> {
    await this.#writes.finish();
  }
}
