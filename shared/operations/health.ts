/**
 * Read-only views of the credentials' health, shared by `mp-health`, `mp-reconcile` and
 * `deno task status`: drift between the Admin versions and the cache (compared by version
 * and presence, never by secret), totals for monitoring, and one status row per account.
 */
import { type CacheState, readCachedClientPage, readCacheStates } from "../store/clients.ts";
import type { AccountRow } from "../store/accounts.ts";
import type { Context } from "../platform/context.ts";
import { pgArray, type Sql } from "../platform/db.ts";

const NO_ID = "00000000-0000-0000-0000-000000000000";
const MAX_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff";

/**
 * Where a bounded scan runs over the id keyspace: ids after `after` and up to `until` (null:
 * from the start / to the end), at most `maxRows` rows.
 */
export interface ScanRange {
  after?: string | null;
  until?: string | null;
  maxRows?: number;
}

/** Where a bounded scan stopped: the last id it read, whether it reached the range's end, rows read. */
export interface ScanEnd {
  last: string | null;
  done: boolean;
  rows: number;
}

/** How many rows one page of a scan reads from each database. */
export const SCAN_PAGE = 5000;

/** An account as the drift scan sees it: versions and presence. */
export interface AccountState {
  id: string;
  backend_client_id: string;
  /** Connected with an access token stored. */
  connected: boolean;
  mp_token_version: number;
  /** The row as the sync needs it (ciphertext included), when the scan was asked for it. */
  row?: AccountRow;
}

/** How a cache differs from its account: older version, no token, a revoked account's token, ahead. */
export type DriftKind = "stale" | "empty" | "revoked_cached" | "ahead";

/** The kinds of drift reconciliation repairs, including caches no account feeds. */
export const DRIFT_KINDS = ["stale", "empty", "revoked_cached", "ahead", "unlinked"] as const;

/** A linked account whose cache drifted (or whose client row is missing). */
export interface Drift {
  account: AccountState;
  cache?: CacheState;
  kind: DriftKind | "client_missing";
}

interface StateRow extends AccountRow {
  connected: boolean;
}

function toState(r: StateRow, withRow: boolean): AccountState {
  const { connected, ...row } = r;
  return {
    id: r.id,
    backend_client_id: r.backend_client_id!,
    connected,
    mp_token_version: r.mp_token_version,
    row: withRow ? row : undefined,
  };
}

/**
 * A page (by id) of the linked accounts' versions, in one query; with `withRow`, their
 * ciphertexts too (so a repair needs no second read), otherwise no secret leaves the database.
 */
export async function readLinkedStatePage(
  sql: Sql,
  after: string | null,
  limit: number,
  withRow = false,
  until: string | null = null,
): Promise<AccountState[]> {
  const rows = await sql<StateRow[]>`
    select id, backend_client_id,
           coalesce(mp_connected, false) and mp_access_token_encrypted is not null as connected,
           mp_token_version, coalesce(mp_connected, false) as mp_connected,
           ${withRow ? sql`mp_access_token_encrypted` : sql`null::text`}
             as mp_access_token_encrypted,
           mp_public_key
      from nv_accounts
     where backend_client_id is not null and id > ${after ?? NO_ID}::uuid
       and id <= ${until ?? MAX_ID}::uuid
     order by id limit ${limit}`;
  return rows.map((r) => toState(r, withRow));
}

/** The versions of the accounts `ids`, in one query. */
async function readStates(sql: Sql, ids: string[]): Promise<AccountState[]> {
  const rows = await sql<StateRow[]>`
    select id, backend_client_id,
           coalesce(mp_connected, false) and mp_access_token_encrypted is not null as connected,
           mp_token_version, coalesce(mp_connected, false) as mp_connected,
           null::text as mp_access_token_encrypted, mp_public_key
      from nv_accounts where id = any(${pgArray(ids)}::uuid[]) and backend_client_id is not null`;
  return rows.map((r) => toState(r, false));
}

/** How `cache` differs from `account`, or null when it holds what the account's version says. */
export function driftOf(
  account: AccountState,
  cache: CacheState | undefined,
): Drift["kind"] | null {
  if (!cache) return "client_missing";
  const cached = cache.mp_token_version ?? -1;
  if (account.connected) {
    if (!cache.has_token) return "empty";
    if (cached < account.mp_token_version) return "stale";
    if (cached > account.mp_token_version) return "ahead";
    return null;
  }
  return cache.has_token || cache.has_public_key ? "revoked_cached" : null;
}

async function compare(ctx: Context, accounts: AccountState[]): Promise<Drift[]> {
  const caches = new Map(
    (await ctx.backend((sql) => readCacheStates(sql, accounts.map((a) => a.backend_client_id))))
      .map((c) => [c.id, c]),
  );
  const drifts: Drift[] = [];
  for (const account of accounts) {
    const cache = caches.get(account.backend_client_id);
    const kind = driftOf(account, cache);
    if (kind) drifts.push({ account, cache, kind });
  }
  return drifts;
}

/** True when the cache is level with or ahead of the account (a fenced sync cannot fix it). */
export function isLevel(d: Drift): boolean {
  return (d.cache?.mp_token_version ?? -1) >= d.account.mp_token_version;
}

/**
 * Walks every linked account page by page and calls `onPage` with the page's size and the
 * drift found in it (with `withRows`, each drift carries the account row it was found on;
 * confirmed drift does not). A cache level with or ahead of its account is confirmed by reading both
 * sides again, so a refresh landing between the two reads is not reported as drift.
 */
export async function scanDrift(
  ctx: Context,
  onPage: (checked: number, drifts: Drift[]) => Promise<void> | void,
  opts: { pageSize?: number; withRows?: boolean } & ScanRange = {},
): Promise<ScanEnd> {
  let after: string | null = opts.after ?? null;
  const max = opts.maxRows ?? Infinity;
  let left = max;
  for (;;) {
    const pageSize = Math.min(opts.pageSize ?? SCAN_PAGE, left);
    if (pageSize <= 0) return { last: after, done: false, rows: max - left };
    const page: AccountState[] = await ctx.admin((sql) =>
      readLinkedStatePage(sql, after, pageSize, opts.withRows, opts.until ?? null)
    );
    if (page.length === 0) return { last: after, done: true, rows: max - left };
    left -= page.length;
    const drifts = await compare(ctx, page);
    const older = drifts.filter((d) => !d.cache || !isLevel(d));
    const level = drifts.filter((d) => d.cache && isLevel(d));
    if (level.length > 0) {
      const again = await ctx.admin((sql) => readStates(sql, level.map((d) => d.account.id)));
      older.push(...await compare(ctx, again));
    }
    await onPage(page.length, older);
    after = page[page.length - 1].id;
    if (page.length < pageSize) return { last: after, done: true, rows: max - left };
  }
}

/**
 * Walks the clients whose cache holds credentials and calls `onPage` with those no account
 * is linked to (ids and versions only).
 */
export async function scanOrphans(
  ctx: Context,
  onPage: (orphans: CacheState[]) => Promise<void> | void,
  opts: { pageSize?: number } & ScanRange = {},
): Promise<ScanEnd> {
  let after: string | null = opts.after ?? null;
  const max = opts.maxRows ?? Infinity;
  let left = max;
  for (;;) {
    const pageSize = Math.min(opts.pageSize ?? SCAN_PAGE, left);
    if (pageSize <= 0) return { last: after, done: false, rows: max - left };
    const page: CacheState[] = await ctx.backend((sql) =>
      readCachedClientPage(sql, after, pageSize, opts.until ?? null)
    );
    if (page.length === 0) return { last: after, done: true, rows: max - left };
    left -= page.length;
    const linked = new Set(
      (await ctx.admin((sql) =>
        sql<{ id: string }[]>`select backend_client_id as id from nv_accounts
          where backend_client_id = any(${pgArray(page.map((c) => c.id))}::uuid[])`
      )).map((r) => r.id),
    );
    const orphans = page.filter((c) => !linked.has(c.id));
    if (orphans.length > 0) await onPage(orphans);
    after = page[page.length - 1].id;
    if (page.length < pageSize) return { last: after, done: true, rows: max - left };
  }
}

/** Fast-path misses recorded by get-mp-config in the last hour (from the audit trail). */
export async function fastPathMisses(ctx: Context): Promise<number> {
  const [row] = await ctx.admin((sql) =>
    sql<{ n: number }[]>`select count(*)::int as n from mp_credential_events
      where event = 'fast_path_miss' and occurred_at > now() - interval '1 hour'`
  );
  return row.n;
}

/** Drift counted over both databases: per kind, total, and linked accounts without a client. */
export async function countDrift(ctx: Context) {
  const kinds = Object.fromEntries(DRIFT_KINDS.map((k) => [k, 0])) as Record<
    (typeof DRIFT_KINDS)[number],
    number
  >;
  let clientMissing = 0;
  let checked = 0;
  await scanDrift(ctx, (n, drifts) => {
    checked += n;
    for (const d of drifts) {
      if (d.kind === "client_missing") clientMissing++;
      else kinds[d.kind]++;
    }
  });
  await scanOrphans(ctx, (orphans) => {
    kinds.unlinked += orphans.length;
  });
  const drifted = Object.values(kinds).reduce((a, b) => a + b, 0);
  return { checked, drifted, kinds, clientMissing };
}

/** The monitoring totals `mp-health` answers with. */
export interface HealthTotals {
  connected: number;
  expiring_7d: number;
  needs_reauth: number;
  drifted: number;
  fast_path_misses_1h: number;
  client_missing: number;
  drift_by_kind: Record<(typeof DRIFT_KINDS)[number], number>;
}

/** Counts the monitoring totals over both databases. */
export async function healthTotals(ctx: Context): Promise<HealthTotals> {
  const [[counts], drift, misses] = await Promise.all([
    ctx.admin((sql) =>
      sql<{ connected: number; expiring_7d: number; needs_reauth: number }[]>`
        select count(*) filter (where mp_connected)::int as connected,
               count(*) filter (where mp_connected
                                  and mp_token_expires_at < now() + interval '7 days')::int
                 as expiring_7d,
               count(*) filter (where mp_needs_reauth)::int as needs_reauth
          from nv_accounts where mp_connected or mp_needs_reauth`
    ),
    countDrift(ctx),
    fastPathMisses(ctx),
  ]);
  return {
    connected: counts.connected,
    expiring_7d: counts.expiring_7d,
    needs_reauth: counts.needs_reauth,
    drifted: drift.drifted,
    fast_path_misses_1h: misses,
    client_missing: drift.clientMissing,
    drift_by_kind: drift.kinds,
  };
}

/** One account's line in `deno task status`. */
export interface AccountStatus {
  account_id: string;
  client_id: string | null;
  connected: boolean;
  expires_at: string | null;
  last_refresh_at: string | null;
  failures: number;
  last_error: string | null;
  needs_reauth: boolean;
  /** "in_sync", a drift kind, "client_missing", or "not_linked". */
  cache: "in_sync" | Drift["kind"] | "not_linked";
  /** What a person should do first; "ok" when nothing. */
  attention: "reauthorize" | "expired" | "failing" | "drift" | "expiring" | "ok";
}

const ATTENTION_ORDER: AccountStatus["attention"][] = [
  "reauthorize",
  "expired",
  "failing",
  "drift",
  "expiring",
  "ok",
];

interface StatusRow extends AccountState {
  backend_client_id: string;
  expires_at: Date | null;
  last_refresh_at: Date | null;
  failures: number;
  last_error: string | null;
  needs_reauth: boolean;
  mp_connected: boolean;
}

/**
 * Every connected, linked or re-authorization-needing account with its health, the ones that
 * need a person first (then by expiry). The cache column compares versions across the two
 * databases in bulk.
 */
export async function accountStatuses(ctx: Context): Promise<AccountStatus[]> {
  const out: AccountStatus[] = [];
  const now = Date.now();
  let after: string | null = null;
  for (;;) {
    const page: StatusRow[] = await ctx.admin((sql) =>
      sql<StatusRow[]>`
        select id, backend_client_id, coalesce(mp_connected, false) as mp_connected,
               coalesce(mp_connected, false) and mp_access_token_encrypted is not null
                 as connected,
               mp_token_version, mp_token_expires_at as expires_at,
               mp_last_refreshed_at as last_refresh_at, mp_refresh_failures as failures,
               mp_refresh_last_error as last_error, mp_needs_reauth as needs_reauth
          from nv_accounts
         where (coalesce(mp_connected, false) or backend_client_id is not null or mp_needs_reauth)
           and id > ${after ?? NO_ID}::uuid
         order by id limit ${SCAN_PAGE}`
    );
    if (page.length === 0) break;
    const linked = page.filter((r) => r.backend_client_id);
    const caches = new Map(
      (await ctx.backend((sql) => readCacheStates(sql, linked.map((r) => r.backend_client_id))))
        .map((c) => [c.id, c]),
    );
    for (const r of page) {
      const cache = r.backend_client_id
        ? driftOf(r, caches.get(r.backend_client_id)) ?? "in_sync"
        : "not_linked";
      const expires = r.expires_at?.getTime();
      const attention: AccountStatus["attention"] = r.needs_reauth
        ? "reauthorize"
        : r.mp_connected && expires !== undefined && expires <= now
        ? "expired"
        : r.failures > 0
        ? "failing"
        : cache !== "in_sync" && cache !== "not_linked"
        ? "drift"
        : r.mp_connected && expires !== undefined && expires < now + 7 * 86_400_000
        ? "expiring"
        : "ok";
      out.push({
        account_id: r.id,
        client_id: r.backend_client_id,
        connected: r.mp_connected,
        expires_at: r.expires_at?.toISOString() ?? null,
        last_refresh_at: r.last_refresh_at?.toISOString() ?? null,
        failures: r.failures,
        last_error: r.last_error,
        needs_reauth: r.needs_reauth,
        cache,
        attention,
      });
    }
    if (page.length < SCAN_PAGE) break;
    after = page[page.length - 1].id;
  }
  const rank = (s: AccountStatus) => ATTENTION_ORDER.indexOf(s.attention);
  const expiry = (s: AccountStatus) => (s.expires_at ? Date.parse(s.expires_at) : Infinity);
  return out.sort((a, b) =>
    rank(a) - rank(b) || expiry(a) - expiry(b) || a.account_id.localeCompare(b.account_id)
  );
}
