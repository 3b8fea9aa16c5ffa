/**
 * Reconciliation: finds where the cache (Backend `clients`) differs from the Admin master by
 * version and presence — never by comparing secrets — and repairs it through the batched,
 * version-fenced sync. Only drifted accounts are read with their ciphertext and decrypted.
 */
import { type AccountRow, bumpAccountVersions, readAccounts } from "../store/accounts.ts";
import { type CacheState, clearOrphanedCache } from "../store/clients.ts";
import type { Context } from "../platform/context.ts";
import {
  type Drift,
  DRIFT_KINDS,
  isLevel,
  scanDrift,
  type ScanEnd,
  scanOrphans,
  type ScanRange,
} from "./drift.ts";
import { readCursors, saveCursors } from "../store/reconcile_cursor.ts";
import { pgArray } from "../platform/db.ts";
import type { Logger } from "../platform/log.ts";
import { type BatchOutcome, SyncPipeline } from "../sync/sync_batch.ts";

/** What a reconciliation found and did; the drift kinds count what was found. */
export interface ReconcileSummary extends Record<(typeof DRIFT_KINDS)[number], number> {
  checked: number;
  drifted: number;
  repaired: number;
  failed: number;
  /** Drift left for a later run: over the limit, or busy (a refresh owns the account). */
  skipped: number;
  /** Linked accounts whose client row does not exist (reported; nothing to repair). */
  client_missing: number;
  /** This run's slice reached the last account and wrapped to the first. */
  wrapped: boolean;
}

/** Default and largest number of repairs one run makes. */
export const RECONCILE_LIMIT = { default: 10_000, max: 1_000_000 };

/**
 * Linked accounts (and, apart, cached clients) one run checks at most. It bounds the run's
 * CPU whatever its `limit` (the repairs are a subset of the rows checked): well under the
 * edge runtime's 2 s at this size. The next run continues where this one stopped.
 */
export const RECONCILE_SLICE = 20_000;

/** Where the next slice starts, how many rows this one read, and whether it wrapped around. */
export interface SliceEnd {
  next: string | null;
  rows: number;
  wrapped: boolean;
}

/**
 * Runs `scan` over the slice of the id keyspace after `cursor`, wrapping around to the first
 * id and stopping short of `cursor` again, at most `max` rows; says where the next starts.
 */
export async function scanSlice(
  scan: (range: ScanRange) => Promise<ScanEnd>,
  cursor: string | null,
  max: number,
): Promise<SliceEnd> {
  const first = await scan({ after: cursor, maxRows: max });
  if (!first.done) return { next: first.last, rows: first.rows, wrapped: false };
  if (cursor === null) return { next: null, rows: first.rows, wrapped: true };
  const second = await scan({ after: null, until: cursor, maxRows: max - first.rows });
  return {
    next: second.done ? cursor : second.last,
    rows: first.rows + second.rows,
    wrapped: true,
  };
}

/** Account ids among `ids` with a refreshed pair parked in the Backend escrow, if it exists. */
async function escrowed(ctx: Context, ids: string[]): Promise<Set<string>> {
  const rows = await ctx.backend(async (sql) => {
    const [{ exists }] = await sql<{ exists: boolean }[]>`
      select to_regclass('public.mp_refresh_escrow') is not null as exists`;
    if (!exists) return [];
    return await sql<{ account_id: string }[]>`
      select account_id from mp_refresh_escrow where account_id = any(${pgArray(ids)}::uuid[])`;
  });
  return new Set(rows.map((r) => r.account_id));
}

/**
 * The account rows that repair drifted accounts: a cache older than the account is synced from
 * the row the scan read (the fence keeps a newer cache; a row the scan did not carry is read
 * again); a cache level with or ahead of it (which the fence would refuse) first has the
 * account's version moved past it, unless a refresher owns the account.
 */
async function repairRows(ctx: Context, drifts: Drift[]): Promise<AccountRow[]> {
  const older = drifts.filter((d) => !isLevel(d));
  let level = drifts.filter(isLevel);
  if (level.length > 0) {
    const parked = await escrowed(ctx, level.map((d) => d.account.id));
    level = level.filter((d) => !parked.has(d.account.id));
  }
  const unread = older.filter((d) => !d.account.row).map((d) => d.account.id);
  const [reread, bumped] = await Promise.all([
    unread.length ? ctx.admin((sql) => readAccounts(sql, unread)) : [],
    level.length
      ? ctx.admin((sql) =>
        bumpAccountVersions(
          sql,
          level.map((d) => ({
            id: d.account.id,
            version: d.account.mp_token_version,
            past: d.cache!.mp_token_version ?? -1,
          })),
        )
      )
      : [],
  ]);
  return [...older.flatMap((d) => d.account.row ? [d.account.row] : []), ...reread, ...bumped];
}

/** Accounts (and cached clients) one scan page reads: small enough that the stages overlap. */
const PAGE = 2000;

/** A summary with every count at zero. */
function emptySummary(): ReconcileSummary {
  return {
    checked: 0,
    drifted: 0,
    repaired: 0,
    failed: 0,
    skipped: 0,
    client_missing: 0,
    wrapped: false,
    ...(Object.fromEntries(DRIFT_KINDS.map((k) => [k, 0])) as Record<
      (typeof DRIFT_KINDS)[number],
      number
    >),
  };
}

/** Clears the caches of `orphans` page by page (each fenced by the version seen); returns how many were cleared. */
async function clearOrphans(ctx: Context, orphans: CacheState[]): Promise<number> {
  let cleared = 0;
  for (let i = 0; i < orphans.length; i += PAGE) {
    const seen = orphans.slice(i, i + PAGE).map((o) => ({ id: o.id, version: o.mp_token_version }));
    cleared += (await ctx.backend((sql) => clearOrphanedCache(sql, seen))).length;
  }
  return cleared;
}

/**
 * Finds and repairs drift over one slice of both databases (at most `slice` rows of each,
 * continuing from the saved cursors), at most `limit` repairs; saves the cursors and logs.
 */
export async function reconcile(
  ctx: Context,
  log: Logger,
  opts: { limit?: number; slice?: number } = {},
): Promise<ReconcileSummary> {
  const limit = opts.limit ?? RECONCILE_LIMIT.default;
  const slice = opts.slice ?? RECONCILE_SLICE;
  const cursors = await ctx.backend((sql) => readCursors(sql));
  let budget = limit;
  const summary = emptySummary();
  const started = performance.now();
  // Caches no account feeds are looked for while the drift is repaired (ids and versions,
  // at most `limit` kept) and cleared after it with the budget it leaves; the clear is fenced
  // by the version seen, so a cache written meanwhile is kept.
  const orphans: CacheState[] = [];
  const orphanScan = scanSlice(
    (range) =>
      scanOrphans(ctx, (page) => {
        summary.unlinked += page.length;
        summary.drifted += page.length;
        orphans.push(...page.slice(0, limit - orphans.length));
      }, { pageSize: PAGE, ...range }),
    cursors.orphans,
    slice,
  );
  orphanScan.catch(() => {}); // awaited below; a failed drift scan must not leave it unhandled
  // Drifted pages are repaired as the scan goes on: one decrypted while the one before is written.
  const sync = new SyncPipeline(ctx, log);
  const tally = (outcomes: BatchOutcome[]) => {
    for (const o of outcomes) {
      if (o.result === "synced" || o.cleared) summary.repaired++;
      else if (o.result === "failed") summary.failed++;
    }
  };
  let accountsEnd: SliceEnd;
  try {
    accountsEnd = await scanSlice(
      (range) =>
        scanDrift(ctx, async (checked, drifts) => {
          summary.checked += checked;
          const repairable: Drift[] = [];
          for (const d of drifts) {
            if (d.kind === "client_missing") {
              summary.client_missing++;
              continue;
            }
            summary[d.kind]++;
            summary.drifted++;
            repairable.push(d);
          }
          const take = repairable.slice(0, Math.max(budget, 0));
          budget -= take.length;
          if (take.length > 0) await sync.add(repairRows(ctx, take), tally);
        }, { withRows: true, pageSize: PAGE, ...range }),
      cursors.accounts,
      slice,
    );
  } catch (err) {
    await Promise.all([sync.finish(), orphanScan].map((p) => p.catch(() => {})));
    throw err;
  }
  await sync.finish();
  const orphansEnd = await orphanScan;
  summary.wrapped = accountsEnd.wrapped;
  await ctx.backend((sql) =>
    saveCursors(sql, { accounts: accountsEnd.next, orphans: orphansEnd.next })
  );
  summary.repaired += await clearOrphans(ctx, orphans.slice(0, Math.max(budget, 0)));
  summary.skipped = summary.drifted - summary.repaired - summary.failed;
  log.info("MP reconcile finished", {
    ...summary,
    ms: Math.round(performance.now() - started),
  });
  return summary;
}
