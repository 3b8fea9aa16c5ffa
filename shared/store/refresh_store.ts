/**
 * The Admin DB side of the scheduled refresh: thin calls of the SQL functions of migration
 * 20261124000300_mp_refresh.sql, each one atomic statement (claim, compare-and-swap save,
 * failure and invalid_grant recorders, lease release).
 */
import type { AccountRow } from "./accounts.ts";
import { pgArray, type Sql } from "../platform/db.ts";

/** An account a run claimed: its version, encrypted refresh token and lease. */
export interface ClaimedAccount {
  id: string;
  mp_token_version: number;
  mp_refresh_token: string;
  backend_client_id: string | null;
  lease_expires_at: Date;
  db_now: Date;
}

/** What to claim: how many, the due window, the lease, one account only, forced. */
export interface ClaimRequest {
  owner: string;
  limit: number;
  dueWithinDays: number;
  leaseMs: number;
  accountId?: string;
  force: boolean;
  /** Accounts with a pair waiting in the Backend escrow: claimable whether due or not. */
  escrowed: string[];
}

/** Claims due accounts under a lease owned by `req.owner` (FOR UPDATE SKIP LOCKED). */
export function claimDueAccounts(sql: Sql, req: ClaimRequest): Promise<ClaimedAccount[]> {
  return sql<ClaimedAccount[]>`
    select * from mp_claim_due_accounts(
      ${req.owner}::uuid, ${req.limit}::int, make_interval(days => ${req.dueWithinDays}::int),
      make_interval(secs => ${req.leaseMs / 1000}::float8), ${req.accountId ?? null}::uuid,
      ${req.force}::boolean, ${pgArray(req.escrowed)}::uuid[])`;
}

/** A refreshed pair as stored: ciphertexts plus what MercadoPago said about it. */
export interface StoredPair {
  accessTokenEncrypted: string;
  refreshTokenEncrypted: string;
  expiresIn: number;
  tokenExpiresAt: Date;
  userId: number | null;
  publicKey: string | null;
  liveMode: boolean | null;
  scope: string | null;
}

/**
 * Saves a refreshed pair only while the account is still at `baseVersion` and leased by
 * `owner`; returns the saved row for the sync, or undefined when the CAS was lost.
 */
export async function saveRefreshed(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
  pair: StoredPair,
): Promise<AccountRow | undefined> {
  const [row] = await sql<AccountRow[]>`
    select * from mp_save_refreshed(
      ${accountId}::uuid, ${owner}::uuid, ${baseVersion}::bigint,
      ${pair.accessTokenEncrypted}, ${pair.refreshTokenEncrypted}, ${pair.expiresIn}::int,
      ${pair.tokenExpiresAt}::timestamptz, ${pair.userId}::bigint, ${pair.publicKey}::text,
      ${pair.liveMode}::boolean, ${pair.scope}::text)`;
  return row;
}

/** The backoff state a recorded failure left. */
export interface FailureState {
  failures: number;
  next_attempt_at: Date;
}

/** Backoff of transient failures: base · 2^failures, capped. */
export interface Backoff {
  baseMs: number;
  capMs: number;
}

/** Records a transient failure (counted, backed off or Retry-After) and releases the lease. */
export async function recordFailure(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
  error: string,
  backoff: Backoff,
  retryAfterMs?: number,
): Promise<FailureState | undefined> {
  const seconds = (ms: number | undefined) => ms === undefined ? null : ms / 1000;
  const [row] = await sql<FailureState[]>`
    select * from mp_record_refresh_failure(
      ${accountId}::uuid, ${owner}::uuid, ${baseVersion}::bigint, ${error},
      make_interval(secs => ${seconds(retryAfterMs)}::float8),
      make_interval(secs => ${seconds(backoff.baseMs)}::float8),
      make_interval(secs => ${seconds(backoff.capMs)}::float8))`;
  return row;
}

/** Marks the account as needing re-authorization and releases the lease; false if not owner. */
export async function recordReauthRequired(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`
    select mp_record_reauth_required(${accountId}::uuid, ${owner}::uuid, ${baseVersion}::bigint)
      as ok`;
  return row.ok;
}

/** Releases the leases `owner` holds on `accountIds`; returns how many it released. */
export async function releaseLeases(
  sql: Sql,
  owner: string,
  accountIds: string[],
): Promise<number> {
  if (accountIds.length === 0) return 0;
  const [row] = await sql<{ n: number }[]>`
    select mp_release_refresh_leases(${owner}::uuid, ${pgArray(accountIds)}::uuid[]) as n`;
  return row.n;
}

/** The account as the sync needs it, when it holds exactly this refresh-token ciphertext. */
export async function readIfHolds(
  sql: Sql,
  accountId: string,
  refreshTokenEncrypted: string,
): Promise<AccountRow | undefined> {
  const [row] = await sql<AccountRow[]>`
    select id, backend_client_id, coalesce(mp_connected, false) as mp_connected,
           mp_access_token_encrypted, mp_public_key, mp_token_version
      from nv_accounts where id = ${accountId} and mp_refresh_token = ${refreshTokenEncrypted}`;
  return row;
}
