/**
 * Drift detection (read-only), used by `mp-reconcile`, `mp-health` and `deno task status`:
 * where the cache differs from the Admin versions, compared by version and presence, never by
 * secret, scanned in bounded pages over the id keyspace.
 */
import { type CacheState, readCachedClientPage, readCacheStates } from "../store/clients.ts";
import {
  type AccountRow,
  type AccountStateRow,
  linkedClientIds,
  readLinkedStateRows,
  readStateRows,
} from "../store/accounts.ts";
import type { Context } from "../platform/context.ts";
import type { Sql } from "../platform/db.ts";

/** The lowest uuid: a keyset scan "after" it starts at the beginning. */
export const NO_ID = "00000000-0000-0000-0000-000000000000";

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

/** An account's drift state from its row (keeping the row itself when asked for). */
function toState(r: AccountStateRow, withRow: boolean): AccountState {
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
  const rows = await readLinkedStateRows(sql, { after, limit, withRow, until });
  return rows.map((r) => toState(r, withRow));
}

/** The versions of the accounts `ids`, in one query. */
async function readStates(sql: Sql, ids: string[]): Promise<AccountState[]> {
  return (await readStateRows(sql, ids)).map((r) => toState(r, false));
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
 * Pages through a keyspace by id within `range` (at most `range.maxRows` rows), handing each
 * page to `onPage`; says where it stopped. The one keyset loop both scans share.
 */
async function pageThrough<T extends { id: string }>(
  readPage: (after: string | null, size: number, until: string | null) => Promise<T[]>,
  onPage: (page: T[]) => Promise<void>,
  range: ScanRange,
  pageSize = SCAN_PAGE,
): Promise<ScanEnd> {
  let after: string | null = range.after ?? null;
  const max = range.maxRows ?? Infinity;
  let rows = 0;
  for (;;) {
    const size = Math.min(pageSize, max - rows);
    if (size <= 0) return { last: after, done: false, rows };
    const page = await readPage(after, size, range.until ?? null);
    rows += page.length;
    if (page.length > 0) {
      await onPage(page);
      after = page[page.length - 1].id;
    }
    if (page.length < size) return { last: after, done: true, rows };
  }
}

/**
 * Walks every linked account page by page and calls `onPage` with the page's size and the
 * drift found in it (with `withRows`, each drift carries the account row it was found on;
 * confirmed drift does not). A cache level with or ahead of its account is confirmed by reading both
 * sides again, so a refresh landing between the two reads is not reported as drift.
 */
export function scanDrift(
  ctx: Context,
  onPage: (checked: number, drifts: Drift[]) => Promise<void> | void,
  opts: { pageSize?: number; withRows?: boolean } & ScanRange = {},
): Promise<ScanEnd> {
  return pageThrough(
    (after, size, until) =>
      ctx.admin((sql) => readLinkedStatePage(sql, after, size, opts.withRows, until)),
    async (page: AccountState[]) => {
      const drifts = await compare(ctx, page);
      const older = drifts.filter((d) => !d.cache || !isLevel(d));
      const level = drifts.filter((d) => d.cache && isLevel(d));
      if (level.length > 0) {
        const again = await ctx.admin((sql) => readStates(sql, level.map((d) => d.account.id)));
        older.push(...await compare(ctx, again));
      }
      await onPage(page.length, older);
    },
    opts,
    opts.pageSize,
  );
}

/**
 * Walks the clients whose cache holds credentials and calls `onPage` with those no account
 * is linked to (ids and versions only).
 */
export function scanOrphans(
  ctx: Context,
  onPage: (orphans: CacheState[]) => Promise<void> | void,
  opts: { pageSize?: number } & ScanRange = {},
): Promise<ScanEnd> {
  return pageThrough(
    (after, size, until) => ctx.backend((sql) => readCachedClientPage(sql, after, size, until)),
    async (page: CacheState[]) => {
      const linked = new Set(
        await ctx.admin((sql) => linkedClientIds(sql, page.map((c) => c.id))),
      );
      const orphans = page.filter((c) => !linked.has(c.id));
      if (orphans.length > 0) await onPage(orphans);
    },
    opts,
    opts.pageSize,
  );
}
