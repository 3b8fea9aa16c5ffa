/**
 * The backfill: every connected or linked account synced to its client's cache through the
 * batched, version-fenced sync, page by page (keyset on the account id). Idempotent, so an
 * interrupted run is resumed by running it again.
 */
import { forEachPage } from "../platform/pipeline.ts";
import { type AccountRow } from "../store/accounts.ts";
import { countAccountPages, readAccountPage } from "../store/account_scans.ts";
import type { Context } from "../platform/context.ts";
import { type Logger, scrub } from "../platform/log.ts";
import { type BatchOutcome, SyncPipeline } from "../sync/sync_batch.ts";

/** What a backfill did (or, with `dry_run`, would do). */
export interface BackfillSummary {
  dry_run: boolean;
  accounts: number;
  synced: number;
  already_current: number;
  cleared: number;
  not_connected: number;
  not_linked: number;
  client_missing: number;
  failed: number;
  /** Set when the run stopped early (a database became unreachable); rerun to resume. */
  error?: string;
  seconds: number;
}

/** Accounts per page by default: fewer statements than 2,000 at a million, still a few MB per page. */
export const BACKFILL_BATCH = 5000;

/** Options of a backfill run. */
interface BackfillOptions {
  dryRun?: boolean;
  accountId?: string;
  batchSize?: number;
  /** Called with the accounts done so far and the total, after every page once counted. */
  onProgress?: (done: number, total: number) => void;
}

/** Runs the backfill over the Admin DB's accounts and returns its summary. */
export async function runBackfill(
  ctx: Context,
  log: Logger,
  opts: BackfillOptions = {},
): Promise<BackfillSummary> {
  const started = performance.now();
  const limit = opts.batchSize ?? BACKFILL_BATCH;
  const summary: BackfillSummary = {
    dry_run: !!opts.dryRun,
    accounts: 0,
    synced: 0,
    already_current: 0,
    cleared: 0,
    not_connected: 0,
    not_linked: 0,
    client_missing: 0,
    failed: 0,
    seconds: 0,
  };
  const page = (after: string | null): Promise<AccountRow[]> =>
    ctx.admin((sql) => readAccountPage(sql, { after, limit, accountId: opts.accountId }));
  let total = 0;
  let counted = false;
  try {
    // The total (for the progress bar) is counted while the first pages are read and synced:
    // at a million accounts the count is a scan of its own (about a second).
    // The count only feeds the progress bar: when it fails, the backfill goes on without it.
    const counting = ctx.admin((sql) => countAccountPages(sql, opts.accountId)).then(
      (n) => {
        total = n;
        counted = true;
      },
      (err) => {
        log.warn("Backfill could not count the accounts; the progress has no total", {
          error: err,
        });
        counted = true;
      },
    );
    // While one page is written, the next is decrypted and the one after is read.
    // Most caches are current on a rerun: only the ones behind are sent to the fenced write.
    const sync = new SyncPipeline(ctx, log, { dryRun: opts.dryRun, skipCurrent: true });
    try {
      await forEachPage(
        (last: AccountRow | undefined) => page(last?.id ?? null),
        limit,
        (rows) => sync.add(rows, tally),
      );
    } catch (err) {
      await sync.finish().catch(() => {}); // pages in flight end before the summary is made
      throw err;
    }
    await sync.finish();
    await counting;
    opts.onProgress?.(summary.accounts, Math.max(total, summary.accounts));
  } catch (err) {
    log.error("Backfill stopped", { error: err, accounts_done: summary.accounts });
    summary.error = scrub((err as Error).message);
  }
  summary.seconds = Number(((performance.now() - started) / 1000).toFixed(2));
  return summary;

  function tally(outcomes: BatchOutcome[]) {
    for (const o of outcomes) {
      summary.accounts++;
      if (o.result === "synced") summary.synced++;
      else if (o.result === "already_current") summary.already_current++;
      else if (o.result === "not_linked") summary.not_linked++;
      else if (o.result === "client_not_found") summary.client_missing++;
      else if (o.result === "failed") summary.failed++;
      else if (o.cleared) summary.cleared++;
      else summary.not_connected++;
    }
    if (counted) opts.onProgress?.(summary.accounts, Math.max(total, summary.accounts));
  }
}
