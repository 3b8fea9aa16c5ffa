/**
 * Drift detection (read-only), used by `mp-reconcile` and `deno task status`: where the cache
 * differs from the Admin versions, compared by version and presence, never by secret, in
 * bounded pages over the id keyspace. Each page crosses as one JSON text: the Admin DB writes
 * the accounts' versions, the Backend compares them with the caches and returns only what
 * differs (and the other way round for caches no account feeds), so a row in sync is never
 * handled in JavaScript (docs/scale.md).
 */
import { type CacheState, findCacheDrift, readCachedClientsPage } from "../store/clients.ts";
import { readLinkedVersionsPage, readVersionsOf, unlinkedAmong } from "../store/account_scans.ts";
import type { Context } from "../platform/context.ts";
import type { JsonPage } from "../platform/db.ts";

/**
 * Where a bounded scan runs over the id keyspace: ids after `after` and up to `until` (null:
 * from the start / to the end), at most `maxRows` rows.
 */
export interface ScanRange {
  after?: string | null;
  until?: string | null;
  maxRows?: number;
}

/** Where a bounded scan stopped: the last id it handled, whether it reached the range's end, rows read. */
export interface ScanEnd {
  last: string | null;
  done: boolean;
  rows: number;
}

/** The ids one page covers: `(after, until]` (null: from the start / to the end). */
export interface Span {
  after: string | null;
  until: string | null;
}

/** What a page handler may answer: stop the scan, with everything up to `at` handled. */
interface Stop {
  stopAt: string | null;
}

/** How many rows one page of a scan reads from each database. */
export const SCAN_PAGE = 10_000;

/** An account as the drift scan sees it: versions and presence. */
export interface AccountState {
  id: string;
  backend_client_id: string;
  /** Connected with an access token stored. */
  connected: boolean;
  mp_token_version: number;
}

/** How a cache differs from its account: older version, no token, a revoked account's token, ahead. */
type DriftKind = "stale" | "empty" | "revoked_cached" | "ahead";

/** The kinds of drift reconciliation repairs, including caches no account feeds. */
export const DRIFT_KINDS = ["stale", "empty", "revoked_cached", "ahead", "unlinked"] as const;

/** A linked account whose cache drifted (or whose client row is missing). */
export interface Drift {
  account: AccountState;
  cache?: CacheState;
  kind: DriftKind | "client_missing";
}

/** A cache no account feeds: its id and the version it holds. */
export interface Orphan {
  id: string;
  mp_token_version: number | null;
}

/**
 * How `cache` differs from `account`, or null when it holds what the account's version says.
 * The Backend applies the same rule in SQL (`findCacheDrift`); a test checks they agree.
 */
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

/** True when the cache is level with or ahead of the account (a fenced sync cannot fix it). */
export function isLevel(d: Drift): boolean {
  return (d.cache?.mp_token_version ?? -1) >= d.account.mp_token_version;
}

/** The drift of the accounts in `page` (a JSON text from the Admin DB), found by the Backend. */
async function compare(ctx: Context, page: string): Promise<Drift[]> {
  const rows = await ctx.backend((sql) => findCacheDrift(sql, page));
  return rows.map((r) => ({
    account: {
      id: r.account_id,
      backend_client_id: r.client_id,
      connected: r.connected,
      mp_token_version: r.account_version,
    },
    cache: r.cache ?? undefined,
    kind: r.kind,
  }));
}

/**
 * Pages through a keyspace by id within `range` (at most `range.maxRows` rows), handing each
 * page and the span it covers to `onPage` (the last span reaches the range's end, even when
 * empty); `onPage` may stop the scan. Says where it stopped. The one keyset loop both scans share.
 */
async function pageThrough(
  readPage: (after: string | null, size: number, until: string | null) => Promise<JsonPage>,
  onPage: (page: JsonPage, span: Span) => Promise<Stop | void>,
  range: ScanRange,
  pageSize = SCAN_PAGE,
): Promise<ScanEnd> {
  let after: string | null = range.after ?? null;
  const until = range.until ?? null;
  const max = range.maxRows ?? Infinity;
  let rows = 0;
  for (;;) {
    const size = Math.min(pageSize, max - rows);
    if (size <= 0) return { last: after, done: false, rows };
    const page = await readPage(after, size, until);
    rows += page.rows;
    const done = page.rows < size;
    const stop = await onPage(page, { after, until: done ? until : page.last });
    if (stop) return { last: stop.stopAt, done: false, rows };
    if (done) return { last: page.last ?? after, done: true, rows };
    after = page.last;
  }
}

/**
 * Walks the linked accounts page by page and calls `onPage` with the page's size, the drift
 * found in it (by account id) and the span it covers; `onPage` may stop the scan. A cache
 * level with or ahead of its account is confirmed by reading the account again, so a refresh
 * landing between the two reads is not reported as drift.
 */
export function scanDrift(
  ctx: Context,
  onPage: (checked: number, drifts: Drift[], span: Span) => Promise<Stop | void> | Stop | void,
  opts: { pageSize?: number } & ScanRange = {},
): Promise<ScanEnd> {
  return pageThrough(
    (after, limit, until) =>
      ctx.admin((sql) => readLinkedVersionsPage(sql, { after, until, limit })),
    async (page, span) => {
      const drifts = page.rows > 0 ? await compare(ctx, page.page) : [];
      const level = drifts.filter((d) => d.cache && isLevel(d));
      let found = drifts;
      if (level.length > 0) {
        const states = await ctx.admin((sql) =>
          readVersionsOf(sql, level.map((d) => d.account.id))
        );
        const again = new Map((await compare(ctx, states)).map((d) => [d.account.id, d]));
        found = drifts.flatMap((d) => {
          if (!(d.cache && isLevel(d))) return [d];
          const confirmed = again.get(d.account.id);
          return confirmed ? [confirmed] : [];
        });
      }
      return await onPage(page.rows, found, span);
    },
    opts,
    opts.pageSize,
  );
}

/**
 * Walks the clients whose cache holds credentials and calls `onPage` with those no account
 * is linked to (ids and versions only) and the span the page covers; `onPage` may stop the scan.
 */
export function scanOrphans(
  ctx: Context,
  onPage: (orphans: Orphan[], span: Span) => Promise<Stop | void> | Stop | void,
  opts: { pageSize?: number } & ScanRange = {},
): Promise<ScanEnd> {
  return pageThrough(
    (after, limit, until) =>
      ctx.backend((sql) => readCachedClientsPage(sql, { after, until, limit })),
    async (page, span) => {
      const orphans = page.rows > 0 ? await ctx.admin((sql) => unlinkedAmong(sql, page.page)) : [];
      return await onPage(orphans, span);
    },
    opts,
    opts.pageSize,
  );
}
