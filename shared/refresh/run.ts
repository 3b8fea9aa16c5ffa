/**
 * The scheduled refresh of MercadoPago tokens (docs/contract.md, mp-refresh; docs/invariants.md, invariants 3 and 4).
 * One run: claim due accounts under a lease → look up escrowed pairs for them → per
 * account: apply its escrowed pair if one waits, else (bounded concurrency toward
 * MercadoPago) refresh at MercadoPago → save as a compare-and-swap (escrow the pair in the
 * Backend DB when the Admin DB will not take it) → sync `clients` → audit.
 * A refresh token is never sent twice: accounts whose escrow cannot be checked are skipped,
 * a pair MercadoPago handed out is always kept in one database, and a call starts only while
 * the lease outlasts the call, the save and the escrow, so no later claimer can precede it.
 *
 * A straight line: run → `account.ts` (one account: escrow or a MercadoPago call, the
 * verdict of `outcome.ts`) → `save.ts` (save, retry, escrow) or `record.ts` (the failure
 * recorded) → each returns an `AccountOutcome` (its line, audit events, lease release, saved
 * pair) → the run's end writes the saved pairs' caches together (`syncSaved`, the batched sync
 * of `shared/sync/`) and records the events. The only state the accounts share is the run's
 * identity, budget and circuit breakers (`types.ts`). Each account is refreshed through its own
 * site's application, and the breaker, the 429 pause and the concurrency toward MercadoPago
 * are that application's: one site's MercadoPago failing never stops another's refreshes.
 * Beside them: `may_start_call.ts` (the time decision), `rate_limit_pause.ts` (the 429 pause),
 * `retry_schedules.ts`.
 */
import { recordEvents } from "../store/audit.ts";
import { readAccount } from "../store/accounts.ts";
import type { Context } from "../platform/context.ts";
import { DomainError } from "../platform/errors.ts";
import { type EscrowEntry, listEscrowed, readEscrows } from "../store/escrow.ts";
import type { Logger } from "../platform/log.ts";
import {
  claimDueAccounts,
  type ClaimedAccount,
  deferRefreshes,
  flagUnconfirmedRefreshes,
  releaseLeases,
} from "../store/refresh_leases.ts";
import { adoptDefaultSite } from "../store/sites.ts";
import { refreshAccount } from "./account.ts";
import { syncSaved } from "./record.ts";
import {
  type AccountOutcome,
  DEFAULT_LIMIT,
  LEASE_MS,
  type RefreshOptions,
  type RefreshReport,
  type RefreshResult,
  type RefreshStatus,
  type Run,
  RUN_BUDGET_MS,
} from "./types.ts";

/**
 * Runs one refresh pass and reports what happened to every claimed account; a run of one
 * account (`accountId`) that claimed nothing because no such account exists is
 * `account_not_found`.
 */
export async function runRefresh(
  ctx: Context,
  log: Logger,
  opts: RefreshOptions = {},
): Promise<RefreshReport> {
  const started = Date.now();
  const run = newRun(ctx, log, crypto.randomUUID(), opts);
  const limit = opts.limit ?? DEFAULT_LIMIT;
  // Refreshes left without an outcome by a terminated worker become at_risk first (invariant 3).
  await ctx.admin((sql) => flagUnconfirmedRefreshes(sql)).then((n) => {
    if (n > 0) run.log.error("MP refreshes without an outcome flagged at risk", { accounts: n });
  }).catch((err) => run.log.warn("Could not flag unconfirmed refreshes", { error: err }));
  await adoptSites(run);
  const { claimed, escrows } = await claimWithEscrows(run, opts, limit);
  const outcomes = await refreshAll(run, claimed, escrows);
  const report = await finishRun(run, { claimed: claimed.length, outcomes, limit, opts, started });
  const accountId = opts.accountId;
  if (accountId && claimed.length === 0) {
    if (!(await ctx.admin((sql) => readAccount(sql, accountId)))) {
      throw new DomainError("account_not_found", "no such account");
    }
  }
  return report;
}

/**
 * Refreshes one account this caller already leased as `owner` (a confirmed dead token,
 * `shared/connection/dead_token.ts`): its escrowed pair if one waits, else one call to
 * MercadoPago under the same rules as a run (never a refresh token sent twice).
 */
export async function refreshLeasedAccount(
  ctx: Context,
  log: Logger,
  owner: string,
  account: ClaimedAccount,
  opts: RefreshOptions = {},
): Promise<RefreshResult> {
  const started = Date.now();
  const run = newRun(ctx, log, owner, opts);
  let escrows: Map<string, EscrowEntry> | undefined;
  try {
    escrows = await ctx.backend((sql) => readEscrows(sql, [account.id]));
  } catch (err) {
    run.log.warn("Escrow check failed; the account is not refreshed now", { error: err });
  }
  const outcomes = await refreshAll(run, [account], escrows);
  await finishRun(run, { claimed: 1, outcomes, limit: 1, opts, started });
  return outcomes[0].result;
}

/**
 * Writes down the default site of a batch of accounts connected before sites were stored (the
 * functions read their null site as the default anyway; written, events and totals name it).
 */
async function adoptSites(run: Run): Promise<void> {
  const site = run.ctx.config.mpDefaultSite;
  if (!site || !run.ctx.config.mpApps.has(site)) return;
  await run.ctx.admin((sql) => adoptDefaultSite(sql, site)).then((n) => {
    if (n > 0) {
      run.log.info("Accounts without a site given the default site", { site, accounts: n });
    }
  }).catch((err) => run.log.warn("Could not give accounts the default site", { error: err }));
}

/** A run's shared state for `owner`. */
function newRun(ctx: Context, log: Logger, owner: string, opts: RefreshOptions): Run {
  return {
    ctx,
    log: log.child({ refresh_run: owner }),
    owner,
    requestId: opts.requestId,
    budgetEnd: Date.now() + (opts.budgetMs ?? RUN_BUDGET_MS),
    breakers: new Map(),
  };
}

/** Takes every claimed account through the run at once (the limiter bounds MercadoPago calls). */
function refreshAll(
  run: Run,
  claimed: ClaimedAccount[],
  escrows: Map<string, EscrowEntry> | undefined,
): Promise<AccountOutcome[]> {
  return Promise.all(
    claimed.map((account) =>
      refreshAccount(run, account, escrows).catch((err): AccountOutcome => {
        // One account's surprise must not take the run (and the others' answers) down with it;
        // its lease runs out on its own.
        run.log.error("MP refresh failed unexpectedly", { account_id: account.id, error: err });
        return {
          result: { account_id: account.id, status: "failed", error: "internal" },
          events: [],
        };
      })
    ),
  );
}

/**
 * Claims the due accounts (and those with a pair waiting in escrow) under this run's lease, and
 * reads their escrowed pairs; `escrows` is undefined when the escrow could not be checked.
 */
async function claimWithEscrows(
  run: Run,
  opts: RefreshOptions,
  limit: number,
): Promise<{ claimed: ClaimedAccount[]; escrows: Map<string, EscrowEntry> | undefined }> {
  const { ctx, owner } = run;
  // Pairs waiting in escrow make their accounts claimable even when not due.
  let escrowed: string[] | undefined;
  let backendError: unknown;
  try {
    escrowed = await ctx.backend((sql) => listEscrowed(sql, limit));
  } catch (err) {
    backendError = err;
  }
  const claimed = await ctx.admin((sql) =>
    claimDueAccounts(sql, {
      owner,
      limit,
      dueWithinDays: ctx.config.refreshWindowDays,
      leaseMs: opts.leaseMs ?? LEASE_MS,
      accountId: opts.accountId,
      force: opts.force ?? false,
      escrowed: escrowed ?? [],
    })
  );
  let escrows: Map<string, EscrowEntry> | undefined;
  if (claimed.length > 0 && escrowed) {
    try {
      escrows = await ctx.backend((sql) => readEscrows(sql, claimed.map((a) => a.id)));
    } catch (err) {
      backendError = err;
    }
  }
  if (claimed.length > 0 && !escrows) {
    // Without knowing whether a newer pair waits, a stored refresh token may be used up.
    run.log.warn("Escrow check failed; the claimed accounts are skipped this run", {
      accounts: claimed.length,
      error: backendError,
    });
  }
  return { claimed, escrows };
}

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
async function finishRun(
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
  const synced = await syncSaved(run, outcomes.flatMap((o) => o.saved ? [o.saved] : []));
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
