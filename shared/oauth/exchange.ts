/**
 * The OAuth callback once its state is consumed: the seller's decline, or the exchange of the
 * code at MercadoPago (with the PKCE verifier when one was sealed) and the save of the new
 * connection, refused for another account's seller or a seller change not asked for
 * (docs/invariants.md, invariant 6).
 */
import { decryptSecret } from "../platform/crypto.ts";
import { exchangeCode, MpError, type MpTokens } from "../mercadopago/api.ts";
import { recordEvent } from "../store/audit.ts";
import { saveConnection } from "../connection/connection.ts";
import { type CallbackCall, type CallbackResult, failed } from "./result.ts";

/** The seller declined at MercadoPago (`?error=`): logged and audited, nothing stored. */
async function recordDecline(
  { ctx, log, requestId }: CallbackCall,
  accountId: string,
  error: string,
): Promise<CallbackResult> {
  const reason = error === "access_denied" ? "access_denied" : "authorization_failed";
  const mpError = /^[a-z_]{1,64}$/.test(error) ? error : "other";
  log.info("Seller did not authorize the application", {
    account_id: accountId,
    mp_error: mpError,
  });
  await recordEvent(ctx, log, {
    event: "declined",
    accountId,
    detail: { mp_error: mpError },
    requestId,
  });
  return failed(reason);
}

/** Exchanges the code at MercadoPago; a failed exchange is logged, audited and `exchange_failed`. */
async function exchange(
  { ctx, log, requestId }: CallbackCall,
  accountId: string,
  code: string,
  codeVerifierEncrypted: string | null,
): Promise<
  { tokens: MpTokens & { public_key: string; user_id: number } } | { refused: CallbackResult }
> {
  const codeVerifier = codeVerifierEncrypted === null
    ? undefined
    : await decryptSecret(await ctx.keys(), accountId, "code_verifier", codeVerifierEncrypted);
  try {
    const tokens = await exchangeCode(ctx.config, { code, codeVerifier });
    if (!tokens.public_key) {
      throw new MpError("bad_response", "MercadoPago token response has no public_key");
    }
    return { tokens: { ...tokens, public_key: tokens.public_key } };
  } catch (err) {
    if (!(err instanceof MpError)) throw err;
    log.warn("MP code exchange failed", {
      account_id: accountId,
      kind: err.kind,
      status: err.status,
      error: err.message,
    });
    await recordEvent(ctx, log, {
      event: "exchange_failed",
      accountId,
      detail: { kind: err.kind, status: err.status ?? null },
      requestId,
    });
    return { refused: failed("exchange_failed") };
  }
}

/** A save refused because the seller is another's or not the account's own: logged and audited. */
async function recordRefusal(
  { ctx, log, requestId }: CallbackCall,
  accountId: string,
  mpUserId: number,
  refusal: { result: "seller_mismatch" } | { result: "mp_account_in_use"; otherAccountId: string },
): Promise<CallbackResult> {
  if (refusal.result === "seller_mismatch") {
    log.warn("MP authorized another seller than the account's; nothing stored", {
      account_id: accountId,
      mp_user_id: mpUserId,
    });
    await recordEvent(ctx, log, {
      event: "connect_rejected",
      accountId,
      detail: { reason: "seller_mismatch", mp_user_id: mpUserId },
      requestId,
    });
    return failed("seller_mismatch");
  }
  log.warn("MP seller already connected to another account; nothing stored", {
    account_id: accountId,
    other_account_id: refusal.otherAccountId,
    mp_user_id: mpUserId,
  });
  await recordEvent(ctx, log, {
    event: "connect_rejected",
    accountId,
    detail: {
      reason: "mp_account_in_use",
      mp_user_id: mpUserId,
      other_account_id: refusal.otherAccountId,
    },
    requestId,
  });
  return failed("mp_account_in_use");
}

/** With the state consumed: the seller's decline, or the code exchange and the save. */
export async function useConsumedState(
  call: CallbackCall,
  accountId: string,
  codeVerifierEncrypted: string | null,
  replaceSeller: boolean,
): Promise<CallbackResult> {
  const { query, ctx, log, requestId } = call;
  const error = query.get("error");
  if (error !== null) return await recordDecline(call, accountId, error);
  const code = query.get("code");
  if (!code) {
    log.warn("OAuth callback without a code", { account_id: accountId });
    return failed("invalid_request");
  }
  const exchanged = await exchange(call, accountId, code, codeVerifierEncrypted);
  if ("refused" in exchanged) return exchanged.refused;
  const { tokens } = exchanged;
  const saved = await saveConnection(ctx, log, accountId, tokens, { requestId, replaceSeller });
  if (saved.result === "seller_mismatch" || saved.result === "mp_account_in_use") {
    return await recordRefusal(call, accountId, tokens.user_id, saved);
  }
  if (saved.result === "account_not_found") return failed("account_not_found");
  return { mp: "connected", account_id: accountId };
}
