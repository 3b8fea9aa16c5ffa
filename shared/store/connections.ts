/**
 * `nv_accounts` for the connection's flows: connect (`mp_save_connection`), link to a Backend
 * client (`mp_link_account`) and revoke (`mp_revoke_account`), each one SQL function
 * (docs/atomic-state.md).
 */
import { type Sql } from "../platform/db.ts";
import type { AccountRow } from "./accounts.ts";

/** Result of linking an account to a Backend client. */
type LinkResult =
  | "linked"
  | "account_not_found"
  | "account_linked_elsewhere"
  | "client_fed_by_another_account";

/** Links `accountId` to `clientId` unless it already feeds another client (`mp_link_account`). */
export async function linkAccount(
  sql: Sql,
  accountId: string,
  clientId: string,
): Promise<LinkResult> {
  const [row] = await sql<{ result: LinkResult }[]>`
    select mp_link_account(${accountId}::uuid, ${clientId}::uuid) as result`;
  return row.result;
}

/** An account's state after a revoke. */
interface Revoked {
  backend_client_id: string | null;
  mp_token_version: number;
  changed: boolean;
}

/**
 * Clears an account's credentials and bumps its version (`mp_revoke_account`, one statement);
 * an account with nothing left to clear keeps its version (revoking twice is not a change).
 */
export async function revokeAccount(
  sql: Sql,
  accountId: string,
  reason = "admin",
): Promise<Revoked | undefined> {
  const [row] = await sql<Revoked[]>`
    select * from mp_revoke_account(${accountId}::uuid, ${reason})`;
  return row;
}

/** A token set to store for an account, its secrets already encrypted. */
interface ConnectionWrite {
  mpUserId: number;
  accessTokenEncrypted: string;
  refreshTokenEncrypted: string;
  publicKey: string;
  expiresIn: number;
  liveMode: boolean | null;
  scope: string | null;
  /** The connect was started to replace the account's seller. */
  replaceSeller: boolean;
  /** The site of the application the connect went through. */
  siteId: string;
}

/** What storing a connection did; `account` is the stored row when connected. */
type StoredConnection =
  | { result: "connected"; account: AccountRow }
  | { result: "mp_account_in_use"; otherAccountId: string }
  | { result: "seller_mismatch" }
  | { result: "account_not_found" };

/**
 * Stores a new connection through `mp_save_connection()` (one transaction: version +1,
 * connected, its site, every re-authorization/failure/lease field cleared), unless another
 * connected account already holds the same MercadoPago seller, or the seller is not the
 * account's own and the connect was not started to replace it.
 */
export async function storeConnection(
  sql: Sql,
  accountId: string,
  write: ConnectionWrite,
): Promise<StoredConnection> {
  const [row] = await sql<(AccountRow & { result: string; other_account_id: string | null })[]>`
    select result, id, backend_client_id, mp_connected, mp_access_token_encrypted,
           mp_public_key, mp_token_version, other_account_id, mp_site_id
      from mp_save_connection(${accountId}::uuid, ${write.mpUserId}::bigint,
        ${write.accessTokenEncrypted}::text, ${write.refreshTokenEncrypted}::text,
        ${write.publicKey}::text, ${write.expiresIn}::integer, ${write.liveMode}::boolean,
        ${write.scope}::text, ${write.replaceSeller}::boolean, ${write.siteId}::text)`;
  if (row.result === "seller_mismatch") return { result: "seller_mismatch" };
  if (row.result === "mp_account_in_use") {
    return { result: "mp_account_in_use", otherAccountId: row.other_account_id! };
  }
  if (row.result !== "connected") return { result: "account_not_found" };
  const { result: _r, other_account_id: _o, ...account } = row;
  return { result: "connected", account };
}
