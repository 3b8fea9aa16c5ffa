/**
 * The Admin DB's `nv_accounts`: the encrypted master copy of each seller's MercadoPago
 * credentials. Every change of the credentials is one statement that bumps the version.
 */
import type { Sql } from "../platform/db.ts";

/** What the sync and checkout need of an account. */
export interface AccountRow {
  id: string;
  backend_client_id: string | null;
  mp_connected: boolean;
  mp_access_token_encrypted: string | null;
  mp_public_key: string | null;
  mp_token_version: number;
}

/** Reads one account by id. */
export async function readAccount(sql: Sql, accountId: string): Promise<AccountRow | undefined> {
  const [row] = await sql<AccountRow[]>`
    select id, backend_client_id, coalesce(mp_connected, false) as mp_connected,
           mp_access_token_encrypted, mp_public_key, mp_token_version
      from nv_accounts where id = ${accountId}`;
  return row;
}

/** Reads the account that feeds Backend client `clientId`. */
export async function readAccountByClient(
  sql: Sql,
  clientId: string,
): Promise<AccountRow | undefined> {
  const [row] = await sql<AccountRow[]>`
    select id, backend_client_id, coalesce(mp_connected, false) as mp_connected,
           mp_access_token_encrypted, mp_public_key, mp_token_version
      from nv_accounts where backend_client_id = ${clientId}`;
  return row;
}

/** Result of linking an account to a Backend client. */
export type LinkResult =
  | "linked"
  | "account_not_found"
  | "account_linked_elsewhere"
  | "client_fed_by_another_account";

/** Links `accountId` to `clientId` unless it already feeds another client (atomic). */
export async function linkAccount(
  sql: Sql,
  accountId: string,
  clientId: string,
): Promise<LinkResult> {
  try {
    const [row] = await sql<{ linked: boolean; found: boolean }[]>`
      with upd as (
        update nv_accounts set backend_client_id = ${clientId}, mp_updated_at = now()
         where id = ${accountId}
           and (backend_client_id is null or backend_client_id = ${clientId})
        returning 1)
      select exists (select 1 from upd) as linked,
             exists (select 1 from nv_accounts where id = ${accountId}) as found`;
    if (row.linked) return "linked";
    return row.found ? "account_linked_elsewhere" : "account_not_found";
  } catch (err) {
    if ((err as { code?: string }).code === "23505") return "client_fed_by_another_account";
    throw err;
  }
}

/** An account's state after a revoke. */
export interface Revoked {
  backend_client_id: string | null;
  mp_token_version: number;
  changed: boolean;
}

/**
 * Clears an account's credentials and bumps its version in one statement; an account with
 * nothing left to clear keeps its version (revoking twice is not a change).
 */
export async function revokeAccount(sql: Sql, accountId: string): Promise<Revoked | undefined> {
  const [row] = await sql<Revoked[]>`
    with upd as (
      update nv_accounts set
        mp_connected = false, mp_access_token_encrypted = null, mp_refresh_token = null,
        mp_public_key = null, mp_token_expires_at = null, mp_token_version = mp_token_version + 1,
        mp_needs_reauth = false, mp_refresh_failures = 0, mp_refresh_next_attempt_at = null,
        mp_refresh_last_error = null, mp_refresh_lease_owner = null,
        mp_refresh_lease_expires_at = null, mp_updated_at = now()
       where id = ${accountId}
         and (coalesce(mp_connected, false) or mp_access_token_encrypted is not null
              or mp_refresh_token is not null or mp_public_key is not null)
      returning backend_client_id, mp_token_version, true as changed)
    select * from upd
    union all
    select backend_client_id, mp_token_version, false from nv_accounts
     where id = ${accountId} and not exists (select 1 from upd)`;
  return row;
}

/** A token set to store for an account, its secrets already encrypted. */
export interface ConnectionWrite {
  mpUserId: number;
  accessTokenEncrypted: string;
  refreshTokenEncrypted: string;
  publicKey: string;
  expiresIn: number;
  liveMode: boolean | null;
  scope: string | null;
  /** The connect was started to replace the account's seller. */
  replaceSeller: boolean;
}

/** What storing a connection did; `account` is the stored row when connected. */
export type StoredConnection =
  | { result: "connected"; account: AccountRow }
  | { result: "mp_account_in_use"; otherAccountId: string }
  | { result: "seller_mismatch" }
  | { result: "account_not_found" };

/**
 * Stores a new connection through `mp_save_connection()` (one transaction: version +1,
 * connected, every re-authorization/failure/lease field cleared), unless another connected
 * account already holds the same MercadoPago seller, or the seller is not the account's own
 * and the connect was not started to replace it.
 */
export async function storeConnection(
  sql: Sql,
  accountId: string,
  write: ConnectionWrite,
): Promise<StoredConnection> {
  const [row] = await sql<(AccountRow & { result: string; other_account_id: string | null })[]>`
    select result, id, backend_client_id, mp_connected, mp_access_token_encrypted,
           mp_public_key, mp_token_version, other_account_id
      from mp_save_connection(${accountId}::uuid, ${write.mpUserId}::bigint,
        ${write.accessTokenEncrypted}::text, ${write.refreshTokenEncrypted}::text,
        ${write.publicKey}::text, ${write.expiresIn}::integer, ${write.liveMode}::boolean,
        ${write.scope}::text, ${write.replaceSeller}::boolean)`;
  if (row.result === "seller_mismatch") return { result: "seller_mismatch" };
  if (row.result === "mp_account_in_use") {
    return { result: "mp_account_in_use", otherAccountId: row.other_account_id! };
  }
  if (row.result !== "connected") return { result: "account_not_found" };
  const { result: _r, other_account_id: _o, ...account } = row;
  return { result: "connected", account };
}

/** The connected accounts whose MercadoPago seller is `mpUserId`, with their stored token. */
export async function connectedAccountsOfSeller(
  sql: Sql,
  mpUserId: number,
): Promise<{ id: string; mp_access_token_encrypted: string | null }[]> {
  return await sql<{ id: string; mp_access_token_encrypted: string | null }[]>`
    select id, mp_access_token_encrypted from nv_accounts
     where mp_user_id = ${mpUserId}::bigint and coalesce(mp_connected, false)
     order by id`;
}
