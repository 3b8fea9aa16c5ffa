/**
 * Where mp-reconcile's slices resume: one row per scan (`accounts`, `orphans`) in the Backend
 * table `mp_reconcile_cursor`, holding the last id the previous run checked.
 */
import type { Sql } from "../platform/db.ts";

/** The two scans a reconcile run slices. */
type CursorScan = "accounts" | "orphans";

/** The saved cursors (null: start from the first id). */
export async function readCursors(sql: Sql): Promise<Record<CursorScan, string | null>> {
  const rows = await sql<{ scan: CursorScan; after_id: string | null }[]>`
    select scan, after_id from mp_reconcile_cursor where scan in ('accounts', 'orphans')`;
  const out: Record<CursorScan, string | null> = { accounts: null, orphans: null };
  for (const r of rows) out[r.scan] = r.after_id;
  return out;
}

/** Where a scan stopped, and whether it passed the end of the keyspace on the way. */
export interface CursorEnd {
  next: string | null;
  wrapped: boolean;
}

/** Saves both cursors in one statement; a scan that wrapped records when (`wrapped_at`). */
export async function saveCursors(
  sql: Sql,
  ends: Record<CursorScan, CursorEnd>,
): Promise<void> {
  await sql`
    insert into mp_reconcile_cursor (scan, after_id, updated_at, wrapped_at)
    values ('accounts', ${ends.accounts.next}::uuid, now(),
            case when ${ends.accounts.wrapped}::boolean then now() end),
           ('orphans', ${ends.orphans.next}::uuid, now(),
            case when ${ends.orphans.wrapped}::boolean then now() end)
    on conflict (scan) do update set after_id = excluded.after_id, updated_at = now(),
      wrapped_at = coalesce(excluded.wrapped_at, mp_reconcile_cursor.wrapped_at)`;
}
