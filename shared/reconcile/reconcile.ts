/**
 * Reconciliation: finds where the cache (Backend `clients`) differs from the Admin master by
 * version and presence — never by comparing secrets — and repairs it through the batched,
 * version-fenced sync. The comparison runs in the databases (shared/reconcile/drift.ts); only
 * drifted accounts are read with their ciphertext and decrypted. Each run checks one bounded
 * slice of the keyspace from the saved cursors and stops early, where the drift it could not
 * repair begins, when its repair budget runs out (docs/scale.md).
 */
import { type AccountRow, readAccounts } from "../store/accounts.ts";
import { bumpAccountVersions } from "../store/account_scans.ts";
import { clearOrphanedCaches } from "../sync/sync.ts";
import type { Context } from "../platform/context.ts";
import {
  type Drift,
  DRIFT_KINDS,
  isLevel,
  type Orphan,
  scanDrift,
  type ScanEnd,
  scanOrphans,
  type ScanRange,
  type Span,
} from "./drift.ts";
import { type CursorEnd, readCursors, saveCursors } from "../store/reconcile_cursor.ts";
import { type LeftDrift, recordRun, replaceLeftDrift } from "../store/reconcile_ledger.ts";
import { escrowedAmong } from "../store/escrow.ts";
import { recordEvent } from "../store/audit.ts";
import type { Logger } from "../platform/log.ts";
import { type BatchOutcome, SyncPipeline } from "../sync/sync_batch.ts";

/**
 * What a reconciliation found and did over the pages it compared; the drift kinds count what
 * was found. Drift past the repair budget is counted (skipped) and compared again next run.
 */
interface ReconcileSummary extends Record<(typeof DRIFT_KINDS)[number], number> {
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

/**
 * Default and largest number of repairs one run makes: each is a decrypt and a cache write,
 * and 10,000 of them stay well inside the edge runtime's CPU limit (bench/RESULTS.md).
 */
export const RECONCILE_LIMIT = { default: 10_000, max: 10_000 };

/**
 * Linked accounts (and, apart, cached clients) one run checks at most. The comparison runs in
 * the databases, so this bounds the run's wall clock rather than its CPU; run every minute it
 * covers 3,000,000 accounts an hour.
 */
const RECONCILE_SLICE = 50_000;

/** A run starts no new page after this long (the edge runtime allows 150 s; we aim for ≤ 60 s). */
const RECONCILE_WALL_MS = 30_000;

/** Where the next slice starts, how many rows this one read, and whether it wrapped around. */
interface SliceEnd {
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

/**
 * The account rows that repair drifted accounts: a cache older than the account is synced from
 * the account as read now (the fence keeps a newer cache); a cache level with or ahead of it
 * (which the fence would refuse) first has the account's version moved past it, unless a
 * refresher owns the account. Accounts left out are busy.
 */
async function repairRows(ctx: Context, drifts: Drift[]): Promise<AccountRow[]> {
  const older = drifts.filter((d) => !isLevel(d)).map((d) => d.account.id);
  let level = drifts.filter(isLevel);
  if (level.length > 0) {
    const ids = level.map((d) => d.account.id);
    const parked = new Set(await ctx.backend((sql) => escrowedAmong(sql, ids)));
    level = level.filter((d) => !parked.has(d.account.id));
  }
  const [read, bumped] = await Promise.all([
    older.length ? ctx.admin((sql) => readAccounts(sql, older)) : [],
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
  return [...read, ...bumped];
}

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

/** The spans a run checked, joined where one continues the other (at most two: the wrap). */
function joinSpans(spans: Span[]): Span[] {
  const out: Span[] = [];
  for (const s of spans) {
    const prev = out.at(-1);
    if (prev && prev.until !== null && prev.until === s.after) prev.until = s.until;
    else out.push({ ...s });
  }
  return out;
}

const within = (id: string, s: Span) =>
  (s.after === null || id > s.after) && (s.until === null || id <= s.until);

/** Options of one run: repairs at most `limit`, checks at most `slice` rows of each scan. */
interface ReconcileOptions {
  limit?: number;
  /** The request the run serves (its audit event carries it). */
  requestId?: string;
  slice?: number;
  pageSize?: number;
  /** Starts no new page after this many ms. */
  wallMs?: number;
}

/** What one run carries through its two scans: the repairs left, the counts, the deadline. */
interface RunState {
  budget: number;
  summary: ReconcileSummary;
  deadline: number;
}

/** Where the linked-accounts scan stopped, and the drift it found, took and could not repair. */
interface AccountsPass {
  end: SliceEnd;
  spans: Span[];
  left: LeftDrift[];
}

/** A drift left unrepaired, as the ledger keeps it. */
const leftOf = (d: Drift, reason: LeftDrift["reason"]): LeftDrift => ({
  account_id: d.account.id,
  client_id: d.account.backend_client_id,
  kind: d.kind,
  reason,
});

/**
 * Scans the linked accounts' slice from `cursor` and repairs the drift found, page by page (one
 * decrypted while the one before is written), within the run's budget. When the budget runs
 * out, the scan stops after the last account repaired, so the next run starts at the first
 * one left.
 */
async function reconcileAccounts(
  ctx: Context,
  log: Logger,
  run: RunState,
  cursor: string | null,
  opts: { slice: number; pageSize?: number },
): Promise<AccountsPass> {
  const { summary } = run;
  const sync = new SyncPipeline(ctx, log);
  const taken: Drift[] = [];
  const spans: Span[] = [];
  const left: LeftDrift[] = [];
  const outcomes = new Map<string, BatchOutcome>();
  let end: SliceEnd;
  try {
    end = await scanSlice(
      (range) =>
        scanDrift(ctx, async (checked, drifts, span) => {
          summary.checked += checked;
          const repairable: Drift[] = [];
          for (const d of drifts) {
            if (d.kind === "client_missing") {
              summary.client_missing++;
              left.push(leftOf(d, "client_missing"));
              continue;
            }
            summary[d.kind]++;
            summary.drifted++;
            repairable.push(d);
          }
          const take = repairable.slice(0, run.budget);
          run.budget -= take.length;
          taken.push(...take);
          const over = repairable.length > take.length;
          const stopAt = over ? take.at(-1)?.account.id ?? span.after : null;
          spans.push(over ? { after: span.after, until: stopAt } : span);
          if (take.length > 0) {
            await sync.add(repairRows(ctx, take), (done) => {
              for (const o of done) outcomes.set(o.accountId, o);
            });
          }
          if (over) return { stopAt };
          if (performance.now() > run.deadline) return { stopAt: span.until };
        }, { pageSize: opts.pageSize, ...range }),
      cursor,
      opts.slice,
    );
    await sync.finish();
  } catch (err) {
    await sync.finish().catch(() => {});
    throw err;
  }
  for (const d of taken) {
    const o = outcomes.get(d.account.id);
    if (o && (o.result === "synced" || o.cleared)) summary.repaired++;
    else if (o?.result === "failed") summary.failed++;
    if (!o) left.push(leftOf(d, "busy"));
    else if (o.result === "failed") left.push(leftOf(d, "failed"));
  }
  return { end, spans, left };
}

/**
 * Scans the cached clients' slice from `cursor` and clears the caches no account feeds, with
 * the budget left, page by page; each clear is fenced by the version seen, so a cache written
 * meanwhile is kept.
 */
function clearOrphans(
  ctx: Context,
  run: RunState,
  cursor: string | null,
  opts: { slice: number; pageSize?: number },
): Promise<SliceEnd> {
  const { summary } = run;
  return scanSlice(
    (range) =>
      scanOrphans(ctx, async (found: Orphan[], span) => {
        const take = found.slice(0, run.budget);
        run.budget -= take.length;
        summary.unlinked += found.length;
        summary.drifted += found.length;
        if (take.length > 0) {
          const seen = take.map((o) => ({ id: o.id, version: o.mp_token_version }));
          summary.repaired += (await clearOrphanedCaches(ctx, seen)).length;
        }
        if (found.length > take.length) return { stopAt: take.at(-1)?.id ?? span.after };
        if (performance.now() > run.deadline) return { stopAt: span.until };
      }, { pageSize: opts.pageSize, ...range }),
    cursor,
    opts.slice,
  );
}

/**
 * Finds and repairs drift over one slice of both databases (at most `slice` rows of each,
 * continuing from the saved cursors), at most `limit` repairs; saves the cursors, records what
 * it left and the run, logs, and audits a run that found drift or a missing client
 * (`reconciled`).
 */
export async function reconcile(
  ctx: Context,
  log: Logger,
  opts: ReconcileOptions = {},
): Promise<ReconcileSummary> {
  const started = performance.now();
  const run: RunState = {
    budget: Math.min(opts.limit ?? RECONCILE_LIMIT.default, RECONCILE_LIMIT.max),
    summary: emptySummary(),
    deadline: started + (opts.wallMs ?? RECONCILE_WALL_MS),
  };
  const scan = { slice: opts.slice ?? RECONCILE_SLICE, pageSize: opts.pageSize };
  const cursors = await ctx.backend((sql) => readCursors(sql));
  const accounts = await reconcileAccounts(ctx, log, run, cursors.accounts, scan);
  await ctx.backend(async (sql) => {
    for (const span of joinSpans(accounts.spans)) {
      await replaceLeftDrift(sql, span, accounts.left.filter((l) => within(l.account_id, span)));
    }
  });
  const orphans = await clearOrphans(ctx, run, cursors.orphans, scan);

  const { summary } = run;
  summary.wrapped = accounts.end.wrapped;
  summary.skipped = summary.drifted - summary.repaired - summary.failed;
  const ends: Record<"accounts" | "orphans", CursorEnd> = { accounts: accounts.end, orphans };
  await ctx.backend(async (sql) => {
    await saveCursors(sql, ends);
    await recordRun(sql, summary);
  });
  log.info("MP reconcile finished", {
    ...summary,
    ms: Math.round(performance.now() - started),
  });
  if (summary.drifted > 0 || summary.client_missing > 0) {
    await recordEvent(ctx, log, {
      event: "reconciled",
      detail: { ...summary },
      requestId: opts.requestId,
    });
  }
  return summary;
}
