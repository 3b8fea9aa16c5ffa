/**
 * Recording what one account's refresh came to (its `Ending`): the one place that writes an
 * account's ending to the master (the failure's backoff, re-authorization, an unknown outcome,
 * an early lease release), logs it, and turns it into the account's `AccountOutcome` with its
 * audit events. A saved pair writes nothing here: its cache is written with the others' at the
 * run's end (`syncSavedToCache` in `run_end.ts`).
 */
import type { AuditEvent } from "../store/audit.ts";
import { type AccountRow } from "../store/accounts.ts";
import {
  type ClaimedAccount,
  recordFailure,
  recordReauthRequired,
  recordUnconfirmed,
  releaseLeases,
} from "../store/refresh_leases.ts";
import { BACKOFF } from "./retry_schedules.ts";
import type { AccountOutcome, Ending, Run } from "./types.ts";

/** The master's record of a transient failure: failures in a row and the next attempt. */
type FailureState = Awaited<ReturnType<typeof recordFailure>>;

/**
 * Records the account's ending and returns its outcome (its line, audit events, whether the
 * run releases or defers its lease, the pair it saved); an escrowed pair discarded before the
 * call adds its `escrow_discarded` event first.
 */
export async function recordEnding(
  run: Run,
  account: ClaimedAccount,
  ending: Ending,
): Promise<AccountOutcome> {
  const failure = await writeEnding(run, account, ending);
  const outcome = outcomeOf(run, account, ending, failure);
  if (ending.discardedEscrow === undefined) return outcome;
  const discarded = auditEvent(run, "escrow_discarded", account, {
    base_version: ending.discardedEscrow,
  });
  return { ...outcome, events: [discarded, ...outcome.events] };
}

/**
 * Writes the ending to the master where it changes the account, under the run's lease: a
 * transient failure's backoff (or Retry-After; the lease released), the need to re-authorize,
 * an unknown outcome (at risk), or the lease released at once after an escrow. Each is best
 * effort: should the Admin DB not take it, the lease runs out and the next run (which flags a
 * counted send without an outcome at risk) sees the account again. Returns a recorded failure's
 * state.
 */
async function writeEnding(
  run: Run,
  account: ClaimedAccount,
  ending: Ending,
): Promise<FailureState | undefined> {
  const { ctx, owner, log } = run;
  const id = account.id;
  const version = account.mp_token_version;
  switch (ending.kind) {
    case "escrowed":
    case "escrow_apply_failed":
      // Best effort: once the Admin DB is back, the next run may take the account at once.
      await ctx.admin((sql) => releaseLeases(sql, owner, [id])).catch(() => {});
      return undefined;
    case "failed":
      // `unsent`: the request was counted as sent and provably never reached MercadoPago (it
      // is uncounted).
      try {
        return await ctx.admin((sql) =>
          recordFailure(sql, id, owner, version, {
            error: ending.error,
            backoff: BACKOFF,
            retryAfterMs: ending.retryAfterMs,
            unsent: ending.unsent,
          })
        );
      } catch (err) {
        log.warn("Could not record the refresh failure; the lease runs out instead", {
          account_id: id,
          error: err,
        });
        return undefined;
      }
    case "needs_reauth":
      try {
        await ctx.admin((sql) => recordReauthRequired(sql, id, owner, version, ending.reason));
      } catch (err) {
        log.warn("Could not record that the account needs re-authorization", {
          account_id: id,
          error: err,
        });
      }
      return undefined;
    case "at_risk":
      try {
        await ctx.admin((sql) => recordUnconfirmed(sql, id, owner, version, ending.error));
      } catch (err) {
        log.warn("Could not record the unknown refresh outcome; the next run flags it", {
          account_id: id,
          error: err,
        });
      }
      return undefined;
    default:
      return undefined;
  }
}

/**
 * What the ending, once written, answers and logs: the account's line, its audit events,
 * whether the run releases or defers its lease, and the pair it saved.
 */
function outcomeOf(
  run: Run,
  account: ClaimedAccount,
  ending: Ending,
  failure: FailureState | undefined,
): AccountOutcome {
  const id = account.id;
  switch (ending.kind) {
    case "skipped":
      return {
        result: { account_id: id, status: "skipped", error: ending.reason },
        events: [],
        release: !ending.defer,
        ...(ending.defer ? { defer: ending.defer } : {}),
      };
    case "superseded":
      // Newer credentials (or another owner) won the compare-and-swap.
      run.log.warn("MP refresh lost the compare-and-swap; the newer credentials stay", {
        account_id: id,
        base_version: account.mp_token_version,
      });
      return {
        result: { account_id: id, status: "superseded", error: "superseded" },
        events: [
          auditEvent(run, "refresh_superseded", account, {
            base_version: account.mp_token_version,
          }),
        ],
      };
    case "saved":
      // Nothing is written now: the cache is written with the others' at the end of the run.
      // Until then checkout serves the previous access token, which MercadoPago honours until
      // it expires; should the run die first, reconciliation repairs the cache. The save was
      // made at the claimed version, so the site read with the claim is the row's.
      return {
        result: { account_id: id, status: ending.status },
        events: [],
        saved: {
          account,
          row: { ...ending.row, mp_site_id: account.mp_site_id },
          status: ending.status,
          accessToken: ending.accessToken,
        },
      };
    case "escrowed":
      return {
        result: { account_id: id, status: "escrowed", error: "admin_unavailable" },
        events: [
          auditEvent(run, "escrowed", account, { base_version: account.mp_token_version }),
        ],
      };
    case "token_lost":
      return { result: { account_id: id, status: "failed", error: "token_lost" }, events: [] };
    case "failed":
      run.log.warn("MP token refresh failed", {
        account_id: id,
        error: ending.error,
        failures: failure?.failures,
        next_attempt_at: failure?.next_attempt_at?.toISOString(),
      });
      return {
        result: { account_id: id, status: "failed", error: ending.error },
        events: [
          auditEvent(run, "refresh_failed", account, {
            error: ending.error,
            failures: failure?.failures ?? null,
            next_attempt_at: failure?.next_attempt_at?.toISOString() ?? null,
          }),
        ],
      };
    case "needs_reauth":
      // MercadoPago refused the grant, or answered for another seller: the access token stays.
      run.log.warn("MP refresh refused; re-authorization required", {
        account_id: id,
        reason: ending.reason,
      });
      return {
        result: { account_id: id, status: "reauth_required", error: ending.reason },
        events: [auditEvent(run, "reauth_required", account, { error: ending.reason })],
      };
    case "at_risk":
      // The refresh token is never sent again but for the last resort (invariant 3).
      run.log.error("MP refresh outcome unknown; account at risk, refresh token not sent again", {
        account_id: id,
        error: ending.error,
        deadline: account.mp_token_expires_at?.toISOString(),
      });
      return {
        result: { account_id: id, status: "at_risk", error: ending.error },
        events: [auditEvent(run, "refresh_unconfirmed", account, { error: ending.error })],
      };
    case "escrow_rejected":
      return {
        result: { account_id: id, status: "failed", error: "escrow_rejected" },
        events: [auditEvent(run, "escrow_rejected", account, { reason: ending.reason })],
        release: true,
      };
    case "escrow_apply_failed":
      return {
        result: { account_id: id, status: "failed", error: "escrow_apply_failed" },
        events: [],
      };
  }
}

/** The audit event `name` of one account in this run (the run id added to its detail). */
export function auditEvent(
  run: Run,
  name: string,
  account: ClaimedAccount,
  detail: AuditEvent["detail"],
  saved?: AccountRow,
): AuditEvent {
  return {
    event: name,
    accountId: account.id,
    clientId: saved?.backend_client_id ?? account.backend_client_id,
    detail: { ...detail, run: run.owner },
    requestId: run.requestId,
  };
}
