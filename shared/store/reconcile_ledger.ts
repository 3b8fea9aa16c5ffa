/**
 * What the reconcile pass knows, kept in the Backend for mp-health (docs/scale.md): the drift
 * it found on linked accounts at its last check and did not repair (`mp_reconcile_drift`,
 * replaced range by range as the pass goes) and one row per run (`mp_reconcile_runs`, kept two days).
 */
import { MAX_ID, NO_ID, type Sql } from "../platform/db.ts";

/** Why a drift found was left: a refresher owned it, its repair failed, or no client row. */
type LeftReason = "busy" | "failed" | "client_missing";

/** A drift the pass found on a linked account and left. */
export interface LeftDrift {
  account_id: string;
  client_id: string;
  kind: string;
  reason: LeftReason;
}

/**
 * Replaces the drift recorded for the account ids in `(after, until]` with `left` (all inside
 * that range), in one statement: what this check found outstanding there is all that stays.
 */
export async function replaceLeftDrift(
  sql: Sql,
  range: { after: string | null; until: string | null },
  left: LeftDrift[],
): Promise<void> {
  await sql`
    with incoming as (
      select (e->>'account_id')::uuid as account_id, (e->>'client_id')::uuid as client_id,
             e->>'kind' as kind, e->>'reason' as reason
        from json_array_elements(${JSON.stringify(left)}::text::json) as e),
    gone as (
      delete from mp_reconcile_drift d
       where d.account_id > ${range.after ?? NO_ID}::uuid
         and d.account_id <= ${range.until ?? MAX_ID}::uuid
         and not exists (select 1 from incoming i where i.account_id = d.account_id))
    insert into mp_reconcile_drift (account_id, client_id, kind, reason)
    select account_id, client_id, kind, reason from incoming
    on conflict (account_id) do update set client_id = excluded.client_id,
      kind = excluded.kind, reason = excluded.reason, seen_at = now()`;
}

/** The counts of one run, as `mp_reconcile_runs` keeps them. */
interface RunCounts {
  checked: number;
  drifted: number;
  repaired: number;
  failed: number;
  skipped: number;
  wrapped: boolean;
}

/** Records a finished run and drops the runs older than two days, in one statement. */
export async function recordRun(sql: Sql, run: RunCounts): Promise<void> {
  await sql`
    with old as (delete from mp_reconcile_runs where finished_at < now() - interval '2 days')
    insert into mp_reconcile_runs (checked, drifted, repaired, failed, skipped, wrapped)
    values (${run.checked}, ${run.drifted}, ${run.repaired}, ${run.failed}, ${run.skipped},
            ${run.wrapped})`;
}

/** What mp-health reports of the reconcile pass. */
export interface ReconcileTotals {
  /** Outstanding drift by kind (client_missing apart). */
  left: Record<string, number>;
  last_run_at: string | null;
  /** When the account scan last completed a pass over every linked account. */
  last_full_pass_at: string | null;
  checked_1h: number;
  repaired_1h: number;
  runs_1h: number;
}

/** Outstanding drift by kind and the last hour's runs, in one query. */
export async function readReconcileTotals(sql: Sql): Promise<ReconcileTotals> {
  const [row] = await sql<
    {
      left: Record<string, number> | string | null;
      last_run_at: Date | null;
      last_full_pass_at: Date | null;
      checked_1h: number;
      repaired_1h: number;
      runs_1h: number;
    }[]
  >`
    select (select json_object_agg(kind, n)::text from
              (select kind, count(*)::int as n from mp_reconcile_drift group by kind) k) as left,
           (select max(finished_at) from mp_reconcile_runs) as last_run_at,
           (select wrapped_at from mp_reconcile_cursor where scan = 'accounts')
             as last_full_pass_at,
           coalesce(sum(checked), 0)::int as checked_1h,
           coalesce(sum(repaired), 0)::int as repaired_1h,
           count(*)::int as runs_1h
      from mp_reconcile_runs where finished_at > now() - interval '1 hour'`;
  const left = typeof row.left === "string" ? JSON.parse(row.left) : row.left ?? {};
  return {
    left,
    last_run_at: row.last_run_at?.toISOString() ?? null,
    last_full_pass_at: row.last_full_pass_at?.toISOString() ?? null,
    checked_1h: row.checked_1h,
    repaired_1h: row.repaired_1h,
    runs_1h: row.runs_1h,
  };
}
