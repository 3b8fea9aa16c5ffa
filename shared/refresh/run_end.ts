/**
 * A refresh run's end, from what its accounts came to: the leases not used released, the
 * spared accounts deferred, the saved pairs' caches written together (`syncSavedToCache`), the
 * audit events recorded, and the run's report logged and returned.
 */
import { type AuditEvent, recordEvents } from "../store/audit.ts";
import { deferRefreshes, releaseLeases } from "../store/refresh_leases.ts";
import { SyncPipeline } from "../sync/sync_batch.ts";
import { auditEvent } from "./record.ts";
import type {
  AccountOutcome,
  RefreshOptions,
  RefreshReport,
  RefreshResult,
  RefreshStatus,
  Run,
  SavedPair,
} from "./types.ts";

/**
 * Defers, one statement per reason and wait, the accounts spared because their site's
 * MercadoPago is failing (`AccountOutcome.defer`), so the next runs claim other sites' first.
 */
async function deferSpared(run: Run, outcomes: AccountOutcome[]): Promise<void> {
  const groups = new Map<string, { error: string; retryAfterMs: number; ids: string[] }>();
  for (const o of outcomes) {
    if (!o.defer) continue;
    const key = `${o.defer.error}:${o.defer.retryAfterMs}`;
    const group = groups.get(key) ?? { ...o.defer, ids: [] };
    group.ids.push(o.result.account_id);
    groups.set(key, group);
  }
  for (const { error, retryAfterMs, ids } of groups.values()) {
    await run.ctx.admin((sql) => deferRefreshes(sql, run.owner, ids, error, retryAfterMs))
      .then((n) =>
        run.log.warn("MP refreshes deferred: their site's MercadoPago is failing", {
          error,
          accounts: n,
          retry_after_ms: retryAfterMs,
        })
      )
      .catch((err) =>
        run.log.warn("Could not defer refreshes; their leases run out instead", {
          accounts: ids.length,
          error: err,
        })
      );
  }
}

/**
 * The run's end, from what its accounts came to: releases the leases not used, writes the saved
 * pairs' caches, records the audit events, logs and returns the report.
 */
export async function finishRun(
  run: Run,
  at: {
    claimed: number;
    outcomes: AccountOutcome[];
    limit: number;
    opts: RefreshOptions;
    started: number;
  },
): Promise<RefreshReport> {
  const { ctx, owner } = run;
  const { outcomes, limit, opts, started } = at;
  const results: RefreshResult[] = outcomes.map((o) => o.result);
  const unused = outcomes.filter((o) => o.release).map((o) => o.result.account_id);
  if (unused.length > 0) {
    await ctx.admin((sql) => releaseLeases(sql, owner, unused)).catch((err) =>
      run.log.warn("Could not release unused refresh leases", {
        accounts: unused.length,
        error: err,
      })
    );
  }
  await deferSpared(run, outcomes);
  const synced = await syncSavedToCache(run, outcomes.flatMap((o) => o.saved ? [o.saved] : []));
  await recordEvents(ctx, run.log, [...outcomes.flatMap((o) => o.events), ...synced]);

  const count = (...statuses: RefreshStatus[]) =>
    results.filter((r) => statuses.includes(r.status)).length;
  const report: RefreshReport = {
    claimed: at.claimed,
    refreshed: count("refreshed", "escrow_applied"),
    failed: count("failed", "escrowed", "at_risk"),
    reauth_required: count("reauth_required"),
    results,
  };
  run.log.info("MP refresh run finished", {
    claimed: report.claimed,
    refreshed: report.refreshed,
    failed: report.failed,
    at_risk: count("at_risk"),
    reauth_required: report.reauth_required,
    circuit_breaker_open: [...run.breakers.values()].some((b) => b.open),
    circuit_breakers_open: [...run.breakers].filter(([, b]) => b.open).map(([site]) => site),
    escrow_applied: count("escrow_applied"),
    escrowed: count("escrowed"),
    superseded: count("superseded"),
    skipped: count("skipped"),
    limit,
    account_id: opts.accountId,
    force: opts.force ?? false,
    duration_ms: Date.now() - started,
  });
  return report;
}

/** Cache rows a run writes per statement. */
const SYNC_PAGE = 500;

/**
 * Writes the caches of the accounts saved this run, in version-fenced batches (one statement
 * per page instead of one per account); returns each saved account's audit event with its sync
 * outcome.
 */
async function syncSavedToCache(run: Run, saved: SavedPair[]): Promise<AuditEvent[]> {
  const outcomes = new Map<string, string>();
  const pipeline = new SyncPipeline(run.ctx, run.log);
  const plaintext = new Map(
    saved.flatMap((s) => s.accessToken === undefined ? [] : [[s.row.id, s.accessToken]]),
  );
  try {
    for (let i = 0; i < saved.length; i += SYNC_PAGE) {
      await pipeline.add(saved.slice(i, i + SYNC_PAGE).map((s) => s.row), (done) => {
        for (const o of done) outcomes.set(o.accountId, o.result);
      }, plaintext);
    }
    await pipeline.finish();
  } catch (err) {
    run.log.warn("MP credentials refreshed but not synced to the Backend DB", {
      accounts: saved.length - outcomes.size,
      account_ids: saved.filter((s) => !outcomes.has(s.account.id)).map((s) => s.account.id),
      error: err,
    });
  }
  return saved.map(({ account, row, status }) =>
    auditEvent(run, status, account, {
      token_version: row.mp_token_version,
      sync: outcomes.get(account.id) ?? "failed",
    }, row)
  );
}
