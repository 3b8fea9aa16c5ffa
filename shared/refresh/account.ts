/**
 * The refresh of one claimed account, its steps in the order they happen: the run holds the
 * account's lease (`run.ts` claimed it) → the escrow check (a pair waiting at the claimed
 * version is applied instead of a call) → may a call start (time, the application's breaker —
 * held open across runs, its half-open trial made by one account at a time — and 429 pause, the
 * send counted) → the MercadoPago call through the application of the
 * account's site → the pair kept (`save.ts`: compare-and-swap save, else escrow) → the
 * ending recorded (`record.ts`). The caches of the saved pairs, the audit events and the
 * unused leases are written for all accounts together at the run's end (`run_end.ts`).
 */
import { appOfSite, type MpApp } from "../platform/config.ts";
import { DecryptError, decryptSecret, logDecryptFailure } from "../platform/crypto.ts";
import { sharedLimiter } from "../platform/limiter.ts";
import { shutdownReason } from "../platform/worker_life.ts";
import { sleep } from "../platform/sleep.ts";
import { MpError, type MpTokens, refreshTokens } from "../mercadopago/api.ts";
import { deleteEscrow, type EscrowEntry } from "../store/escrow.ts";
import { beginRefreshCall, type ClaimedAccount } from "../store/refresh_leases.ts";
import { claimBreakerTrial, endBreakerTrial, openBreaker } from "../store/app_breakers.ts";
import { breakerBackoffSchedule } from "./app_breaker.ts";
import { mayStartCall } from "./may_start_call.ts";
import { LEASE_MS } from "./run_limits.ts";
import { breakerOpen, classifyRefreshFailure, deferralOf, unknownInARow } from "./outcome.ts";
import { mpPausedUntil, pauseAfterRateLimit } from "./rate_limit_pause.ts";
import { applyEscrow, keepPair } from "./save.ts";
import { recordEnding } from "./record.ts";
import type { AccountOutcome, Breaker, Deferral, Ending, Run } from "./types.ts";

/**
 * Takes one claimed account through the run, given the escrowed pairs (unknown: skip), and
 * returns what it came to (its line, audit events, lease release, saved pair).
 */
export async function refreshAccount(
  run: Run,
  account: ClaimedAccount,
  escrows: Map<string, EscrowEntry> | undefined,
): Promise<AccountOutcome> {
  const ending = await takeSteps(run, account, escrows);
  return await recordEnding(run, account, ending);
}

/** The account's steps up to its ending; the first step that ends it returns. */
async function takeSteps(
  run: Run,
  account: ClaimedAccount,
  escrows: Map<string, EscrowEntry> | undefined,
): Promise<Ending> {
  // 1. The lease: a connect changed the account between its claim and the read of its site:
  // the claimed refresh token is not the account's any more, nor paired with an application.
  if (!account.site_read) return { kind: "superseded" };

  // 2. The escrow check: without knowing whether a newer pair waits, the stored refresh token
  // may be used up.
  if (!escrows) return skipped("escrow_unavailable");
  const escrow = escrows.get(account.id);
  if (escrow && escrow.baseVersion === account.mp_token_version) {
    return await applyEscrow(run, account, escrow);
  }
  if (escrow && escrow.baseVersion > account.mp_token_version) return skipped("escrow_ahead");
  if (escrow) {
    // Taken from an older version: the credentials changed since (applied, or reconnected).
    await run.ctx.backend((sql) => deleteEscrow(sql, account.id, escrow.baseVersion))
      .catch(() => {});
  }
  const discarded = escrow ? { discardedEscrow: escrow.baseVersion } : {};

  // 3–4. May a call start, and the call to MercadoPago.
  const answer = await callMercadoPago(run, account);
  if (answer.kind !== "tokens") return { ...answer, ...discarded };

  // 5. The pair kept: saved as a compare-and-swap, else escrowed.
  return { ...await keepPair(run, account, answer.tokens, answer.receivedAt), ...discarded };
}

/**
 * An account this run leaves alone: its lease released for the next run, or, with `defer`, kept
 * until the deferral's end.
 */
function skipped(reason: string, defer?: Deferral): Ending {
  return defer ? { kind: "skipped", reason, defer } : { kind: "skipped", reason };
}

/** What the call to MercadoPago came to: a pair handed out, or the account's ending. */
type CallAnswer = { kind: "tokens"; tokens: MpTokens; receivedAt: number } | Ending;

/** What happened inside the application's slot. */
type SlotOutcome =
  | { kind: "skip"; reason: string }
  | { kind: "tokens"; tokens: MpTokens; receivedAt: number }
  | { kind: "mp_error"; error: MpError }
  | { kind: "decrypt_error"; error: DecryptError };

/** The run's circuit breaker for the application of `site` (closed until it opens). */
export function breakerOf(run: Run, site: string): Breaker {
  let breaker = run.breakers.get(site);
  if (!breaker) run.breakers.set(site, breaker = { unknownInARow: 0, open: false });
  return breaker;
}

/**
 * An account not called for because its application is failing (`circuit_open`, `rate_limited`)
 * or a bound of the run (time, lease): released for the next run, or with several applications
 * deferred (`deferralOf`).
 */
function spared(run: Run, app: MpApp, reason: string): Ending {
  const defer = deferralOf(
    reason,
    run.ctx.config.mpApps.size,
    mpPausedUntil(app.site),
    Date.now(),
    run.breakers.get(app.site)?.openUntil,
  );
  return skipped(reason, defer);
}

/** What the application's breaker lets an account do: nothing, call, or make the trial call. */
type Gate = { kind: "open" } | { kind: "call" } | { kind: "trial"; end: () => void };

/**
 * Whether the account may call its application: not while the breaker is open; while the site's
 * half-open trial is in flight, only once it is over; the trial itself (claimed by this run by
 * compare-and-set, `claimBreakerTrial`) is made by one account at a time, which must `end` it.
 */
async function passBreaker(run: Run, site: string, breaker: Breaker): Promise<Gate> {
  while (!breaker.open) {
    if (breaker.trialCall) {
      await breaker.trialCall;
      continue;
    }
    if (!breaker.trial) return { kind: "call" };
    let end!: () => void;
    breaker.trialCall = new Promise<void>((resolve) => end = resolve);
    const gate: Gate = {
      kind: "trial",
      end: () => {
        breaker.trialCall = undefined;
        end();
      },
    };
    if (breaker.trial === "held") return gate;
    const won = await run.ctx.admin((sql) => claimBreakerTrial(sql, site, run.owner, LEASE_MS))
      .catch((err) => {
        run.log.warn("Could not claim the circuit breaker's trial; the site is not called", {
          site,
          error: err,
        });
        return false;
      });
    if (won) {
      breaker.trial = "held";
      run.log.info("MP refresh circuit breaker half open: this run makes the trial call", { site });
      return gate;
    }
    breaker.open = true;
    breaker.trial = undefined;
    gate.end();
  }
  return { kind: "open" };
}

/**
 * The trial call's answer: a usable one (`ok`) closes the site's persisted breaker, an unknown
 * outcome opens it again for the next, doubled, backoff (`mp_end_app_breaker_trial`).
 */
async function endTrial(run: Run, site: string, breaker: Breaker, ok: boolean): Promise<void> {
  breaker.trial = undefined;
  if (!ok) breaker.open = true;
  await run.ctx.admin((sql) => endBreakerTrial(sql, site, run.owner, ok, breakerBackoffSchedule()))
    .then((openUntil) => {
      if (openUntil) breaker.openUntil = openUntil.getTime();
      if (ok) {
        run.log.info("MP refresh circuit breaker closed: the trial call was answered", { site });
      } else {
        run.log.error("MP refresh circuit breaker open again: the trial call failed", {
          site,
          open_until: openUntil?.toISOString(),
        });
      }
    })
    .catch((err) =>
      run.log.warn("Could not record the circuit breaker's trial", { site, error: err })
    );
}

/** Persists that the run's breaker for `site` opened (`mp_open_app_breaker`), and logs it. */
async function persistOpen(
  run: Run,
  site: string,
  breaker: Breaker,
  unknown: number,
): Promise<void> {
  const openUntil = await run.ctx.admin((sql) => openBreaker(sql, site, breakerBackoffSchedule()))
    .catch((err) => {
      run.log.warn("Could not persist the open circuit breaker", { site, error: err });
      return null;
    });
  if (openUntil) breaker.openUntil = openUntil.getTime();
  run.log.error("MP refresh circuit breaker open: no more MercadoPago calls to this site", {
    site,
    unknown_in_a_row: unknown,
    open_until: openUntil?.toISOString(),
  });
}

/**
 * One call to MercadoPago for the account, in a slot of its site's application, and what its
 * answer means. An account whose site has no application in this configuration is not sent
 * anywhere: it fails (backed off) until one is configured.
 */
async function callMercadoPago(run: Run, account: ClaimedAccount): Promise<CallAnswer> {
  const id = account.id;
  const app = appOfSite(run.ctx.config, account.mp_site_id);
  if (!app) {
    run.log.error("No MercadoPago application for the account's site; not refreshed", {
      account_id: id,
      site: account.mp_site_id,
    });
    return { kind: "failed", error: "site_not_configured", unsent: false };
  }
  const breaker = breakerOf(run, app.site);
  const gate = await passBreaker(run, app.site, breaker);
  if (gate.kind === "open") return spared(run, app, "circuit_open");

  // The lease's end on this machine's clock, from the database's own now() at claim time.
  const leaseEnd = Date.now() + (account.lease_expires_at.getTime() - account.db_now.getTime());
  let outcome: SlotOutcome;
  try {
    const release = await sharedLimiter(run.ctx.config.refreshConcurrency, app.site).acquire();
    try {
      outcome = await callInSlot(run, account, { app, breaker, leaseEnd });
    } finally {
      release();
    }
    if (outcome.kind === "tokens" || outcome.kind === "mp_error") {
      const verdict = outcome.kind === "tokens"
        ? "tokens"
        : classifyRefreshFailure(outcome.error.kind);
      if (gate.kind === "trial") {
        await endTrial(run, app.site, breaker, verdict !== "unknown");
      } else {
        breaker.unknownInARow = unknownInARow(breaker.unknownInARow, verdict);
        if (breakerOpen(breaker.unknownInARow) && !breaker.open) {
          breaker.open = true;
          await persistOpen(run, app.site, breaker, breaker.unknownInARow);
        }
      }
    }
  } finally {
    if (gate.kind === "trial") gate.end();
  }
  switch (outcome.kind) {
    case "skip":
      return spared(run, app, outcome.reason);
    case "tokens":
      if (
        account.mp_user_id !== null && outcome.tokens.user_id !== undefined &&
        outcome.tokens.user_id !== account.mp_user_id
      ) {
        // Invariant 6: another seller's pair is never stored nor served.
        run.log.error("MP refresh answered for another seller; not stored", {
          account_id: id,
          mp_user_id: account.mp_user_id,
          answered_user_id: outcome.tokens.user_id,
        });
        return { kind: "needs_reauth", reason: "seller_mismatch" };
      }
      return outcome;
    case "decrypt_error":
      logDecryptFailure(run.log, id, "refresh_token");
      return { kind: "failed", error: "decrypt_failed", unsent: false };
    case "mp_error": {
      const { error } = outcome;
      switch (classifyRefreshFailure(error.kind)) {
        case "reauth":
          return { kind: "needs_reauth", reason: "invalid_grant" };
        case "unknown":
          return { kind: "at_risk", error: error.kind };
        case "retry":
          return {
            kind: "failed",
            error: error.kind,
            unsent: true,
            retryAfterMs: error.retryAfterMs,
          };
      }
    }
  }
}

/**
 * The part of an account's refresh that holds a slot of its application: the budget, lease,
 * breaker and rate-limit checks (that application's), and the call itself.
 */
async function callInSlot(
  run: Run,
  account: ClaimedAccount,
  { app, breaker, leaseEnd }: { app: MpApp; breaker: Breaker; leaseEnd: number },
): Promise<SlotOutcome> {
  const { ctx } = run;
  const usable = () =>
    mayStartCall(ctx.config, {
      now: Date.now(),
      budgetEnd: run.budgetEnd,
      leaseEnd,
      unload: shutdownReason(),
    });
  let reason = usable();
  if (reason) return { kind: "skip", reason };
  if (breaker.open) return { kind: "skip", reason: "circuit_open" };
  const pausedUntil = mpPausedUntil(app.site);
  if (pausedUntil > Date.now()) {
    if (pausedUntil >= run.budgetEnd) return { kind: "skip", reason: "rate_limited" };
    await sleep(pausedUntil - Date.now());
    if ((reason = usable())) return { kind: "skip", reason };
  }

  let refreshToken: string;
  try {
    refreshToken = await decryptSecret(
      await ctx.keys(),
      account.id,
      "refresh_token",
      account.mp_refresh_token,
    );
  } catch (err) {
    if (err instanceof DecryptError) return { kind: "decrypt_error", error: err };
    throw err;
  }
  // Counted before it leaves (invariant 3): a worker that dies mid-call still counts it.
  if (breaker.open) return { kind: "skip", reason: "circuit_open" };
  if (
    !(await ctx.admin((sql) =>
      beginRefreshCall(sql, account.id, run.owner, account.mp_token_version)
    ))
  ) {
    return { kind: "skip", reason: "refresh_unconfirmed" };
  }
  if (account.mp_refresh_sends > 0) {
    run.log.warn("MP refresh: last-resort attempt with a refresh token whose outcome was unknown", {
      account_id: account.id,
      expires_at: account.mp_token_expires_at?.toISOString(),
    });
  }
  try {
    const tokens = await refreshTokens(app, refreshToken);
    return { kind: "tokens", tokens, receivedAt: Date.now() };
  } catch (err) {
    if (!(err instanceof MpError)) throw err;
    if (err.kind === "rate_limited") pauseAfterRateLimit(Date.now(), err.retryAfterMs, app.site);
    return { kind: "mp_error", error: err };
  }
}
