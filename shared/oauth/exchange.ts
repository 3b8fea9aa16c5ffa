/**
 * The OAuth callback once its state is consumed: the seller's decline, or the exchange of the
 * code at MercadoPago by the application the state was started for (with the PKCE verifier
 * when one was sealed), the seller's site confirmed with `/users/me` (a seller of another site
 * is refused: `seller_site_mismatch`), and the save of the new connection, refused for another
 * account's seller or a seller change not asked for (docs/invariants.md, invariant 6).
 */
import { appOfSite, MisconfiguredError, type MpApp } from "../platform/config.ts";
import { decryptSecret } from "../platform/crypto.ts";
import { checkAccessToken, exchangeCode, MpError, type MpTokens } from "../mercadopago/api.ts";
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
  app: MpApp,
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
    const tokens = await exchangeCode(app, { code, codeVerifier });
    if (!tokens.public_key) {
      throw new MpError("bad_response", "MercadoPago token response has no public_key");
    }
    return { tokens: { ...tokens, public_key: tokens.public_key } };
  } catch (err) {
    if (!(err instanceof MpError)) throw err;
    log.warn("MP code exchange failed", {
      account_id: accountId,
      site: app.site,
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

/**
 * The seller's site as MercadoPago tells it (`/users/me` with the new access token): undefined
 * when it is `app`'s, else the refusal (logged and audited, nothing stored): a seller of another
 * site is `seller_site_mismatch`; MercadoPago not telling is `exchange_failed`.
 */
async function confirmSellerSite(
  { ctx, log, requestId }: CallbackCall,
  app: MpApp,
  accountId: string,
  tokens: MpTokens & { user_id: number },
): Promise<CallbackResult | undefined> {
  let sellerSite: string | null;
  try {
    const me = await checkAccessToken(app, tokens.access_token);
    if (me.status !== "valid") throw new MpError("rejected", "MercadoPago refused the new token");
    sellerSite = me.siteId;
  } catch (err) {
    if (!(err instanceof MpError)) throw err;
    log.warn("MP seller's site could not be confirmed; nothing stored", {
      account_id: accountId,
      site: app.site,
      kind: err.kind,
      status: err.status,
    });
    await recordEvent(ctx, log, {
      event: "exchange_failed",
      accountId,
      detail: { step: "users_me", site: app.site, kind: err.kind, status: err.status ?? null },
      requestId,
    });
    return failed("exchange_failed");
  }
  if (sellerSite === app.site) return undefined;
  log.warn("MP seller of another site than the application's; nothing stored", {
    account_id: accountId,
    mp_user_id: tokens.user_id,
    site: app.site,
    seller_site: sellerSite,
  });
  await recordEvent(ctx, log, {
    event: "connect_rejected",
    accountId,
    detail: {
      reason: "seller_site_mismatch",
      mp_user_id: tokens.user_id,
      site: app.site,
      seller_site: sellerSite,
    },
    requestId,
  });
  return failed("seller_site_mismatch");
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

/**
 * With the state consumed: the seller's decline, or the code exchange by the application of
 * the state's site (null: a state from before sites, the default one), the seller's site
 * confirmed, and the save.
 */
export async function useConsumedState(
  call: CallbackCall,
  accountId: string,
  codeVerifierEncrypted: string | null,
  replaceSeller: boolean,
  siteId: string | null = null,
): Promise<CallbackResult> {
  const { query, ctx, log, requestId } = call;
  const error = query.get("error");
  if (error !== null) return await recordDecline(call, accountId, error);
  const code = query.get("code");
  if (!code) {
    log.warn("OAuth callback without a code", { account_id: accountId });
    return failed("invalid_request");
  }
  const app = appOfSite(ctx.config, siteId);
  if (!app) throw new MisconfiguredError("MP_APPS", "the connect's site has no application");
  const exchanged = await exchange(call, app, accountId, code, codeVerifierEncrypted);
  if ("refused" in exchanged) return exchanged.refused;
  const { tokens } = exchanged;
  const wrongSite = await confirmSellerSite(call, app, accountId, tokens);
  if (wrongSite) return wrongSite;
  const saved = await saveConnection(ctx, log, accountId, tokens, {
    requestId,
    replaceSeller,
    siteId: app.site,
  });
  if (saved.result === "seller_mismatch" || saved.result === "mp_account_in_use") {
    return await recordRefusal(call, accountId, tokens.user_id, saved);
  }
  if (saved.result === "account_not_found") return failed("account_not_found");
  return { mp: "connected", account_id: accountId };
}
