/**
 * The recorders of a refresh run's outcomes: each writes what happened to one account (the
 * master's failure or re-authorization state, a log line) and returns it as an
 * `AccountOutcome` with its audit event.
 */
import type { AuditEvent } from "../store/audit.ts";
import { type AccountRow } from "../store/accounts.ts";
import {
  type ClaimedAccount,
  recordFailure,
  recordReauthRequired,
  recordUnconfirmed,
} from "../store/refresh_leases.ts";
import { SyncPipeline } from "../sync/sync_batch.ts";
import type { AccountOutcome, Run, SavedPair } from "./types.ts";
import { BACKOFF } from "./retry_schedules.ts";

/**
 * Records a saved account; its cache is written with the others' at the end of the run
 * (`syncSaved`). Until then checkout serves the previous access token, which MercadoPago
 * honours until it expires; should the run die first, reconciliation repairs the cache. The
 * save was made at the claimed version, so the site read with the claim is the row's.
 */
export function recordSynced(
  account: ClaimedAccount,
  saved: AccountRow,
  status: "refreshed" | "escrow_applied",
  accessToken?: string,
): AccountOutcome {
  return {
    result: { account_id: account.id, status },
    events: [],
    saved: { account, row: { ...saved, mp_site_id: account.mp_site_id }, status, accessToken },
  };
}

/** Cache rows a run writes per statement. */
const SYNC_PAGE = 500;

/**
 * Writes the caches of the accounts saved this run, in version-fenced batches (one statement
 * per page instead of one per account); returns each success's audit event with its sync
 * outcome.
 */
export async function syncSaved(run: Run, saved: SavedPair[]): Promise<AuditEvent[]> {
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
    buildEvent(run, status, account, {
      token_version: row.mp_token_version,
      sync: outcomes.get(account.id) ?? "failed",
    }, row)
  );
}

/** A save that lost the compare-and-swap: newer credentials (or another owner) won. */
export function recordSuperseded(run: Run, account: ClaimedAccount): AccountOutcome {
  run.log.warn("MP refresh lost the compare-and-swap; the newer credentials stay", {
    account_id: account.id,
    base_version: account.mp_token_version,
  });
  return {
    result: { account_id: account.id, status: "superseded", error: "superseded" },
    events: [
      buildEvent(run, "refresh_superseded", account, { base_version: account.mp_token_version }),
    ],
  };
}

/**
 * Records a transient failure (backoff or Retry-After) and releases the lease; `unsent`: the
 * request was counted as sent and provably never reached MercadoPago (it is uncounted).
 */
export async function recordFailed(
  run: Run,
  account: ClaimedAccount,
  error: string,
  opts: { unsent: boolean; retryAfterMs?: number },
): Promise<AccountOutcome> {
  let state: Awaited<ReturnType<typeof recordFailure>>;
  try {
    state = await run.ctx.admin((sql) =>
      recordFailure(sql, account.id, run.owner, account.mp_token_version, {
        error,
        backoff: BACKOFF,
        retryAfterMs: opts.retryAfterMs,
        unsent: opts.unsent,
      })
    );
  } catch (err) {
    run.log.warn("Could not record the refresh failure; the lease runs out instead", {
      account_id: account.id,
      error: err,
    });
  }
  run.log.warn("MP token refresh failed", {
    account_id: account.id,
    error,
    failures: state?.failures,
    next_attempt_at: state?.next_attempt_at?.toISOString(),
  });
  return {
    result: { account_id: account.id, status: "failed", error },
    events: [
      buildEvent(run, "refresh_failed", account, {
        error,
        failures: state?.failures ?? null,
        next_attempt_at: state?.next_attempt_at?.toISOString() ?? null,
      }),
    ],
  };
}

/**
 * Records that the account needs re-authorization: MercadoPago refused the grant
 * (`invalid_grant`) or answered for another seller (`seller_mismatch`). Its access token stays.
 */
export async function recordNeedsReauth(
  run: Run,
  account: ClaimedAccount,
  reason: "invalid_grant" | "seller_mismatch",
): Promise<AccountOutcome> {
  try {
    await run.ctx.admin((sql) =>
      recordReauthRequired(sql, account.id, run.owner, account.mp_token_version, reason)
    );
  } catch (err) {
    run.log.warn("Could not record that the account needs re-authorization", {
      account_id: account.id,
      error: err,
    });
  }
  run.log.warn("MP refresh refused; re-authorization required", {
    account_id: account.id,
    reason,
  });
  return {
    result: { account_id: account.id, status: "reauth_required", error: reason },
    events: [buildEvent(run, "reauth_required", account, { error: reason })],
  };
}

/**
 * Records a refresh whose outcome is unknown (it may have reached MercadoPago): the account is
 * at risk, its refresh token is never sent again but for the last resort (invariant 3). Should
 * the Admin DB not take it, the counted send stays and the next run flags it the same way.
 */
export async function recordAtRisk(
  run: Run,
  account: ClaimedAccount,
  error: string,
): Promise<AccountOutcome> {
  try {
    await run.ctx.admin((sql) =>
      recordUnconfirmed(sql, account.id, run.owner, account.mp_token_version, error)
    );
  } catch (err) {
    run.log.warn("Could not record the unknown refresh outcome; the next run flags it", {
      account_id: account.id,
      error: err,
    });
  }
  run.log.error("MP refresh outcome unknown; account at risk, refresh token not sent again", {
    account_id: account.id,
    error,
    deadline: account.mp_token_expires_at?.toISOString(),
  });
  return {
    result: { account_id: account.id, status: "at_risk", error },
    events: [buildEvent(run, "refresh_unconfirmed", account, { error })],
  };
}

/** The audit event `name` of one account in this run (the run id added to its detail). */
export function buildEvent(
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
