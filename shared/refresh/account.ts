/**
 * One claimed account's way through a refresh run: apply its escrowed pair if one waits at
 * its version, else take a MercadoPago slot, check time and lease, call, and hand the outcome
 * to the save or the recorders.
 */
import { DecryptError, decryptSecret, logDecryptFailure } from "../platform/crypto.ts";
import { sharedLimiter } from "../platform/limiter.ts";
import { shutdownReason } from "../platform/worker_life.ts";
import { MpError, type MpTokens, refreshTokens } from "../mercadopago/api.ts";
import { deleteEscrow, type EscrowEntry } from "../store/escrow.ts";
import type { ClaimedAccount } from "../store/accounts.ts";
import { mayStartCall } from "./may_start_call.ts";
import { mpPausedUntil, pauseAfterRateLimit } from "./rate_limit_pause.ts";
import { buildEvent, recordFailed, recordNeedsReauth } from "./record.ts";
import { applyEscrow, saveTokens } from "./save.ts";
import { type RefreshResult, type Run, sleep } from "./types.ts";

/** What happened inside the MercadoPago slot. */
type SlotOutcome =
  | { kind: "skip"; reason: string }
  | { kind: "tokens"; tokens: MpTokens; receivedAt: number }
  | { kind: "mp_error"; error: MpError }
  | { kind: "decrypt_error"; error: DecryptError };

/** Takes one claimed account through the run, given the escrowed pairs (unknown: skip). */
export async function refreshAccount(
  run: Run,
  account: ClaimedAccount,
  escrows: Map<string, EscrowEntry> | undefined,
): Promise<RefreshResult> {
  const id = account.id;
  const skip = (reason: string): RefreshResult => {
    run.unused.push(id);
    return { account_id: id, status: "skipped", error: reason };
  };
  if (!escrows) return skip("escrow_unavailable");
  const escrow = escrows.get(id);
  if (escrow && escrow.baseVersion === account.mp_token_version) {
    return await applyEscrow(run, account, escrow);
  }
  if (escrow && escrow.baseVersion > account.mp_token_version) return skip("escrow_ahead");
  if (escrow) {
    // Taken from an older version: the credentials changed since (applied, or reconnected).
    await run.ctx.backend((sql) => deleteEscrow(sql, id, escrow.baseVersion)).catch(() => {});
    run.events.push(
      buildEvent(run, "escrow_discarded", account, { base_version: escrow.baseVersion }),
    );
  }

  // The lease's end on this machine's clock, from the database's own now() at claim time.
  const leaseEnd = Date.now() + (account.lease_expires_at.getTime() - account.db_now.getTime());
  const release = await sharedLimiter(run.ctx.config.refreshConcurrency).acquire();
  let outcome: SlotOutcome;
  try {
    outcome = await callInSlot(run, account, leaseEnd);
  } finally {
    release();
  }
  switch (outcome.kind) {
    case "skip":
      return skip(outcome.reason);
    case "tokens":
      return await saveTokens(run, account, outcome.tokens, outcome.receivedAt);
    case "decrypt_error":
      logDecryptFailure(run.log, id, "refresh_token");
      return await recordFailed(run, account, "decrypt_failed");
    case "mp_error":
      if (outcome.error.kind === "invalid_grant") return await recordNeedsReauth(run, account);
      return await recordFailed(run, account, outcome.error.kind, outcome.error.retryAfterMs);
  }
}

/**
 * The part of an account's refresh that holds a MercadoPago slot: the budget, lease and
 * rate-limit checks, and the call itself.
 */
async function callInSlot(
  run: Run,
  account: ClaimedAccount,
  leaseEnd: number,
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
  const pausedUntil = mpPausedUntil();
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
  try {
    const tokens = await refreshTokens(ctx.config, refreshToken);
    return { kind: "tokens", tokens, receivedAt: Date.now() };
  } catch (err) {
    if (!(err instanceof MpError)) throw err;
    if (err.kind === "rate_limited") pauseAfterRateLimit(Date.now(), err.retryAfterMs);
    return { kind: "mp_error", error: err };
  }
}
