/**
 * The sandbox's `POST /oauth/token`: code exchanges (single-use codes, PKCE when a challenge was
 * sent) and refreshes (single-use, rotated; a spent one presented again revokes its grant). Codes
 * and refresh tokens are bound to the application that issued them: presented with another
 * application's credentials they answer `invalid_grant` and are refused unprocessed (the code or
 * token is not spent, a spent one's grant not revoked), counted in `cross_app_calls`.
 */
import { mpError, type Params, readParams, s256 } from "./wire.ts";
import { answer, failBefore, gone } from "./faults.ts";
import { CODE_TTL_MS, type SandboxApp, type SandboxState, type TokenBody } from "./state.ts";
import type { Shown } from "./ledger.ts";

/**
 * A code exchange or a refresh, then the fault of this call, if any. The body is read first, so
 * the ledger records a presented refresh token whatever happens to the call next, and what it
 * was answered.
 */
export async function token(s: SandboxState, req: Request): Promise<Response> {
  s.stats.token_calls++;
  // Read while the latch may hold the call (which is held at once, on arrival).
  const reading = readParams(req).then((body) => ({
    body,
    shown: body?.grant_type === "refresh_token" && body.refresh_token
      ? s.ledger.presented(body.refresh_token)
      : undefined,
  }));
  const settle = (shown: Shown | undefined, answer: string, res: Response) => {
    s.ledger.answered(shown, answer, undefined, "abandoned");
    return res;
  };
  if (s.holding && !(await s.hold(req.signal))) {
    return settle((await reading).shown, "abandoned", gone());
  }
  const { body, shown } = await reading;
  // The application whose credentials the call carries: its own latch, fault and latency.
  const app = s.apps.get(body?.client_id ?? "");
  const appStats = s.appStats(app?.clientId);
  if (appStats) appStats.token_calls++;
  if (s.appHolding(app?.clientId) && !(await s.hold(req.signal, app!.clientId))) {
    return settle(shown, "abandoned", gone());
  }
  const mode = s.takeFault("token", body?.grant_type ?? null, app?.clientId);
  const fail = await failBefore(s, req, mode, app?.clientId);
  if (fail) {
    return settle(shown, fail.status === 504 && mode !== "timeout" ? "abandoned" : mode!, fail);
  }
  if (!body) {
    return answer(mpError(400, "invalid_request", "malformed request body"), mode);
  }
  const outcome = await grantTokens(s, body, mode === "other_seller");
  const issued = outcome instanceof Response ? undefined : outcome;
  const said = outcome instanceof Response ? await errorOf(outcome) : "issued";
  try {
    const res = answer(outcome, mode);
    const delivered = !req.signal.aborted;
    const mangled = mode === "error_500_after" ||
      (issued && (mode === "malformed_200" || mode === "other_seller"));
    s.ledger.answered(
      shown,
      !delivered ? "abandoned" : mangled ? mode! : said,
      issued,
      !delivered
        ? "abandoned"
        : mode === "error_500_after" || mode === "malformed_200"
        ? mode
        : "delivered",
    );
    return res;
  } catch (err) {
    s.ledger.answered(shown, "dropped", issued, "dropped");
    throw err;
  }
}

/**
 * The `error` of a MercadoPago error answer (`reused` for a spent refresh token, `cross_app` for
 * one presented with another application's credentials).
 */
async function errorOf(res: Response): Promise<string> {
  const body = await res.clone().json().catch(() => ({}));
  if (body.message === "refresh_token already used") return "reused";
  if (body.message === CROSS_APP_REFRESH || body.message === CROSS_APP_CODE) return "cross_app";
  return String(body.error);
}

/** MercadoPago's message for a code or refresh token presented by another application. */
const CROSS_APP_CODE = "authorization code belongs to another client";
const CROSS_APP_REFRESH = "refresh_token belongs to another client";

/**
 * Refuses, unprocessed, a code or refresh token of application `owner` presented with the
 * credentials of `app`: `invalid_grant`, counted in `cross_app_calls` (total and `app`'s).
 */
function crossApp(s: SandboxState, app: SandboxApp, message: string): Response {
  s.stats.cross_app_calls++;
  s.appStats(app.clientId)!.cross_app_calls++;
  return mpError(400, "invalid_grant", message);
}

/** Processes a token request: new tokens, or MercadoPago's error for it. */
async function grantTokens(
  s: SandboxState,
  body: Params,
  otherSeller: boolean,
): Promise<Response | TokenBody> {
  const app = s.apps.get(body.client_id ?? "");
  if (!app || body.client_secret !== app.clientSecret) {
    return mpError(401, "invalid_client", "invalid client_id or client_secret");
  }
  if (body.code_verifier) s.issued.add(body.code_verifier);
  if (body.grant_type === "authorization_code") {
    return await exchangeCode(s, app, body, otherSeller);
  }
  if (body.grant_type === "refresh_token") return refresh(s, app, body, otherSeller);
  if (!body.grant_type) return mpError(400, "invalid_request", "grant_type is required");
  return mpError(400, "unsupported_grant_type", "unsupported grant_type");
}

/** `grant_type=authorization_code`: consumes the code and starts a new grant of `app`. */
async function exchangeCode(
  s: SandboxState,
  app: SandboxApp,
  body: Params,
  otherSeller: boolean,
) {
  const entry = body.code === undefined ? undefined : s.codes.get(body.code);
  if (!entry) return mpError(400, "invalid_grant", "invalid authorization code");
  if (entry.clientId !== app.clientId) return crossApp(s, app, CROSS_APP_CODE);
  s.codes.delete(body.code!); // single use: any exchange attempt of its app consumes the code
  if (s.now() - entry.issuedAt > CODE_TTL_MS) {
    return mpError(400, "invalid_grant", "authorization code expired");
  }
  if (entry.clientId !== body.client_id || entry.redirectUri !== body.redirect_uri) {
    return mpError(400, "invalid_grant", "redirect_uri does not match");
  }
  if (entry.codeChallenge !== undefined) {
    if (!body.code_verifier || (await s256(body.code_verifier)) !== entry.codeChallenge) {
      return mpError(400, "invalid_grant", "invalid code_verifier");
    }
  }
  const seller = otherSeller ? s.seller(undefined, app) : entry.userId;
  return s.issueTokens(s.newGrant(seller, app.clientId), {
    via: "code",
    parent: body.code,
    authorizedUserId: entry.userId,
  });
}

/** `grant_type=refresh_token`: spends the token for a new pair; reuse revokes the grant. */
function refresh(
  s: SandboxState,
  app: SandboxApp,
  body: Params,
  otherSeller: boolean,
): Response | TokenBody {
  const entry = body.refresh_token === undefined
    ? undefined
    : s.refreshTokens.get(body.refresh_token);
  if (entry && entry.grant.clientId !== app.clientId) {
    return crossApp(s, app, CROSS_APP_REFRESH);
  }
  if (!entry || entry.revoked) return mpError(400, "invalid_grant", "invalid refresh_token");
  if (entry.used) {
    s.stats.refresh_token_reuse++;
    s.revokeGrant(entry.grant, "reuse"); // every token of this grant stops working
    return mpError(400, "invalid_grant", "refresh_token already used");
  }
  if (entry.grant.revoked) return mpError(400, "invalid_grant", "invalid refresh_token");
  entry.used = true;
  s.stats.refreshes++;
  s.appStats(app.clientId)!.refreshes++;
  return s.issueTokens(
    otherSeller ? s.newGrant(s.seller(undefined, app), app.clientId) : entry.grant,
    {
      via: "refresh",
      parent: body.refresh_token,
    },
  );
}
