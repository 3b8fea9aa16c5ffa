/**
 * The Backend DB's `mp_refresh_escrow`: rotated token pairs (still encrypted as the Admin
 * master holds them) that MercadoPago handed out but the Admin DB would not take yet.
 */
import { pgArray, type Sql } from "../platform/db.ts";
import type { StoredPair } from "./refresh_leases.ts";

/** An escrowed pair and the Admin version it was refreshed from. */
export interface EscrowEntry extends StoredPair {
  accountId: string;
  baseVersion: number;
}

interface EscrowRow {
  account_id: string;
  base_version: number;
  access_token_encrypted: string;
  refresh_token_encrypted: string;
  expires_in: number;
  token_expires_at: Date;
  user_id: number | null;
  public_key: string | null;
  live_mode: boolean | null;
  scope: string | null;
}

/** The accounts that have a pair waiting (oldest first, at most `limit`). */
export async function listEscrowed(sql: Sql, limit: number): Promise<string[]> {
  const rows = await sql<{ account_id: string }[]>`
    select account_id from mp_refresh_escrow order by created_at limit ${limit}`;
  return rows.map((r) => r.account_id);
}

/** Which of `accountIds` have a pair waiting (ids only, no ciphertext read). */
export async function escrowedAmong(sql: Sql, accountIds: string[]): Promise<string[]> {
  const rows = await sql<{ account_id: string }[]>`
    select account_id from mp_refresh_escrow where account_id = any(${
    pgArray(accountIds)
  }::uuid[])`;
  return rows.map((r) => r.account_id);
}

/** The escrowed pairs of `accountIds`, by account id. */
export async function readEscrows(
  sql: Sql,
  accountIds: string[],
): Promise<Map<string, EscrowEntry>> {
  const rows = await sql<EscrowRow[]>`
    select account_id, base_version, access_token_encrypted, refresh_token_encrypted,
           expires_in, token_expires_at, user_id, public_key, live_mode, scope
      from mp_refresh_escrow where account_id = any(${pgArray(accountIds)}::uuid[])`;
  return new Map(rows.map((row) => [row.account_id, {
    accountId: row.account_id,
    baseVersion: row.base_version,
    accessTokenEncrypted: row.access_token_encrypted,
    refreshTokenEncrypted: row.refresh_token_encrypted,
    expiresIn: row.expires_in,
    tokenExpiresAt: row.token_expires_at,
    userId: row.user_id,
    publicKey: row.public_key,
    liveMode: row.live_mode,
    scope: row.scope,
  }]));
}

/** Parks a pair for its account; a pair from a newer base version replaces an older one. */
export async function writeEscrow(sql: Sql, entry: EscrowEntry): Promise<void> {
  await sql`
    insert into mp_refresh_escrow ${
    sql({
      account_id: entry.accountId,
      base_version: entry.baseVersion,
      access_token_encrypted: entry.accessTokenEncrypted,
      refresh_token_encrypted: entry.refreshTokenEncrypted,
      expires_in: entry.expiresIn,
      token_expires_at: entry.tokenExpiresAt,
      user_id: entry.userId,
      public_key: entry.publicKey,
      live_mode: entry.liveMode,
      scope: entry.scope,
    })
  }
    on conflict (account_id) do update set
      base_version = excluded.base_version,
      access_token_encrypted = excluded.access_token_encrypted,
      refresh_token_encrypted = excluded.refresh_token_encrypted,
      expires_in = excluded.expires_in, token_expires_at = excluded.token_expires_at,
      user_id = excluded.user_id, public_key = excluded.public_key,
      live_mode = excluded.live_mode, scope = excluded.scope, created_at = now()
    where mp_refresh_escrow.base_version <= excluded.base_version`;
}

/** Removes the escrowed pair of `accountId` taken from `baseVersion` (applied or stale). */
export async function deleteEscrow(
  sql: Sql,
  accountId: string,
  baseVersion: number,
): Promise<void> {
  await sql`delete from mp_refresh_escrow
    where account_id = ${accountId} and base_version = ${baseVersion}`;
}
