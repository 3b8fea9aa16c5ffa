/**
 * `nv_accounts` as operators see it: `deno task status`'s page of accounts and mp-health's
 * totals per connection state (kept by triggers, constant time).
 */
import { NO_ID, type Sql } from "../platform/db.ts";

/** One account's line in `deno task status`, as read from the master. */
export interface AccountStatusRow {
  id: string;
  backend_client_id: string;
  connected: boolean;
  mp_token_version: number;
  expires_at: Date | null;
  last_refresh_at: Date | null;
  failures: number;
  last_error: string | null;
  needs_reauth: boolean;
  mp_connected: boolean;
  state: ConnectionState;
  reason: string | null;
  deadline: Date | null;
  mp_user_id: number | null;
}

/** A page (by id) of the connected, linked or re-authorization-needing accounts with their health. */
export async function readStatusPage(
  sql: Sql,
  after: string | null,
  limit: number,
): Promise<AccountStatusRow[]> {
  return await sql<AccountStatusRow[]>`
        select id, backend_client_id, coalesce(mp_connected, false) as mp_connected,
               coalesce(mp_connected, false) and mp_access_token_encrypted is not null
                 as connected,
               mp_token_version, mp_token_expires_at as expires_at,
               mp_last_refreshed_at as last_refresh_at, mp_refresh_failures as failures,
               mp_refresh_last_error as last_error, mp_needs_reauth as needs_reauth,
               mp_state as state, mp_state_reason as reason, mp_user_id,
               case when mp_state in ('at_risk', 'reauth_required')
                         and mp_access_token_encrypted is not null
                    then mp_token_expires_at end as deadline
          from nv_accounts
         where (coalesce(mp_connected, false) or backend_client_id is not null or mp_needs_reauth)
           and id > ${after ?? NO_ID}::uuid
         order by id limit ${limit}`;
}

/** The connection states (docs/contract.md, "Connection states"), derived in the Admin DB. */
export const CONNECTION_STATES = [
  "connected",
  "at_risk",
  "reauth_required",
  "revoked",
  "not_connected",
] as const;

/** One account's connection state. */
export type ConnectionState = (typeof CONNECTION_STATES)[number];

/**
 * The connection totals `mp-health` reports: connected and needing re-authorization from the
 * counters the triggers keep (`mp_account_totals`), accounts per connection state
 * (`mp_state_totals`), expiring within 7 days over its index.
 */
export async function readConnectionTotals(
  sql: Sql,
): Promise<
  {
    connected: number;
    expiring_7d: number;
    needs_reauth: number;
    states: Record<ConnectionState, number>;
  }
> {
  const [row] = await sql<
    { connected: number; expiring_7d: number; needs_reauth: number; states: string }[]
  >`
    select coalesce((select connected from mp_account_totals where id), 0)::int as connected,
           coalesce((select needs_reauth from mp_account_totals where id), 0)::int as needs_reauth,
           (select count(*) from nv_accounts
             where mp_connected and mp_token_expires_at < now() + interval '7 days')::int
             as expiring_7d,
           (select coalesce(json_object_agg(state, accounts), '{}')::text
              from mp_state_totals) as states`;
  const counted = JSON.parse(row.states) as Record<string, number>;
  const states = Object.fromEntries(
    CONNECTION_STATES.map((s) => [s, Number(counted[s] ?? 0)]),
  ) as Record<ConnectionState, number>;
  return {
    connected: row.connected,
    expiring_7d: row.expiring_7d,
    needs_reauth: row.needs_reauth,
    states,
  };
}
