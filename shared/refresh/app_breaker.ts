/**
 * The circuit breaker of each application across runs (docs/contract.md, "Applications and
 * sites"; Admin migration …_mp_app_breakers.sql): a run whose breaker opens persists it, so the
 * next runs do not call a site known down; after the backoff exactly one run gets the half-open
 * trial (one call at a time for that site): a usable answer closes it, an unknown outcome opens it
 * again for twice as long. Pure decisions, unit-tested with literal values
 * (tests/app_breaker_unit_test.ts).
 */

/** The backoff of a breaker's first open. */
const FIRST_BACKOFF_MS = 10 * 60_000;
/** The longest backoff, however many opens in a row. */
const MAX_BACKOFF_MS = 2 * 3_600_000;

/**
 * How long the breaker stays open after its `n`-th consecutive open (1 for the first): 10
 * minutes, doubling with each, at most 2 hours. Pure.
 */
export function breakerBackoffMs(n: number): number {
  return Math.min(FIRST_BACKOFF_MS * 2 ** (Math.max(n, 1) - 1), MAX_BACKOFF_MS);
}

/**
 * The backoffs of the 1st, 2nd, … consecutive opens up to the first at the cap (the database
 * takes the last one for any later open): `[10 min, 20, 40, 80, 120]`. Pure.
 */
export function breakerBackoffSchedule(): number[] {
  const schedule = [breakerBackoffMs(1)];
  while (schedule[schedule.length - 1] < MAX_BACKOFF_MS) {
    schedule.push(breakerBackoffMs(schedule.length + 1));
  }
  return schedule;
}

/**
 * What a run does with an application given its persisted breaker as the run starts (`openUntil`
 * null: closed; the database's clock `now`): `call` (closed), `open` (no call to it this run), or
 * `trial` (the backoff is over: the run may claim the one half-open trial). Pure.
 */
export function breakerStance(
  openUntil: Date | null,
  now: Date,
): "call" | "open" | "trial" {
  if (openUntil === null) return "call";
  return openUntil.getTime() > now.getTime() ? "open" : "trial";
}
