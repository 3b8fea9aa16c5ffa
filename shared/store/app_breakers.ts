/**
 * `mp_app_breakers`: each MercadoPago application's circuit breaker across runs (Admin migration
 * …_mp_app_breakers.sql), every change one SQL function (docs/atomic-state.md).
 */
import { pgArray, type Sql } from "../platform/db.ts";

/** A breaker that is not closed: open until `open_until` (past: half open), `opens` in a row. */
interface AppBreakerRow {
  site_id: string;
  open_until: Date;
  opens: number;
  db_now: Date;
}

/** The breakers not closed (open, or half open), with the database's clock. */
export async function readOpenBreakers(sql: Sql): Promise<AppBreakerRow[]> {
  return await sql<AppBreakerRow[]>`
    select site_id, open_until, opens, now() as db_now from mp_app_breakers
     where open_until is not null order by site_id`;
}

/** `backoffsMs` as the functions take them: an array of intervals. */
function intervals(backoffsMs: number[]): string {
  return pgArray(backoffsMs.map((ms) => `${ms / 1000} seconds`));
}

/**
 * Persists that a run's breaker for `site` opened (`mp_open_app_breaker`); the new end of the
 * backoff, or null when it was open already.
 */
export async function openBreaker(
  sql: Sql,
  site: string,
  backoffsMs: number[],
): Promise<Date | null> {
  const [row] = await sql<{ open_until: Date | null }[]>`
    select mp_open_app_breaker(${site}, ${intervals(backoffsMs)}::interval[]) as open_until`;
  return row.open_until;
}

/**
 * Claims the half-open trial of `site` for run `owner` by compare-and-set
 * (`mp_claim_app_breaker_trial`); whether this run won it.
 */
export async function claimBreakerTrial(
  sql: Sql,
  site: string,
  owner: string,
  holdMs: number,
): Promise<boolean> {
  const [row] = await sql<{ won: boolean }[]>`
    select mp_claim_app_breaker_trial(${site}, ${owner}::uuid,
      make_interval(secs => ${holdMs / 1000}::float8)) as won`;
  return row.won;
}

/**
 * Records the answer of the trial `owner` holds (`mp_end_app_breaker_trial`): `ok` closes the
 * breaker, else it opens again for the next backoff; the new end of the backoff (null: closed).
 */
export async function endBreakerTrial(
  sql: Sql,
  site: string,
  owner: string,
  ok: boolean,
  backoffsMs: number[],
): Promise<Date | null> {
  const [row] = await sql<{ open_until: Date | null }[]>`
    select mp_end_app_breaker_trial(${site}, ${owner}::uuid, ${ok},
      ${intervals(backoffsMs)}::interval[]) as open_until`;
  return row.open_until;
}
