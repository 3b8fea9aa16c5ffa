/**
 * What the accounts page reads: the Admin DB's accounts (the master) and event outbox, and the
 * Backend DB's `clients` rows (the cache) of the linked accounts. Read-only.
 */
import { pgArray, type Sql } from "../../shared/platform/db.ts";
import type { AccountFacts } from "./view.ts";

/** An Admin DB account as the page shows it. */
export interface AccountView extends AccountFacts {
  mp_token_version: number;
}

/** A Backend `clients` row as the page shows it: the cache of an account's credentials. */
export interface CacheView {
  id: string;
  mp_token_version: number | null;
  has_token: boolean;
}

/** An outbox event not delivered (yet): pending or failed, with its attempts and last error. */
export interface DeliveryView {
  id: string;
  account_id: string;
  type: string;
  status: "pending" | "failed";
  attempts: number;
  created_at: Date;
  /** Seconds until the next attempt by the database's clock (≤ 0: due now); pending only. */
  next_in_seconds: number | null;
  failed_at: Date | null;
  last_error: string | null;
  /** Pending and leased by a delivery run right now. */
  delivering: boolean;
  /** Pending behind an earlier pending event of its account (delivery is ordered per account). */
  waiting: boolean;
}

/** The outbox's undelivered totals (every row, not only the ones listed). */
export interface DeliveryTotals {
  pending: number;
  failed: number;
}

/** How many rows each list shows at most. */
const LIST_LIMIT = 50;

/** The accounts, most recently changed first (at most 200). */
export async function readAccounts(admin: Sql): Promise<AccountView[]> {
  return await admin<AccountView[]>`
    select id, backend_client_id, mp_user_id, mp_token_version, mp_state, mp_state_reason,
           mp_site_id, mp_access_token_encrypted is not null as has_token,
           extract(epoch from mp_token_expires_at - now())::float8 as expires_in_seconds
      from nv_accounts order by mp_updated_at desc nulls last, id limit 200`;
}

/** One account, or undefined when it does not exist. */
export async function readAccount(admin: Sql, id: string): Promise<AccountView | undefined> {
  const [row] = await admin<AccountView[]>`
    select id, backend_client_id, mp_user_id, mp_token_version, mp_state, mp_state_reason,
           mp_site_id, mp_access_token_encrypted is not null as has_token,
           extract(epoch from mp_token_expires_at - now())::float8 as expires_in_seconds
      from nv_accounts where id = ${id}`;
  return row;
}

/** The Backend cache rows of `clientIds`, by client id. */
export async function readCaches(
  backend: Sql | undefined,
  clientIds: string[],
): Promise<Map<string, CacheView>> {
  const caches = new Map<string, CacheView>();
  if (!backend || clientIds.length === 0) return caches;
  for (
    const c of await backend<CacheView[]>`
      select id, mp_token_version, mp_access_token is not null as has_token
        from clients where id = any (${pgArray(clientIds)}::uuid[])`
  ) caches.set(c.id, c);
  return caches;
}

/**
 * The undelivered events: failed ones (most recent first), then pending ones (next attempt
 * first), at most LIST_LIMIT of each, and the totals of both.
 */
export async function readDeliveries(
  admin: Sql,
): Promise<{ rows: DeliveryView[]; totals: DeliveryTotals }> {
  const [rows, [totals]] = await Promise.all([
    admin<DeliveryView[]>`
      (select id, account_id, type, status, attempts, created_at, null::float8 as next_in_seconds,
              failed_at, last_error, false as delivering, false as waiting
         from mp_event_outbox where status = 'failed'
        order by failed_at desc nulls last, pos desc limit ${LIST_LIMIT})
      union all
      (select o.id, o.account_id, o.type, o.status, o.attempts, o.created_at,
              extract(epoch from o.next_attempt_at - now())::float8, o.failed_at, o.last_error,
              coalesce(o.lease_until > now(), false),
              exists (select 1 from mp_event_outbox e
                       where e.account_id = o.account_id and e.status = 'pending'
                         and (e.seq, e.pos) < (o.seq, o.pos))
         from mp_event_outbox o where o.status = 'pending'
        order by o.next_attempt_at, o.pos limit ${LIST_LIMIT})`,
    admin<DeliveryTotals[]>`
      select pending::int as pending, failed::int as failed from mp_event_outbox_totals()`,
  ]);
  return { rows, totals };
}
