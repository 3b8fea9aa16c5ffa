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
 * A straight line, each step in one module: `run.ts` (claim under a lease, read the escrowed
 * pairs) → `account.ts` (one account's steps in order: the escrow check, may a call start, the
 * MercadoPago call and the verdict of `outcome.ts`, the pair kept by `save.ts`: save, retry,
 * escrow) → `record.ts` (the account's ending written and turned into its `AccountOutcome`: its
 * line, audit events, lease release, saved pair) → `run_end.ts` (the unused leases released, the
 * saved pairs' caches written together by `syncSavedToCache`, the batched sync of
 * `shared/sync/`, the events recorded, the report). The only state the accounts share is the
 * run's identity, budget and circuit breakers (`types.ts`), which start from the ones the Admin
 * DB holds open across runs (`app_breaker.ts`: backoff, half-open trial). Each account is refreshed through
 * its own site's application, and the breaker, the 429 pause and the concurrency toward
 * MercadoPago are that application's: one site's MercadoPago failing never stops another's
 * refreshes. Beside them: `may_start_call.ts` (the time decision), `rate_limit_pause.ts` (the
 * 429 pause), `retry_schedules.ts`, `run_limits.ts` (accounts, budget and lease of a run).
 */
import { readAccount } from "../store/accounts.ts";
import type { Context } from "../platform/context.ts";
import { DomainError } from "../platform/errors.ts";
import { type EscrowEntry, listEscrowed, readEscrows } from "../store/escrow.ts";
import type { Logger } from "../platform/log.ts";
import {
  claimDueAccounts,
  type ClaimedAccount,
  flagUnconfirmedRefreshes,
} from "../store/refresh_leases.ts";
import { adoptDefaultSite } from "../store/sites.ts";
import { readOpenBreakers } from "../store/app_breakers.ts";
import { breakerStance } from "./app_breaker.ts";
import { refreshAccount } from "./account.ts";
import { finishRun } from "./run_end.ts";
import { DEFAULT_LIMIT, LEASE_MS, RUN_BUDGET_MS } from "./run_limits.ts";
import type { AccountOutcome, RefreshOptions, RefreshReport, RefreshResult, Run } from "./types.ts";

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
  await readBreakers(run);
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
  await readBreakers(run, true);
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

/** How long one-account runs in an isolate share one read of the breakers. */
const SHARED_READ_MS = 5_000;

/** The breakers' last read shared by one-account runs of a context, and when it started. */
const sharedReads = new WeakMap<
  Context,
  { at: number; rows: ReturnType<typeof readOpenBreakers> }
>();

/**
 * Starts the run's breakers from the ones the Admin DB holds open or half open
 * (`mp_app_breakers`): an open one's site is not called this run, a half-open one's trial may be
 * claimed. Unreadable, the breakers start closed (each run's own 3 unknown outcomes still open
 * them). With `shared` (the one-account runs of dead tokens, many at once in a probe run) a read
 * started in this isolate within the last 5 s is used instead of a new one.
 */
async function readBreakers(run: Run, shared = false): Promise<void> {
  const now = Date.now();
  const last = sharedReads.get(run.ctx);
  const read = shared && last && now - last.at < SHARED_READ_MS
    ? last.rows
    : run.ctx.admin((sql) => readOpenBreakers(sql));
  if (shared && last?.rows !== read) sharedReads.set(run.ctx, { at: now, rows: read });
  const rows = await read.catch((err) => {
    if (sharedReads.get(run.ctx)?.rows === read) sharedReads.delete(run.ctx);
    run.log.warn("Could not read the circuit breakers; they start closed", { error: err });
    return [];
  });
  for (const row of rows) {
    const stance = breakerStance(row.open_until, row.db_now);
    if (stance === "call") continue;
    run.breakers.set(row.site_id, {
      unknownInARow: 0,
      open: stance === "open",
      ...(stance === "trial" ? { trial: "due" as const } : {}),
      // On this machine's clock, from the database's own now().
      openUntil: Date.now() + (row.open_until.getTime() - row.db_now.getTime()),
    });
  }
  const open = rows.filter((r) => run.breakers.get(r.site_id)?.open).map((r) => r.site_id);
  if (open.length > 0) {
    run.log.warn("MP refresh: circuit breakers open, their sites are not called", { sites: open });
  }
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
