/**
 * The Backend DB's `clients`: the plain-text runtime cache checkout reads. Every write is
 * fenced by the Admin version it carries (docs/invariants.md, invariant 1).
 */
import { type JsonPage, MAX_ID, NO_ID, pgArray, selectJsonPage, type Sql } from "../platform/db.ts";

/** What the cache holds for one client. */
export interface CachedCredentials {
  mp_access_token: string | null;
  mp_public_key: string | null;
  mp_token_version: number | null;
  /** The site of the credentials (null: the configuration's default site). */
  mp_site_id: string | null;
}

/** The checkout fast path: one primary-key read. `undefined` when the client does not exist. */
export async function readCache(
  sql: Sql,
  clientId: string,
): Promise<CachedCredentials | undefined> {
  const [row] = await sql<CachedCredentials[]>`
    select mp_access_token, mp_public_key, mp_token_version, mp_site_id
      from clients where id = ${clientId}`;
  return row;
}

/**
 * Credentials to put in the cache at an Admin version (tokens null when disconnected), with
 * the site they belong to (absent or null: the default site).
 */
export interface CacheWrite {
  accessToken: string | null;
  publicKey: string | null;
  version: number;
  siteId?: string | null;
}

/** What a fenced write did, and what the cache holds afterwards. */
export interface CacheWriteResult extends CachedCredentials {
  result: "synced" | "already_current" | "client_not_found";
}

/**
 * Writes the cache only when it holds an older version than `write.version`, in one
 * statement; reports "already_current" otherwise, with what the cache holds now: read by a
 * second statement, so a newer write that committed while this one waited (a revoke, a
 * refresh) is what is reported, not the row as it was when this write began.
 */
export async function writeCache(
  sql: Sql,
  clientId: string,
  write: CacheWrite,
): Promise<CacheWriteResult> {
  const [written] = await sql<CachedCredentials[]>`
    update clients set mp_access_token = ${write.accessToken},
                       mp_public_key = ${write.publicKey},
                       mp_token_version = ${write.version},
                       mp_site_id = ${write.siteId ?? null},
                       mp_synced_at = now()
     where id = ${clientId} and coalesce(mp_token_version, -1) < ${write.version}
    returning mp_access_token, mp_public_key, mp_token_version, mp_site_id`;
  if (written) return { result: "synced", ...written };
  const [now] = await sql<CachedCredentials[]>`
    select mp_access_token, mp_public_key, mp_token_version, mp_site_id
      from clients where id = ${clientId}`;
  if (!now) {
    return {
      result: "client_not_found",
      mp_access_token: null,
      mp_public_key: null,
      mp_token_version: null,
      mp_site_id: null,
    };
  }
  return { result: "already_current", ...now };
}

/** One client's part of a batched cache write. */
export interface BatchCacheWrite extends CacheWrite {
  clientId: string;
}

/** What a batched write did for one client (`hadCredentials`: the cache held any before). */
export interface BatchCacheResult {
  clientId: string;
  result: CacheWriteResult["result"];
  hadCredentials: boolean;
}

/**
 * `writeCache` for many clients in ONE statement, with the same fence: each row is written
 * only when the cache holds an older version than the one it carries. One result per write,
 * in order. Client ids must be distinct (one account feeds at most one client).
 */
export async function writeCacheBatch(
  sql: Sql,
  writes: BatchCacheWrite[],
): Promise<BatchCacheResult[]> {
  if (writes.length === 0) return [];
  // `c.id = any(...)` gives the planner an index lookup on clients; joining the unnested
  // rows alone makes it hash the whole table for every batch. The answer joins nothing: once
  // Postgres switches the prepared statement to its generic plan (ten rows guessed), a join
  // becomes a nested loop, quadratic in the batch. The updated ids and the rows as they were
  // before (the statement's snapshot) are matched here instead.
  const rows = await sql<{ id: string; updated: boolean; had: boolean }[]>`
    with v as (
      select * from unnest(${pgArray(writes.map((w) => w.clientId))}::uuid[],
                           ${pgArray(writes.map((w) => w.accessToken))}::text[],
                           ${pgArray(writes.map((w) => w.publicKey))}::text[],
                           ${pgArray(writes.map((w) => w.version))}::bigint[],
                           ${pgArray(writes.map((w) => w.siteId ?? null))}::text[])
               as v(id, access_token, public_key, version, site_id)),
    upd as (
      update clients c set mp_access_token = v.access_token,
                           mp_public_key = v.public_key,
                           mp_token_version = v.version,
                           mp_site_id = v.site_id,
                           mp_synced_at = now()
        from v
       where c.id = any(array(select id from v)) and c.id = v.id
         and coalesce(c.mp_token_version, -1) < v.version
      returning c.id)
    select id, true as updated, false as had from upd
    union all
    select id, false, mp_access_token is not null or mp_public_key is not null
      from clients where id = any(array(select id from v))`;
  const updated = new Set<string>();
  const had = new Map<string, boolean>();
  for (const r of rows) r.updated ? updated.add(r.id) : had.set(r.id, r.had);
  return writes.map((w) => {
    const id = w.clientId.toLowerCase();
    return {
      clientId: w.clientId,
      result: updated.has(id) ? "synced" : had.has(id) ? "already_current" : "client_not_found",
      hadCredentials: had.get(id) ?? false,
    };
  });
}

/** What the cache holds for a client, without the secret: version and presence only. */
export interface CacheState {
  id: string;
  mp_token_version: number | null;
  has_token: boolean;
  has_public_key: boolean;
}

/** Versions and presence (never the tokens) of the cache rows of `clientIds`, in one query. */
export async function readCacheStates(sql: Sql, clientIds: string[]): Promise<CacheState[]> {
  if (clientIds.length === 0) return [];
  return await sql<CacheState[]>`
    select id, mp_token_version, mp_access_token is not null as has_token,
           mp_public_key is not null as has_public_key
      from clients where id = any(${pgArray(clientIds)}::uuid[])`;
}

/**
 * Clears the cache of clients no account feeds, in one statement, each only while it still
 * holds the version it was seen with (a sync landing meanwhile carries a newer one).
 */
export async function clearOrphanedCache(
  sql: Sql,
  seen: { id: string; version: number | null }[],
): Promise<string[]> {
  if (seen.length === 0) return [];
  const ids = pgArray(seen.map((s) => s.id));
  const versions = pgArray(seen.map((s) => s.version));
  const rows = await sql<{ id: string }[]>`
    update clients c set mp_access_token = null, mp_public_key = null, mp_synced_at = now()
      from unnest(${ids}::uuid[], ${versions}::bigint[]) as x(id, version)
     where c.id = any(${ids}::uuid[]) and c.id = x.id
       and c.mp_token_version is not distinct from x.version
       and (c.mp_access_token is not null or c.mp_public_key is not null)
    returning c.id`;
  return rows.map((r) => r.id);
}

/**
 * A page (by id, in `(after, until]`) of the clients whose cache holds any credential, as a
 * JSON text of `[client id, version, has token, has public key]` arrays (ids and versions
 * only), passed on to the Admin DB unparsed.
 */
export async function readCachedClientsPage(
  sql: Sql,
  opts: { after: string | null; until: string | null; limit: number },
): Promise<JsonPage> {
  return await selectJsonPage(
    sql,
    sql`select id, mp_token_version, mp_access_token is not null as has_token,
               mp_public_key is not null as has_public_key
          from clients
         where (mp_access_token is not null or mp_public_key is not null)
           and id > ${opts.after ?? NO_ID}::uuid
           and id <= ${opts.until ?? MAX_ID}::uuid
         order by id limit ${opts.limit}`,
    sql`json_build_array(id, mp_token_version, has_token, has_public_key)`,
  );
}

/** A linked account's cache that differs from it, as the Backend found it. */
interface CacheDriftRow {
  account_id: string;
  client_id: string;
  account_version: number;
  connected: boolean;
  /** Null when the client row does not exist. */
  cache: CacheState | null;
  kind: "stale" | "empty" | "revoked_cached" | "ahead" | "client_missing";
}

/**
 * Compares the accounts of `page` (a JSON text of `[account id, client id, version,
 * connected]` arrays, as the Admin DB wrote it) with their caches, in the Backend, and
 * returns only those that differ, ordered by account id. The rule is `driftOf`'s
 * (shared/reconcile/drift.ts), written in SQL; a test checks they agree on every case.
 */
export async function findCacheDrift(sql: Sql, page: string): Promise<CacheDriftRow[]> {
  const rows = await sql<
    (Omit<CacheDriftRow, "cache"> & {
      exists: boolean;
      mp_token_version: number | null;
      has_token: boolean;
      has_public_key: boolean;
    })[]
  >`
    with a as (
      select (e->>0)::uuid as account_id, (e->>1)::uuid as client_id,
             (e->>2)::bigint as account_version, (e->>3)::boolean as connected
        from json_array_elements(${page}::text::json) as e),
    compared as (
      select a.*, c.id is not null as exists, c.mp_token_version,
             c.mp_access_token is not null as has_token, c.mp_public_key is not null as has_public_key,
             case
               when c.id is null then 'client_missing'
               when a.connected and c.mp_access_token is null then 'empty'
               when a.connected and coalesce(c.mp_token_version, -1) < a.account_version then 'stale'
               when a.connected and coalesce(c.mp_token_version, -1) > a.account_version then 'ahead'
               when not a.connected and (c.mp_access_token is not null or c.mp_public_key is not null)
                 then 'revoked_cached'
             end as kind
        from a left join clients c on c.id = a.client_id)
    select * from compared where kind is not null order by account_id`;
  return rows.map((r) => ({
    account_id: r.account_id,
    client_id: r.client_id,
    account_version: Number(r.account_version),
    connected: r.connected,
    kind: r.kind,
    cache: r.exists
      ? {
        id: r.client_id,
        mp_token_version: r.mp_token_version === null ? null : Number(r.mp_token_version),
        has_token: r.has_token,
        has_public_key: r.has_public_key,
      }
      : null,
  }));
}
