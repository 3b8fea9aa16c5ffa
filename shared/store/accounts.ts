/**
 * The Admin DB's `nv_accounts`, read: the encrypted master copy of each seller's MercadoPago
 * credentials as the sync, checkout and the webhook read it. The writes live by flow beside it:
 * `connections.ts` (connect, link, revoke), `refresh_leases.ts` (the refresh's atomic steps),
 * `account_scans.ts` (backfill and reconcile pages, the version bump), `account_status.ts`
 * (status and totals). Every change of the credentials is one statement that bumps the version
 * (docs/atomic-state.md).
 */
import { pgArray, type Sql } from "../platform/db.ts";

/** What the sync and checkout need of an account. */
export interface AccountRow {
  id: string;
  backend_client_id: string | null;
  mp_connected: boolean;
  mp_access_token_encrypted: string | null;
  mp_public_key: string | null;
  mp_token_version: number;
  /** The site of the application the account is connected through (null: the default site). */
  mp_site_id: string | null;
}

/** The select list of an {@link AccountRow}, as one SQL fragment (no table alias). */
export function accountColumns(sql: Sql) {
  return sql`id, backend_client_id, coalesce(mp_connected, false) as mp_connected,
           mp_access_token_encrypted, mp_public_key, mp_token_version, mp_site_id`;
}

/** Reads one account by id. */
export async function readAccount(sql: Sql, accountId: string): Promise<AccountRow | undefined> {
  const [row] = await sql<AccountRow[]>`
    select ${accountColumns(sql)}
      from nv_accounts where id = ${accountId}`;
  return row;
}

/** Reads the account that feeds Backend client `clientId`. */
export async function readAccountByClient(
  sql: Sql,
  clientId: string,
): Promise<AccountRow | undefined> {
  const [row] = await sql<AccountRow[]>`
    select ${accountColumns(sql)}
      from nv_accounts where backend_client_id = ${clientId}`;
  return row;
}

/**
 * The connected accounts whose MercadoPago seller is `mpUserId` connected through the
 * application of `site` (with `isDefault`, also those without a site: the default site's), with
 * their stored token.
 */
export async function connectedAccountsOfSeller(
  sql: Sql,
  mpUserId: number,
  app: { site: string; isDefault: boolean },
): Promise<{ id: string; mp_access_token_encrypted: string | null }[]> {
  return await sql<{ id: string; mp_access_token_encrypted: string | null }[]>`
    select id, mp_access_token_encrypted from nv_accounts
     where mp_user_id = ${mpUserId}::bigint and coalesce(mp_connected, false)
       and (mp_site_id = ${app.site} or (${app.isDefault}::boolean and mp_site_id is null))
     order by id`;
}

// ---- Pages and batches (backfill, reconciliation) ----

/** Reads the accounts `ids` in one query (missing ones are left out). */
export async function readAccounts(sql: Sql, ids: string[]): Promise<AccountRow[]> {
  if (ids.length === 0) return [];
  return await sql<AccountRow[]>`
    select ${accountColumns(sql)}
      from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
}

/** The site of account `accountId` (null: none stored), undefined when there is no such account. */
export async function readAccountSite(
  sql: Sql,
  accountId: string,
): Promise<string | null | undefined> {
  const [row] = await sql<{ mp_site_id: string | null }[]>`
    select mp_site_id from nv_accounts where id = ${accountId}`;
  return row?.mp_site_id;
}

/** The account's MercadoPago seller as stored (null when none, undefined when no such account). */
export async function readSellerId(
  sql: Sql,
  accountId: string,
): Promise<number | null | undefined> {
  const [row] = await sql<{ mp_user_id: number | null }[]>`
      select mp_user_id from nv_accounts where id = ${accountId}`;
  return row?.mp_user_id;
}

// ---- Reconciliation at scale: pages as one JSON text, compared where the other side lives ----
