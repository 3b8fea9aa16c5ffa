/**
 * The backfill: every connected or linked account synced to its client's cache through the
 * batched, version-fenced sync, page by page (keyset on the account id). Idempotent, so an
 * interrupted run is resumed by running it again.
 */
import type { AccountRow } from "./accounts.ts";
import type { Context } from "./context.ts";
import { type Logger, scrub } from "./log.ts";
import { countAccountPages, readAccountPage, syncAccountRows } from "./sync_batch.ts";

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

/** Options of a backfill run. */
export interface BackfillOptions {
  dryRun?: boolean;
  accountId?: string;
  batchSize?: number;
  /** Called with the accounts done so far and the total, after every page. */
  onProgress?: (done: number, total: number) => void;
}

/** Runs the backfill over the Admin DB's accounts and returns its summary. */
export async function runBackfill(
  ctx: Context,
  log: Logger,
  opts: BackfillOptions = {},
): Promise<BackfillSummary> {
  const started = performance.now();
  const limit = opts.batchSize ?? 2000;
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
  try {
    total = await ctx.admin((sql) => countAccountPages(sql, opts.accountId));
    // Pages flow through a short pipeline: while one is written, the next is decrypted and
    // the one after is read. `failure` keeps the first error of a page in flight.
    let failure: unknown;
    const inFlight: Promise<void>[] = [];
    let next: Promise<AccountRow[]> | undefined = page(null);
    while (next) {
      const rows: AccountRow[] = await next;
      next = rows.length === limit ? page(rows[rows.length - 1].id) : undefined;
      next?.catch(() => {}); // awaited on the next turn; an early exit must not leave it unhandled
      inFlight.push(
        syncAccountRows(ctx, log, rows, { dryRun: opts.dryRun }).then(tally, (err) => {
          failure ??= err;
        }),
      );
      if (inFlight.length >= 2) await inFlight.shift();
      if (failure) throw failure;
    }
    await Promise.all(inFlight);
    if (failure) throw failure;
  } catch (err) {
    log.error("Backfill stopped", { error: err, accounts_done: summary.accounts });
    summary.error = scrub((err as Error).message);
  }
  summary.seconds = Number(((performance.now() - started) / 1000).toFixed(2));
  return summary;

  function tally(outcomes: Awaited<ReturnType<typeof syncAccountRows>>) {
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
    opts.onProgress?.(summary.accounts, Math.max(total, summary.accounts));
  }
}
