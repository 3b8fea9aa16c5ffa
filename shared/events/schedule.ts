/**
 * When a failed delivery is tried again (docs/contract.md, "mp-deliver-events"): about 5 s,
 * 5 min, 30 min, 2 h, 5 h, 10 h, then every 10 h, for 3 days from the event's creation (or from
 * its redelivery), then the event is `failed`. Pure.
 */

/** The delays after the 1st, 2nd, … failed attempt; the last one repeats. */
const RETRY_DELAYS_MS = [
  5_000,
  5 * 60_000,
  30 * 60_000,
  2 * 3_600_000,
  5 * 3_600_000,
  10 * 3_600_000,
] as const;

/** How long an event is retried before it is `failed`. */
const RETRY_WINDOW_MS = 3 * 86_400_000;

/** The delay after the `attempts`-th failed attempt (1-based). */
export function retryDelayMs(attempts: number): number {
  const i = Math.min(Math.max(attempts, 1), RETRY_DELAYS_MS.length) - 1;
  return RETRY_DELAYS_MS[i];
}

/**
 * The time of the next attempt after the `attempts`-th failed one at `now`, or null when it
 * would fall after the 3-day window that began at `retryFrom` (the event is then `failed`).
 */
export function nextAttemptAt(retryFrom: Date, attempts: number, now: Date): Date | null {
  const next = now.getTime() + retryDelayMs(attempts);
  return next > retryFrom.getTime() + RETRY_WINDOW_MS ? null : new Date(next);
}
