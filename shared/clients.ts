/**
 * The Backend DB's `clients`: the plain-text runtime cache checkout reads. Every write is
 * fenced by the Admin version it carries (SPEC §5 invariant 1).
 */
import type { Sql } from "./db.ts";

/** What the cache holds for one client. */
export interface CachedCredentials {
  mp_access_token: string | null;
  mp_public_key: string | null;
  mp_token_version: number | null;
}

/** The checkout fast path: one primary-key read. `undefined` when the client does not exist. */
export async function readCache(
  sql: Sql,
  clientId: string,
): Promise<CachedCredentials | undefined> {
  const [row] = await sql<CachedCredentials[]>`
    select mp_access_token, mp_public_key, mp_token_version from clients where id = ${clientId}`;
  return row;
}

/** Credentials to put in the cache at an Admin version (tokens null when disconnected). */
export interface CacheWrite {
  accessToken: string | null;
  publicKey: string | null;
  version: number;
}

/** What a fenced write did, and what the cache holds afterwards. */
export interface CacheWriteResult extends CachedCredentials {
  result: "synced" | "already_current" | "client_not_found";
}

/**
 * Writes the cache only when it holds an older version than `write.version`, in one
 * statement; reports "already_current" (and the newer contents) otherwise.
 */
export async function writeCache(
  sql: Sql,
  clientId: string,
  write: CacheWrite,
): Promise<CacheWriteResult> {
  const [row] = await sql<(CachedCredentials & { updated: boolean })[]>`
    with upd as (
      update clients set mp_access_token = ${write.accessToken},
                         mp_public_key = ${write.publicKey},
                         mp_token_version = ${write.version},
                         mp_synced_at = now()
       where id = ${clientId} and coalesce(mp_token_version, -1) < ${write.version}
      returning mp_access_token, mp_public_key, mp_token_version, true as updated)
    select * from upd
    union all
    select mp_access_token, mp_public_key, mp_token_version, false from clients
     where id = ${clientId} and not exists (select 1 from upd)`;
  if (!row) {
    return {
      result: "client_not_found",
      mp_access_token: null,
      mp_public_key: null,
      mp_token_version: null,
    };
  }
  const { updated, ...cached } = row;
  return { result: updated ? "synced" : "already_current", ...cached };
}
