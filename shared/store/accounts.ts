/**
 * The Admin DB's `nv_accounts`: the encrypted master copy of each seller's MercadoPago
 * credentials. ALL SQL on `nv_accounts` lives here (reads for sync, checkout, drift and status;
 * the refresh's atomic steps; link, revoke, connect, version bump). Every change of the
 * credentials is one statement that bumps the version (docs/atomic-state.md).
 */
import { type JsonPage, MAX_ID, NO_ID, pgArray, selectJsonPage, type Sql } from "../platform/db.ts";

/** What the sync and checkout need of an account. */
export interface AccountRow {
  id: string;
  backend_client_id: string | null;
  mp_connected: boolean;
  mp_access_token_encrypted: string | null;
  mp_public_key: string | null;
  mp_token_version: number;
}

/** The select list of an {@link AccountRow}, as one SQL fragment (no table alias). */
export function accountColumns(sql: Sql) {
  return sql`id, backend_client_id, coalesce(mp_connected, false) as mp_connected,
           mp_access_token_encrypted, mp_public_key, mp_token_version`;
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

/** Result of linking an account to a Backend client. */
export type LinkResult =
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
export interface Revoked {
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

// ---- Pages and batches (backfill, reconciliation) ----

/**
 * A page (by id, after `after`) of the accounts a backfill looks at: connected or linked to
 * a client; `accountId` narrows it to that one account.
 */
export async function readAccountPage(
  sql: Sql,
  opts: { after: string | null; limit: number; accountId?: string },
): Promise<AccountRow[]> {
  return await sql<AccountRow[]>`
    select ${accountColumns(sql)}
      from nv_accounts
     where (coalesce(mp_connected, false) or backend_client_id is not null)
       and id > ${opts.after ?? NO_ID}::uuid
       ${opts.accountId ? sql`and id = ${opts.accountId}` : sql``}
     order by id limit ${opts.limit}`;
}

/** How many accounts `readAccountPage` walks through (for a progress bar). */
export async function countAccountPages(sql: Sql, accountId?: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from nv_accounts
     where (coalesce(mp_connected, false) or backend_client_id is not null)
       ${accountId ? sql`and id = ${accountId}` : sql``}`;
  return row.n;
}

/** Reads the accounts `ids` in one query (missing ones are left out). */
export async function readAccounts(sql: Sql, ids: string[]): Promise<AccountRow[]> {
  if (ids.length === 0) return [];
  return await sql<AccountRow[]>`
    select ${accountColumns(sql)}
      from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
}

/**
 * Moves accounts' versions past a cache that is level with or ahead of them, so that a fenced
 * sync can overwrite it, in one statement: each only while it still has the version it was
 * seen with and no refresher owns it (a refresher saves only at the version it claimed, so a bump
 * under a live or stale lease could cost a rotated refresh token). Credentials are untouched. Returns the rows bumped.
 */
export async function bumpAccountVersions(
  sql: Sql,
  seen: { id: string; version: number; past: number }[],
): Promise<AccountRow[]> {
  if (seen.length === 0) return [];
  const ids = pgArray(seen.map((s) => s.id));
  const versions = pgArray(seen.map((s) => s.version));
  const past = pgArray(seen.map((s) => s.past));
  return await sql<AccountRow[]>`
    select * from mp_bump_account_versions(${ids}::uuid[], ${versions}::bigint[], ${past}::bigint[])`;
}

// ---- The scheduled refresh's atomic steps: SQL functions of the Admin migration …_mp_refresh.sql ----

/** An account a run claimed: its version, encrypted refresh token and lease. */
export interface ClaimedAccount {
  id: string;
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
export type ReauthReason = "invalid_grant" | "seller_mismatch" | "token_dead";

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
  const [row] = await sql<ClaimedAccount[]>`
    select * from mp_lease_account(${accountId}::uuid, ${owner}::uuid,
      make_interval(secs => ${leaseMs / 1000}::float8))`;
  return row;
}

/**
 * Clears an access token MercadoPago confirmed dead, at a new version, under `owner`'s lease
 * (`mp_record_token_dead`): the row for the cache write and whether its refresh token is unsent.
 */
export async function recordTokenDead(
  sql: Sql,
  accountId: string,
  owner: string,
  baseVersion: number,
): Promise<(AccountRow & { mp_refresh_sends: number }) | undefined> {
  const [row] = await sql<(AccountRow & { mp_refresh_sends: number })[]>`
    select * from mp_record_token_dead(${accountId}::uuid, ${owner}::uuid,
      ${baseVersion}::bigint)`;
  return row;
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

/**
 * A page (by id, in `(after, until]`) of the linked accounts' versions as a JSON text of
 * `[account id, client id, version, connected]` arrays; no secret leaves the database.
 */
export async function readLinkedVersionsPage(
  sql: Sql,
  opts: { after: string | null; until: string | null; limit: number },
): Promise<JsonPage> {
  return await selectJsonPage(
    sql,
    sql`select id, backend_client_id, mp_token_version,
               coalesce(mp_connected, false) and mp_access_token_encrypted is not null
                 as connected
          from nv_accounts
         where backend_client_id is not null and id > ${opts.after ?? NO_ID}::uuid
           and id <= ${opts.until ?? MAX_ID}::uuid
         order by id limit ${opts.limit}`,
    sql`json_build_array(id, backend_client_id, mp_token_version, connected)`,
  );
}

/** The versions of the linked accounts among `ids`, in the format of {@link readLinkedVersionsPage}. */
export async function readVersionsOf(sql: Sql, ids: string[]): Promise<string> {
  const [row] = await sql<{ page: string }[]>`
    select coalesce(json_agg(json_build_array(id, backend_client_id, mp_token_version,
             coalesce(mp_connected, false) and mp_access_token_encrypted is not null)), '[]')::text
             as page
      from nv_accounts where id = any(${pgArray(ids)}::uuid[]) and backend_client_id is not null`;
  return row.page;
}

/**
 * Of the cached clients in `page` (a JSON text of `[client id, version, has token, has public
 * key]` arrays, as the Backend wrote it), those no account is linked to, ordered by id.
 */
export async function unlinkedAmong(
  sql: Sql,
  page: string,
): Promise<{ id: string; mp_token_version: number | null }[]> {
  const rows = await sql<{ id: string; mp_token_version: string | null }[]>`
    select (e->>0)::uuid as id, (e->>1)::bigint as mp_token_version
      from json_array_elements(${page}::text::json) as e
     where not exists (select 1 from nv_accounts a where a.backend_client_id = (e->>0)::uuid)
     order by 1`;
  return rows.map((r) => ({
    id: r.id,
    mp_token_version: r.mp_token_version === null ? null : Number(r.mp_token_version),
  }));
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
