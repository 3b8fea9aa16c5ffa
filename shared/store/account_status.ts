/**
 * `nv_accounts` as operators see it: `deno task status`'s page of accounts and the connection
 * figures mp-health and `deno task status` report (per state, kept by triggers: constant time).
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
const CONNECTION_STATES = [
  "connected",
  "at_risk",
  "reauth_required",
  "revoked",
  "not_connected",
] as const;

/** One account's connection state. */
export type ConnectionState = (typeof CONNECTION_STATES)[number];

/**
 * The connection figures mp-health and `deno task status` report for a set of accounts (all of
 * them today; the same shape will hold each site's figures beside them). Every count is defined
 * by the connection state alone (docs/contract.md, "mp-reconcile / mp-health").
 */
export interface ConnectionTotals {
  /** Accounts in all: the sum of `states`. */
  accounts: number;
  /** Accounts in state `connected`. */
  connected: number;
  /** Accounts in state `connected` or `at_risk` whose served token expires within 7 days (or has expired). */
  expiring_7d: number;
  /** Accounts in state `reauth_required`. */
  needs_reauth: number;
  /** Accounts in state `at_risk`. */
  at_risk: number;
  /** Accounts per connection state. */
  states: Record<ConnectionState, number>;
}

/**
 * The figures from the accounts counted per state (`mp_state_totals`) and the expiring count:
 * `accounts` is the sum over every state counted, so a state outside the five would show as a
 * difference between it and the sum of `states`. Pure.
 */
export function connectionTotals(
  counted: Record<string, number>,
  expiring7d: number,
): ConnectionTotals {
  const states = Object.fromEntries(
    CONNECTION_STATES.map((s) => [s, Number(counted[s] ?? 0)]),
  ) as Record<ConnectionState, number>;
  return {
    accounts: Object.values(counted).reduce((a, n) => a + Number(n), 0),
    connected: states.connected,
    expiring_7d: expiring7d,
    needs_reauth: states.reauth_required,
    at_risk: states.at_risk,
    states,
  };
}

/**
 * Reads the connection figures of all accounts in constant time: accounts per state from the
 * counters the statement triggers keep (`mp_state_totals`), expiring within 7 days as a range
 * over the partial index of the `connected` and `at_risk` accounts' expiry.
 */
export async function readConnectionTotals(sql: Sql): Promise<ConnectionTotals> {
  const [row] = await sql<{ states: string; expiring_7d: number }[]>`
    select (select coalesce(json_object_agg(state, accounts), '{}')::text
              from mp_state_totals) as states,
           (select count(*) from nv_accounts
             where mp_state in ('connected', 'at_risk')
               and mp_token_expires_at < now() + interval '7 days')::int as expiring_7d`;
  return connectionTotals(JSON.parse(row.states), row.expiring_7d);
}
