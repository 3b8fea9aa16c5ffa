/**
 * The Admin DB's bookkeeping of access-token verification at MercadoPago (`GET /users/me`):
 * mp-probe's claims and verdicts, and checkout's report limit (one check a minute per
 * account). Each change is one SQL function of the Admin migration …_mp_connection_state.sql.
 */
import { pgArray, type Sql } from "../platform/db.ts";

/** A connected access token claimed for verification. */
export interface ProbeClaim {
  id: string;
  mp_token_version: number;
  mp_access_token_encrypted: string;
  backend_client_id: string | null;
  /** The site of the application that issued the token (null: the default site's). */
  mp_site_id: string | null;
  /** False when a connect changed the account since the claim (the token is not checked). */
  site_read: boolean;
}

/**
 * Claims up to `limit` connected tokens not verified within `intervalDays` (or the one account
 * `accountId`, now), least recently verified first, under a short probe lease.
 */
export async function claimProbe(
  sql: Sql,
  req: { limit: number; intervalDays: number; leaseMs: number; accountId?: string },
): Promise<ProbeClaim[]> {
  // The site read in the same statement, at the claimed version (as the refresh's claim).
  return await sql<ProbeClaim[]>`
    with c as (
      select * from mp_claim_probe(${req.limit}::int,
        make_interval(secs => ${req.intervalDays * 86_400}::float8),
        make_interval(secs => ${req.leaseMs / 1000}::float8), ${req.accountId ?? null}::uuid))
    select c.*, case when a.mp_token_version = c.mp_token_version then a.mp_site_id end
             as mp_site_id,
           coalesce(a.mp_token_version = c.mp_token_version, false) as site_read
      from c left join nv_accounts a on a.id = c.id`;
}

/**
 * Records the tokens MercadoPago accepted (each only while still at the version checked) and
 * releases the probe leases of `release`; how many were recorded.
 */
export async function recordVerified(
  sql: Sql,
  verified: { id: string; version: number }[],
  release: string[] = [],
): Promise<number> {
  if (verified.length === 0 && release.length === 0) return 0;
  const [row] = await sql<{ n: number }[]>`
    select mp_record_verified(${pgArray(verified.map((v) => v.id))}::uuid[],
      ${pgArray(verified.map((v) => String(v.version)))}::bigint[],
      ${pgArray(release)}::uuid[]) as n`;
  return row.n;
}

/**
 * Keeps the probe lease of `ids` for `waitMs` (`mp_defer_probes`): tokens whose site's
 * MercadoPago is failing are not claimed again before then; how many.
 */
export async function deferProbes(sql: Sql, ids: string[], waitMs: number): Promise<number> {
  if (ids.length === 0) return 0;
  const [row] = await sql<{ n: number }[]>`
    select mp_defer_probes(${pgArray(ids)}::uuid[],
      make_interval(secs => ${waitMs / 1000}::float8)) as n`;
  return row.n;
}

/**
 * What a checkout report of a rejected token of `version` may do: `check` (ask MercadoPago
 * now: no check of this account in the last minute), or the last verdict (`alive`, `dead`,
 * `pending` while another check runs), or `stale` when the version is no longer current.
 */
export async function claimTokenCheck(
  sql: Sql,
  accountId: string,
  version: number,
): Promise<"check" | "alive" | "dead" | "pending" | "stale" | null> {
  const [row] = await sql<{ verdict: "check" | "alive" | "dead" | "pending" | "stale" | null }[]>`
    select mp_claim_token_check(${accountId}::uuid, ${version}::bigint) as verdict`;
  return row.verdict;
}
