/**
 * What a refresh answer means for the refresh token that was sent, decided once (invariant 3;
 * docs/contract.md, "Connection states"). Pure functions, unit-tested over every outcome
 * (tests/refresh_outcome_test.ts); the model is Nango's `shouldRefreshCredentials`.
 */
import type { MpFailure } from "../mercadopago/api.ts";

/**
 * - `retry`: MercadoPago provably did not process the request (never sent, 429, a 4xx other
 *   than invalid_grant): the refresh token is unspent; back off and try again.
 * - `unknown`: it may have processed it (timeout or connection lost after sending, any 5xx, a
 *   2xx that cannot be read): the account is at risk and that refresh token is never sent
 *   again (but the one last-resort attempt).
 * - `reauth`: MercadoPago refused the grant (invalid_grant): the seller must connect again.
 */
type RefreshVerdict = "retry" | "unknown" | "reauth";

/** The verdict on a failed refresh call. */
export function classifyRefreshFailure(kind: MpFailure): RefreshVerdict {
  switch (kind) {
    case "not_sent":
    case "rate_limited":
    case "rejected":
      return "retry";
    case "invalid_grant":
      return "reauth";
    case "timeout":
    case "lost":
    case "server_error":
    case "bad_response":
      return "unknown";
  }
}

/** How long before the served token expires the at-risk account gets its last-resort attempt. */
const LAST_RESORT_WINDOW_MS = 7 * 86_400_000;

/**
 * Whether the refresh token of an account may be sent now, given how many requests with it
 * may already have reached MercadoPago (`sends`) and when the served access token expires:
 * unsent → yes; sent once → only as the single last resort, within 7 days of expiry; more → no.
 * `force` changes nothing here. (The database enforces the same rule atomically in
 * `mp_begin_refresh_call`; this is the decision spelled out for tests and logs.)
 */
export function maySendRefreshToken(
  sends: number,
  expiresAt: Date | null,
  now: number,
): "first" | "last_resort" | "never" {
  if (sends <= 0) return "first";
  if (sends === 1 && expiresAt !== null && expiresAt.getTime() <= now + LAST_RESORT_WINDOW_MS) {
    return "last_resort";
  }
  return "never";
}

/** Unknown outcomes in a row after which a run stops calling MercadoPago (circuit breaker). */
const BREAKER_LIMIT = 3;

/**
 * The circuit breaker's count of unknown outcomes in a row after one more call ended with
 * `outcome` (`tokens` for a usable answer). Open when it reaches {@link BREAKER_LIMIT}.
 */
export function unknownInARow(previous: number, outcome: RefreshVerdict | "tokens"): number {
  return outcome === "unknown" ? previous + 1 : 0;
}

/** Whether the breaker stops the run's further MercadoPago calls. */
export function breakerOpen(unknownCount: number): boolean {
  return unknownCount >= BREAKER_LIMIT;
}

/** How long an account spared by its site's open circuit breaker waits: one refresh interval. */
const SITE_OUTAGE_RETRY_MS = 10 * 60_000;

/**
 * What becomes of an account a run did not call for because its site's MercadoPago is failing
 * (`reason` `circuit_open`: the application's breaker opened; `rate_limited`: its 429 pause
 * outlasts the run), given how many applications are configured: with one it is released for the
 * next run (undefined); with several it waits — released, it would be claimed first again and
 * hold other sites' due accounts back — after a breaker one refresh interval, or until the end of
 * the breaker's persisted backoff (`breakerOpenUntil`, whole seconds) when that is later; the rest
 * of the pause (at least 1 s) after a 429. Pure.
 */
export function deferralOf(
  reason: string,
  applications: number,
  pausedUntil: number,
  now: number,
  breakerOpenUntil = 0,
): { error: string; retryAfterMs: number } | undefined {
  if (applications < 2) return undefined;
  if (reason === "circuit_open") {
    const backoffLeft = Math.ceil((breakerOpenUntil - now) / 1000) * 1000;
    return { error: reason, retryAfterMs: Math.max(SITE_OUTAGE_RETRY_MS, backoffLeft) };
  }
  if (reason === "rate_limited") {
    return {
      error: reason,
      retryAfterMs: Math.max(Math.ceil((pausedUntil - now) / 1000), 1) * 1000,
    };
  }
  return undefined;
}
