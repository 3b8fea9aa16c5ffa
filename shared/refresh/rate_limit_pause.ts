/**
 * The isolate-wide pause after MercadoPago answers 429, per application: no refresh in this
 * isolate calls that application's MercadoPago again before the `Retry-After` it gave (1 s when
 * it gave none). Another site's application is not paused by it.
 */

/** The wait assumed when a 429 carries no readable `Retry-After`. */
const DEFAULT_RETRY_AFTER_MS = 1000;

/**
 * When the next MercadoPago call may start, given the current pause and a 429 seen at `now`
 * asking for `retryAfterMs`: the later of the two. Pure.
 */
export function nextCallStart(pausedUntil: number, now: number, retryAfterMs?: number): number {
  return Math.max(pausedUntil, now + (retryAfterMs ?? DEFAULT_RETRY_AFTER_MS));
}

/** Not before this time (epoch ms) does the isolate call each application (by site) again. */
const pausedUntil = new Map<string, number>();

/** The isolate's current pause end (epoch ms; 0 or past: no pause) for the application of `site`. */
export function mpPausedUntil(site = ""): number {
  return pausedUntil.get(site) ?? 0;
}

/**
 * Records a 429 from the application of `site` seen at `now`: later calls to it in this
 * isolate wait for its `Retry-After`.
 */
export function pauseAfterRateLimit(now: number, retryAfterMs?: number, site = ""): void {
  pausedUntil.set(site, nextCallStart(mpPausedUntil(site), now, retryAfterMs));
}
