/**
 * The OAuth callback once its state is consumed: the seller's decline, or the exchange of the
 * code at MercadoPago (with the PKCE verifier when one was sealed) and the save of the new
 * connection, refused for another account's seller or a seller change not asked for
 * (docs/invariants.md, invariant 6).
 */
import { decryptSecret } from "../platform/crypto.ts";
import { exchangeCode, MpError } from "../mercadopago/api.ts";
import { recordEvent } from "../store/audit.ts";
import { saveConnection } from "../connection/connection.ts";
import { type CallbackCall, type CallbackResult, failed } from "./result.ts";

/** With the state consumed: the seller's decline, or the code exchange and the save. */
export async function useConsumedState(
  { query, ctx, log, requestId }: CallbackCall,
  accountId: string,
  codeVerifierEncrypted: string | null,
  replaceSeller: boolean,
): Promise<CallbackResult> {
  const error = query.get("error");
  if (error !== null) {
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
  const code = query.get("code");
  if (!code) {
    log.warn("OAuth callback without a code", { account_id: accountId });
    return failed("invalid_request");
  }

  const codeVerifier = codeVerifierEncrypted === null
    ? undefined
    : await decryptSecret(await ctx.keys(), accountId, "code_verifier", codeVerifierEncrypted);
  let tokens;
  try {
    tokens = await exchangeCode(ctx.config, { code, codeVerifier });
    if (!tokens.public_key) {
      throw new MpError("bad_response", "MercadoPago token response has no public_key");
    }
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
    return failed("exchange_failed");
  }

  const saved = await saveConnection(
    ctx,
    log,
    accountId,
    { ...tokens, public_key: tokens.public_key },
    { requestId, replaceSeller },
  );
  if (saved.result === "seller_mismatch") {
    log.warn("MP authorized another seller than the account's; nothing stored", {
      account_id: accountId,
      mp_user_id: tokens.user_id,
    });
    await recordEvent(ctx, log, {
      event: "connect_rejected",
      accountId,
      detail: { reason: "seller_mismatch", mp_user_id: tokens.user_id },
      requestId,
    });
    return failed("seller_mismatch");
  }
  if (saved.result === "mp_account_in_use") {
    log.warn("MP seller already connected to another account; nothing stored", {
      account_id: accountId,
      other_account_id: saved.otherAccountId,
      mp_user_id: tokens.user_id,
    });
    await recordEvent(ctx, log, {
      event: "connect_rejected",
      accountId,
      detail: {
        reason: "mp_account_in_use",
        mp_user_id: tokens.user_id,
        other_account_id: saved.otherAccountId,
      },
      requestId,
    });
    return failed("mp_account_in_use");
  }
  if (saved.result === "account_not_found") return failed("account_not_found");
  return { mp: "connected", account_id: accountId };
}
