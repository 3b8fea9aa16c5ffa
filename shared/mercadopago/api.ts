/**
 * MercadoPago's OAuth as its documentation gives it: the authorization URL, the code
 * exchange and the refresh (`POST /oauth/token`, JSON), and `GET /users/me`, with a timeout and
 * typed failures. Every call is made for one application (`MpApp`): its credentials, its
 * authorization host, its redirect URI — never another's.
 */
import * as v from "valibot";
import type { MpApp } from "../platform/config.ts";

/**
 * A validated token response. `public_key`, `live_mode`, `scope` may be absent on refresh, and
 * so may `user_id` (the stored seller is kept; a code exchange requires it).
 */
export interface MpTokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  user_id?: number;
  public_key?: string;
  live_mode?: boolean;
  scope?: string;
}

/**
 * How a call to MercadoPago failed. What each means for a refresh token is decided once, in
 * `shared/refresh/outcome.ts`:
 * - `not_sent`: the connection failed before the request was written (refused, DNS, TLS);
 * - `lost`: the connection failed after it may have been written;
 * - `timeout`: no answer within `MP_HTTP_TIMEOUT_MS`;
 * - `rate_limited` (429), `invalid_grant`, `rejected` (another 4xx), `server_error` (5xx);
 * - `bad_response`: a 2xx whose body is not a usable answer.
 */
export type MpFailure =
  | "invalid_grant"
  | "rate_limited"
  | "timeout"
  | "not_sent"
  | "lost"
  | "server_error"
  | "rejected"
  | "bad_response";

/** A failed MercadoPago call. Its message never holds a token or the client secret. */
export class MpError extends Error {
  constructor(
    readonly kind: MpFailure,
    message: string,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "MpError";
  }
}

const TokenResponse = v.object({
  access_token: v.pipe(v.string(), v.minLength(1)),
  token_type: v.pipe(v.string(), v.check((t) => t.toLowerCase() === "bearer", "not bearer")),
  expires_in: v.pipe(v.number(), v.integer(), v.minValue(1)),
  user_id: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  refresh_token: v.pipe(v.string(), v.minLength(1)),
  public_key: v.optional(v.string()),
  live_mode: v.optional(v.boolean()),
  scope: v.optional(v.string()),
});

/** The authorization URL the seller's browser is sent to. */
export function authorizationUrl(
  app: MpApp,
  params: { state: string; codeChallenge?: string },
): string {
  const url = new URL("/authorization", app.authUrl);
  url.searchParams.set("client_id", app.clientId);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("platform_id", "mp");
  url.searchParams.set("state", params.state);
  url.searchParams.set("redirect_uri", app.redirectUri!);
  if (params.codeChallenge) {
    url.searchParams.set("code_challenge", params.codeChallenge);
    url.searchParams.set("code_challenge_method", "S256");
  }
  return url.href;
}

/** A `Retry-After` header (seconds or an HTTP date) in milliseconds from now; undefined if absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

let unpooled: Deno.HttpClient | null | undefined;

/**
 * The HTTP client for single-use token calls: one fresh connection per request. Deno's fetch
 * resends a request once, on a new connection, when a kept-alive pooled connection closes
 * unanswered (tests/sandbox_test.ts shows it) — for a refresh that is the spent token presented
 * again, which MercadoPago may answer by revoking the grant (invariant 3). Null where the runtime
 * has no `Deno.createHttpClient` (the edge runtime has it since 2025).
 */
function tokenClient(): Deno.HttpClient | null {
  if (unpooled === undefined) {
    unpooled = typeof Deno.createHttpClient === "function"
      ? Deno.createHttpClient({ poolMaxIdlePerHost: 0 })
      : null;
  }
  return unpooled;
}

/**
 * A request to MercadoPago bounded by `MP_HTTP_TIMEOUT_MS`; network failures become MpError.
 * `singleUse`: the body carries a code or refresh token, sent on a connection of its own.
 */
async function mpFetch(
  app: MpApp,
  path: string,
  init: RequestInit,
  singleUse = false,
): Promise<Response> {
  const client = singleUse ? tokenClient() : null;
  try {
    return await fetch(new URL(path, app.apiUrl), {
      ...init,
      signal: AbortSignal.timeout(app.timeoutMs),
      ...(client ? { client } : {}),
    });
  } catch (err) {
    const name = (err as Error).name;
    if (name === "TimeoutError" || name === "AbortError") {
      throw new MpError("timeout", `MercadoPago did not answer in ${app.timeoutMs} ms`);
    }
    if (neverSent(err)) throw new MpError("not_sent", "MercadoPago could not be reached");
    throw new MpError("lost", "The connection to MercadoPago was lost after sending");
  }
}

/**
 * Whether a failed fetch provably never wrote the request: the connection itself failed (TCP
 * refused, DNS, TLS — Deno reports these as `client error (Connect)`), or the runtime refused
 * the address. Anything else may have reached MercadoPago.
 */
function neverSent(err: unknown): boolean {
  const text = `${(err as Error)?.message ?? ""} ${String((err as Error)?.cause ?? "")}`;
  return /client error \(Connect\)|Requests to port \d+ are blocked/.test(text);
}

async function tokenCall(app: MpApp, body: Record<string, string>): Promise<MpTokens> {
  const res = await mpFetch(app, "/oauth/token", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({
      client_id: app.clientId,
      client_secret: app.clientSecret,
      ...body,
    }),
  }, true);
  const payload = await res.json().catch(() => undefined) as Record<string, unknown> | undefined;
  if (res.ok) {
    const parsed = v.safeParse(TokenResponse, payload);
    if (!parsed.success) {
      const field = v.getDotPath(parsed.issues[0]) ?? "body";
      throw new MpError(
        "bad_response",
        `MercadoPago token response invalid at ${field}`,
        res.status,
      );
    }
    return parsed.output;
  }
  const code = typeof payload?.error === "string" ? payload.error : "";
  if (res.status === 429) {
    throw new MpError(
      "rate_limited",
      "MercadoPago rate limited the call",
      429,
      retryAfterMs(res.headers.get("retry-after")),
    );
  }
  if (code === "invalid_grant") {
    throw new MpError("invalid_grant", "MercadoPago answered invalid_grant", res.status);
  }
  if (res.status >= 500) {
    throw new MpError("server_error", `MercadoPago answered ${res.status}`, res.status);
  }
  throw new MpError("rejected", `MercadoPago answered ${res.status} ${code}`.trim(), res.status);
}

/** Exchanges an authorization code (with its PKCE verifier when one was sent); the seller is required. */
export async function exchangeCode(
  app: MpApp,
  params: { code: string; codeVerifier?: string },
): Promise<MpTokens & { user_id: number }> {
  const tokens = await tokenCall(app, {
    grant_type: "authorization_code",
    code: params.code,
    redirect_uri: app.redirectUri!,
    ...(params.codeVerifier ? { code_verifier: params.codeVerifier } : {}),
  });
  if (tokens.user_id === undefined) {
    throw new MpError("bad_response", "MercadoPago token response invalid at user_id", 200);
  }
  return { ...tokens, user_id: tokens.user_id };
}

/** Uses a (single-use) refresh token of `app`'s; MercadoPago answers with a new pair. */
export function refreshTokens(app: MpApp, refreshToken: string): Promise<MpTokens> {
  return tokenCall(app, { grant_type: "refresh_token", refresh_token: refreshToken });
}

/** What `/users/me` says of a working access token: the seller and the site they sell in. */
interface MpSeller {
  status: "valid";
  userId: number | null;
  /** The seller's site (`site_id`), null when MercadoPago did not say. */
  siteId: string | null;
}

/**
 * Asks MercadoPago whether an access token `app` issued still works (`GET /users/me`): `valid`
 * with the seller's id and site, or `invalid` on a 401 (unknown, expired or deauthorized
 * token). Anything else (timeout, 5xx, 429, another status) throws MpError: nothing can be
 * concluded from it.
 */
export async function checkAccessToken(
  app: MpApp,
  accessToken: string,
): Promise<MpSeller | { status: "invalid" }> {
  const res = await mpFetch(app, "/users/me", {
    headers: { authorization: `Bearer ${accessToken}`, accept: "application/json" },
  });
  const payload = await res.json().catch(() => undefined) as Record<string, unknown> | undefined;
  if (res.status === 401) return { status: "invalid" };
  if (res.ok) {
    return {
      status: "valid",
      userId: typeof payload?.id === "number" ? payload.id : null,
      siteId: typeof payload?.site_id === "string" ? payload.site_id.slice(0, 8) : null,
    };
  }
  if (res.status === 429) {
    throw new MpError(
      "rate_limited",
      "MercadoPago rate limited the call",
      429,
      retryAfterMs(res.headers.get("retry-after")),
    );
  }
  if (res.status >= 500) {
    throw new MpError("server_error", `MercadoPago answered ${res.status}`, res.status);
  }
  throw new MpError("rejected", `MercadoPago answered ${res.status} to /users/me`, res.status);
}
