import { type Call, defineFunction, errorResponse } from "../../../shared/platform/http.ts";
import type { Context } from "../../../shared/platform/context.ts";
import type { Logger } from "../../../shared/platform/log.ts";
import { decryptSecret } from "../../../shared/platform/crypto.ts";
import { exchangeCode, MpError } from "../../../shared/mercadopago/api.ts";
import {
  consumeState,
  hashState,
  isWellFormedState,
  readState,
  recordOutcome,
  rejectState,
} from "../../../shared/store/oauth_states.ts";
import { saveConnection } from "../../../shared/connection/connection.ts";
import { recordEvent } from "../../../shared/store/audit.ts";

/** Where the browser goes back to: `mp=connected&account_id=…` or `mp=error&reason=…`. */
type Result = { mp: "connected"; account_id: string } | { mp: "error"; reason: string };

const failed = (reason: string): Result => ({ mp: "error", reason });

/** A 302 to APP_RETURN_URL with the result in its query string. */
function redirect(appReturnUrl: string, result: Result): Response {
  const target = new URL(appReturnUrl);
  for (const [k, val] of Object.entries(result)) target.searchParams.set(k, val);
  return new Response(null, {
    status: 302,
    headers: {
      location: target.href,
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
    },
  });
}

/**
 * A state that could not be consumed. A double click (the same code and state again) finds
 * it consumed: it waits for the first request to finish and, when that one connected the
 * account (and it still is), answers `mp=connected` for it without storing anything.
 * Unknown, expired and forged states, and repeats of a failed attempt, are `invalid_state`.
 */
async function unusableState(
  ctx: Context,
  log: Logger,
  stateHash: string,
  requestId: string,
): Promise<Result> {
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
async function failure(err: unknown, log: Logger): Promise<Result> {
  const { error } = await errorResponse(err, log).json();
  return failed(error.code);
}

/** With the state consumed: the decline, or the exchange and the save. */
async function useState(
  { req, ctx, log, requestId }: Call<unknown>,
  accountId: string,
  codeVerifierEncrypted: string | null,
  replaceSeller: boolean,
): Promise<Result> {
  const query = new URL(req.url).searchParams;
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

/** The callback proper: consume the state, use it, record how it ended. */
async function complete(call: Call<unknown>): Promise<Result> {
  const { req, ctx, log, requestId } = call;
  const state = new URL(req.url).searchParams.get("state");
  if (!isWellFormedState(state)) {
    log.warn("OAuth callback without a well-formed state");
    return failed("invalid_state");
  }
  const stateHash = await hashState(state);
  const consumed = await ctx.admin((sql) => consumeState(sql, stateHash));
  if (!consumed) return await unusableState(ctx, log, stateHash, requestId);

  const accountId = consumed.account_id;
  let result: Result;
  try {
    result = await useState(
      call,
      accountId,
      consumed.code_verifier_encrypted,
      consumed.replace_seller,
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

/**
 * mp-oauth-callback: MercadoPago sends the seller's browser here with `code` and `state`
 * (or `error` and `state`). Public: its safety is the single-use state, PKCE and the exact
 * redirect URI. Always answers 302 to APP_RETURN_URL, errors included (reason in the query).
 */
export const handler = defineFunction({
  name: "mp-oauth-callback",
  methods: ["GET"],
  auth: "public",
  needs: [
    "appReturnUrl",
    "adminDbUrl",
    "backendDbUrl",
    "tokenKeys",
    "mpClientId",
    "mpClientSecret",
    "mpRedirectUri",
  ],
  async run(call) {
    // Errors are logged as every function logs them; the browser still goes back, with the code.
    const result = await complete(call).catch((err) => failure(err, call.log));
    return redirect(call.ctx.config.appReturnUrl!, result);
  },
});
