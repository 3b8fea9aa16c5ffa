/**
 * The isolate-wide pause after MercadoPago answers 429: no refresh in this isolate calls
 * MercadoPago again before the `Retry-After` it gave (1 s when it gave none).
 */

/** The wait assumed when a 429 carries no readable `Retry-After`. */
export const DEFAULT_RETRY_AFTER_MS = 1000;

/**
 * When the next MercadoPago call may start, given the current pause and a 429 seen at `now`
 * asking for `retryAfterMs`: the later of the two. Pure.
 */
export function nextCallStart(pausedUntil: number, now: number, retryAfterMs?: number): number {
  return Math.max(pausedUntil, now + (retryAfterMs ?? DEFAULT_RETRY_AFTER_MS));
}

/** Not before this time (epoch ms) does the isolate call MercadoPago again. */
let pausedUntil = 0;

/** The isolate's current pause end (epoch ms; 0 or past: no pause). */
export function mpPausedUntil(): number {
  return pausedUntil;
}

/** Records a 429 seen at `now`: later calls in this isolate wait for its `Retry-After`. */
export function pauseAfterRateLimit(now: number, retryAfterMs?: number): void {
  pausedUntil = nextCallStart(pausedUntil, now, retryAfterMs);
}
