/**
 * `nv_accounts` for the refresh (docs/invariants.md, invariants 3 and 4): claim and lease, the
 * count of a refresh token's sends, the compare-and-swap save, failures, re-authorization, a
 * confirmed dead token, each one SQL function (docs/atomic-state.md).
 */
import { pgArray, type Sql } from "../platform/db.ts";
import { accountColumns, AccountRow } from "./accounts.ts";

/** An account a run claimed: its version, encrypted refresh token and lease. */
export interface ClaimedAccount {
  id: string;
  /**
   * The version the refresh works from, the base of its fences (`mp_refresh_base_version`):
   * the token version, or, while a dead access token's clear is the account's last change,
   * the version before it (its refresh token's, and an escrowed pair's from it).
   */
  mp_token_version: number;
  mp_refresh_token: string;
  backend_client_id: string | null;
  /** The account's MercadoPago seller (a refresh answer for another is never stored). */
  mp_user_id: number | null;
  /** Requests with this refresh token that may have reached MercadoPago (invariant 3). */
  mp_refresh_sends: number;
  mp_token_expires_at: Date | null;
  lease_expires_at: Date;
  db_now: Date;
  /** The site of the application its tokens belong to (null: the default site's). */
  mp_site_id: string | null;
  /**
   * Whether `mp_site_id` was read at the claimed version: false when a connect changed the
   * account between the claim and that read (its refresh token is then not sent this run).
   */
  site_read: boolean;
}

/**
 * The claim statement `claim` with each account's site, read in the same statement and kept
 * only while the account is still at the claimed version (a site changes only with a connect,
 * which makes a new version): so a refresh token is never paired with another site's app. The
 * version is the refresh's base (`mp_refresh_base_version`: after a dead access token's clear,
 * the version before it), read at the claimed version too.
 */
function withSites(sql: Sql, claim: ReturnType<Sql>) {
  return sql<ClaimedAccount[]>`
    with c as (${claim})
    select c.id,
           case when a.mp_token_version = c.mp_token_version
                then mp_refresh_base_version(a.mp_token_version, a.mp_token_dead_version,
                                             a.mp_access_token_encrypted)
                else c.mp_token_version end as mp_token_version,
           c.mp_refresh_token, c.backend_client_id, c.mp_user_id, c.mp_refresh_sends,
           c.mp_token_expires_at, c.lease_expires_at, c.db_now,
           case when a.mp_token_version = c.mp_token_version then a.mp_site_id end
             as mp_site_id,
           coalesce(a.mp_token_version = c.mp_token_version, false) as site_read
      from c left join nv_accounts a on a.id = c.id`;
}

/** What to claim: how many, the due window, the lease, one account only, forced. */
interface ClaimRequest {
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
  return withSites(
    sql,
    sql`select * from mp_claim_due_accounts(
      ${req.owner}::uuid, ${req.limit}::int, make_interval(days => ${req.dueWithinDays}::int),
      make_interval(secs => ${req.leaseMs / 1000}::float8), ${req.accountId ?? null}::uuid,
      ${req.force}::boolean, ${pgArray(req.escrowed)}::uuid[])`,
  );
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
interface FailureState {
  failures: number;
  next_attempt_at: Date;
}

/** Backoff of transient failures: base · 2^failures, capped. */
export interface Backoff {
  baseMs: number;
  capMs: number;
}

/**
 * Records a transient failure (counted, backed off or Retry-After) and releases the lease;
 * `unsent`: the request counted by {@link beginRefreshCall} provably never reached MercadoPago.
 */
export async function recordFailure(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
  failure: { error: string; backoff: Backoff; retryAfterMs?: number; unsent: boolean },
): Promise<FailureState | undefined> {
  const seconds = (ms: number | undefined) => ms === undefined ? null : ms / 1000;
  const [row] = await sql<FailureState[]>`
    select * from mp_record_refresh_failure(
      ${accountId}::uuid, ${owner}::uuid, ${baseVersion}::bigint, ${failure.error},
      make_interval(secs => ${seconds(failure.retryAfterMs)}::float8),
      make_interval(secs => ${seconds(failure.backoff.baseMs)}::float8),
      make_interval(secs => ${seconds(failure.backoff.capMs)}::float8),
      ${failure.unsent}::boolean)`;
  return row;
}

/** Why an account needs re-authorization (docs/contract.md, connection states). */
type ReauthReason = "invalid_grant" | "seller_mismatch" | "token_dead";

/** Marks the account as needing re-authorization and releases the lease; false if not owner. */
export async function recordReauthRequired(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
  reason: ReauthReason = "invalid_grant",
): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`
    select mp_record_reauth_required(${accountId}::uuid, ${owner}::uuid, ${baseVersion}::bigint,
      ${reason}) as ok`;
  return row.ok;
}

/**
 * Counts the request about to carry the account's refresh token, before it is sent
 * (`mp_begin_refresh_call`); false when it may not be sent: the token may already have
 * reached MercadoPago (and this is not its last-resort attempt), or the lease is gone.
 */
export async function beginRefreshCall(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`
    select mp_begin_refresh_call(${accountId}::uuid, ${owner}::uuid, ${baseVersion}::bigint)
      as ok`;
  return row.ok;
}

/** Records a refresh whose outcome is unknown (at_risk) and releases the lease; false if not owner. */
export async function recordUnconfirmed(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
  error: string,
): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`
    select mp_record_refresh_unconfirmed(${accountId}::uuid, ${owner}::uuid,
      ${baseVersion}::bigint, ${error}) as ok`;
  return row.ok;
}

/** Marks refreshes left without an outcome by a dead worker (lease over) as at_risk; how many. */
export async function flagUnconfirmedRefreshes(sql: Sql): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select mp_flag_unconfirmed_refreshes() as n`;
  return row.n;
}

/** Leases one connected account whatever its refresh state (no live lease of another owner). */
export async function leaseAccount(
  sql: Sql,
  accountId: string,
  owner: string,
  leaseMs: number,
): Promise<ClaimedAccount | undefined> {
  const [row] = await withSites(
    sql,
    sql`select * from mp_lease_account(${accountId}::uuid, ${owner}::uuid,
      make_interval(secs => ${leaseMs / 1000}::float8))`,
  );
  return row;
}

/**
 * Clears an access token MercadoPago confirmed dead from the master at a new version, while the
 * account is still at `baseVersion` (`mp_clear_dead_token`): no lease needed, none changed (a
 * refresh holding the account still saves its pair). The row for the cache write and whether
 * its refresh token is unsent; undefined when the token is no longer the current one.
 */
export async function clearDeadToken(
  sql: Sql,
  accountId: string,
  baseVersion: number,
): Promise<(AccountRow & { mp_refresh_sends: number }) | undefined> {
  const [row] = await sql<(AccountRow & { mp_refresh_sends: number })[]>`
    select * from mp_clear_dead_token(${accountId}::uuid, ${baseVersion}::bigint)`;
  return row;
}

/**
 * Defers the refresh of accounts `owner` leased and did not call for, because their site's
 * MercadoPago is failing (`error`: `circuit_open`, `rate_limited`): the next attempt waits
 * `retryAfterMs`, the failing time starts, the lease is released (`mp_defer_refreshes`); how
 * many it deferred.
 */
export async function deferRefreshes(
  sql: Sql,
  owner: string,
  accountIds: string[],
  error: string,
  retryAfterMs: number,
): Promise<number> {
  if (accountIds.length === 0) return 0;
  const [row] = await sql<{ n: number }[]>`
    select mp_defer_refreshes(${owner}::uuid, ${pgArray(accountIds)}::uuid[], ${error},
      make_interval(secs => ${retryAfterMs / 1000}::float8)) as n`;
  return row.n;
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
    select ${accountColumns(sql)}
      from nv_accounts where id = ${accountId} and mp_refresh_token = ${refreshTokenEncrypted}`;
  return row;
}

// ---- Drift detection and status (read-only) ----
