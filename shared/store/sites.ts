/**
 * `nv_accounts.mp_site_id` beyond the flows that write it with a connection: the adoption of the
 * accounts connected before sites were stored (given the configuration's default site, whose
 * application connected them; Admin migration …_mp_sites.sql) and the per-site counters the
 * triggers keep (`mp_site_state_totals`).
 */
import type { Sql } from "../platform/db.ts";

/** Accounts one adoption statement gives a site at most. */
const ADOPT_BATCH = 1000;

/**
 * Gives up to `limit` once-connected accounts without a site the default site `site`
 * (`mp_adopt_default_site`); how many it gave one.
 */
export async function adoptDefaultSite(sql: Sql, site: string, limit = ADOPT_BATCH) {
  const [row] = await sql<{ n: number }[]>`
    select mp_adopt_default_site(${site}, ${limit}::int) as n`;
  return row.n;
}

/**
 * Accounts per site and connection state from the counters the statement triggers keep
 * (constant time at any size); site `""` holds the accounts without a site.
 */
export async function readSiteStateTotals(
  sql: Sql,
): Promise<{ site_id: string; state: string; accounts: number }[]> {
  return await sql<{ site_id: string; state: string; accounts: number }[]>`
    select site_id, state, accounts::int as accounts from mp_site_state_totals
     where accounts <> 0 order by site_id, state`;
}

/**
 * Accounts in state `connected` or `at_risk` whose served token expires within 7 days (or has
 * expired), per site (`""`: without a site): a range over the expiring accounts' index.
 */
export async function readSiteExpiring(
  sql: Sql,
): Promise<{ site_id: string; expiring_7d: number }[]> {
  return await sql<{ site_id: string; expiring_7d: number }[]>`
    select coalesce(mp_site_id, '') as site_id, count(*)::int as expiring_7d from nv_accounts
     where mp_state in ('connected', 'at_risk')
       and mp_token_expires_at < now() + interval '7 days'
     group by 1 order by 1`;
}
