/**
 * The OAuth callback flow (docs/contract.md, "mp-oauth-start / mp-oauth-callback"): consume the
 * single-use state, then exchange and save (`exchange.ts`), and record how the state ended. A
 * double-clicked callback finds its state consumed and waits for the first click's outcome; any
 * other unusable state is `invalid_state`, audited once per state (docs/invariants.md, invariant 8).
 */
import type { Context } from "../platform/context.ts";
import { failureOf } from "../platform/errors.ts";
import type { Logger } from "../platform/log.ts";
import { recordEvent } from "../store/audit.ts";
import { consumeState, readState, recordOutcome, rejectState } from "../store/oauth_states.ts";
import { hashState, isWellFormedState } from "./state_token.ts";
import { useConsumedState } from "./exchange.ts";
import { type CallbackCall, type CallbackResult, failed } from "./result.ts";

/**
 * A state that could not be consumed. A double click (the same code and state again) finds
 * it consumed: it waits for the first request to finish and, when that one connected the
 * account (and it still is), answers `mp=connected` for it without storing anything.
 * Unknown, expired and forged states, and repeats of a failed attempt, are `invalid_state`.
 */
async function waitOrRejectState(
  ctx: Context,
  log: Logger,
  stateHash: string,
  requestId: string,
): Promise<CallbackResult> {
  const deadline = Date.now() + ctx.config.mpTimeoutMs + 2 * ctx.config.dbTimeoutMs;
  for (;;) {
    const record = await ctx.admin((sql) => readState(sql, stateHash));
    const pending = record?.consumed && !record.expired && record.outcome === null;
    if (pending && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    if (!record) {
      log.warn("OAuth callback with an unknown state");
      return failed("invalid_state");
    }
    const cause = record.consumed ? "replayed" : "expired";
    if (
      cause === "replayed" && !record.expired && record.outcome === "connected" &&
      record.account_connected
    ) {
      log.info("OAuth callback repeated; the account is already connected", {
        account_id: record.account_id,
      });
      return { mp: "connected", account_id: record.account_id };
    }
    log.warn("OAuth callback with an unusable state", { account_id: record.account_id, cause });
    // Audited once per state: a replay flood writes nothing more.
    if (await ctx.admin((sql) => rejectState(sql, stateHash))) {
      await recordEvent(ctx, log, {
        event: "oauth_state_rejected",
        accountId: record.account_id,
        detail: { cause, first_outcome: record.outcome },
        requestId,
      });
    }
    return failed("invalid_state");
  }
}

/** The outcome of a thrown error, logged the way every function logs it. */
export function failure(err: unknown, log: Logger): CallbackResult {
  return failed(failureOf(err, log).code);
}

/** The callback proper: consume the state, use it (or wait for the click that did), record how it ended. */
export async function completeCallback(call: CallbackCall): Promise<CallbackResult> {
  const { query, ctx, log, requestId } = call;
  const state = query.get("state");
  if (!isWellFormedState(state)) {
    log.warn("OAuth callback without a well-formed state");
    return failed("invalid_state");
  }
  const stateHash = await hashState(state);
  const consumed = await ctx.admin((sql) => consumeState(sql, stateHash));
  if (!consumed) return await waitOrRejectState(ctx, log, stateHash, requestId);

  const accountId = consumed.account_id;
  let result: CallbackResult;
  try {
    result = await useConsumedState(
      call,
      accountId,
      consumed.code_verifier_encrypted,
      consumed.replace_seller,
      consumed.site_id,
    );
  } catch (err) {
    result = await failure(err, log);
  }
  try {
    await ctx.admin((sql) =>
      recordOutcome(sql, stateHash, result.mp === "connected" ? "connected" : result.reason)
    );
  } catch (err) {
    log.warn("Could not record the OAuth state's outcome", { account_id: accountId, error: err });
  }
  return result;
}
