/**
 * The recorders of a refresh run's outcomes: each writes what happened to one account (the
 * master's failure or re-authorization state, a log line) and queues its audit event.
 */
import type { AuditEvent } from "../store/audit.ts";
import {
  type AccountRow,
  type ClaimedAccount,
  recordFailure,
  recordReauthRequired,
} from "../store/accounts.ts";
import { syncAccountRow } from "../sync/sync.ts";
import { BACKOFF, type RefreshResult, type Run } from "./types.ts";

/** Syncs a saved account to `clients` and records the success. */
export async function recordSynced(
  run: Run,
  account: ClaimedAccount,
  saved: AccountRow,
  status: "refreshed" | "escrow_applied",
): Promise<RefreshResult> {
  let sync: string;
  try {
    sync = (await syncAccountRow(run.ctx, saved)).result;
  } catch (err) {
    sync = "failed";
    run.log.warn("MP credentials refreshed but not synced to the Backend DB", {
      account_id: account.id,
      client_id: saved.backend_client_id,
      token_version: saved.mp_token_version,
      error: err,
    });
  }
  run.events.push(
    buildEvent(run, status, account, { token_version: saved.mp_token_version, sync }, saved),
  );
  return { account_id: account.id, status };
}

/** A save that lost the compare-and-swap: newer credentials (or another owner) won. */
export function recordSuperseded(run: Run, account: ClaimedAccount): RefreshResult {
  run.log.warn("MP refresh lost the compare-and-swap; the newer credentials stay", {
    account_id: account.id,
    base_version: account.mp_token_version,
  });
  run.events.push(
    buildEvent(run, "refresh_superseded", account, { base_version: account.mp_token_version }),
  );
  return { account_id: account.id, status: "superseded", error: "superseded" };
}

/** Records a transient failure (backoff or Retry-After) and releases the lease. */
export async function recordFailed(
  run: Run,
  account: ClaimedAccount,
  error: string,
  retryAfterMs?: number,
): Promise<RefreshResult> {
  let state: Awaited<ReturnType<typeof recordFailure>>;
  try {
    state = await run.ctx.admin((sql) =>
      recordFailure(
        sql,
        account.id,
        run.owner,
        account.mp_token_version,
        error,
        BACKOFF,
        retryAfterMs,
      )
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
  run.events.push(
    buildEvent(run, "refresh_failed", account, {
      error,
      failures: state?.failures ?? null,
      next_attempt_at: state?.next_attempt_at?.toISOString() ?? null,
    }),
  );
  return { account_id: account.id, status: "failed", error };
}

/** Records invalid_grant: the account needs re-authorization; its access token stays. */
export async function recordNeedsReauth(run: Run, account: ClaimedAccount): Promise<RefreshResult> {
  try {
    await run.ctx.admin((sql) =>
      recordReauthRequired(sql, account.id, run.owner, account.mp_token_version)
    );
  } catch (err) {
    run.log.warn("Could not record that the account needs re-authorization", {
      account_id: account.id,
      error: err,
    });
  }
  run.log.warn("MP refresh token rejected (invalid_grant); re-authorization required", {
    account_id: account.id,
  });
  run.events.push(buildEvent(run, "reauth_required", account, { error: "invalid_grant" }));
  return { account_id: account.id, status: "reauth_required", error: "invalid_grant" };
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
