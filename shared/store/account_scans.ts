/**
 * `nv_accounts` in pages, for the backfill and the reconcile pass: keyset pages of accounts,
 * their versions as JSON for the comparison inside the databases, and the version bump.
 */
import { type JsonPage, MAX_ID, NO_ID, pgArray, selectJsonPage, type Sql } from "../platform/db.ts";
import { accountColumns, AccountRow } from "./accounts.ts";

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
  // With each row's site, read in the same statement: a bump changes no site, and a row a
  // connect changed since it was seen is not bumped (its version moved).
  return await sql<AccountRow[]>`
    select b.*, a.mp_site_id
      from mp_bump_account_versions(${ids}::uuid[], ${versions}::bigint[], ${past}::bigint[]) b
      join nv_accounts a on a.id = b.id`;
}

// ---- The scheduled refresh's atomic steps: SQL functions of the Admin migration …_mp_refresh.sql ----

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
