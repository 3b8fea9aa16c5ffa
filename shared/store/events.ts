/**
 * The Admin DB's event outbox (`mp_event_outbox`; docs/contract.md, "Events to the platform")
 * and the scheduled functions' run
 * records (`mp_function_runs`): every change is one SQL function of the Admin migration
 * …_mp_event_outbox.sql (docs/atomic-state.md).
 */
import { pgArray, type Sql } from "../platform/db.ts";

/** An event leased for one delivery attempt. */
export interface ClaimedEvent {
  id: string;
  account_id: string;
  seq: number;
  type: string;
  /** The JSON body as stored (sent byte for byte, so the signature covers exactly it). */
  payload: string;
  created_at: Date;
  retry_from: Date;
  /** Attempts so far, this one included. */
  attempts: number;
  db_now: Date;
}

/** What an attempt came to: delivered, tried again at `next`, or failed for good. */
export interface EventOutcome {
  id: string;
  outcome: "delivered" | "retry" | "failed";
  next?: Date;
  error?: string;
}

/** Leases up to `limit` due events, each its account's oldest pending one. */
export async function claimEvents(
  sql: Sql,
  req: { owner: string; limit: number; leaseMs: number },
): Promise<ClaimedEvent[]> {
  return await sql<ClaimedEvent[]>`
    select * from mp_claim_events(${req.owner}::uuid, ${req.limit}::int,
      make_interval(secs => ${req.leaseMs / 1000}::float8))`;
}

/** Records the outcomes of leased attempts; how many were recorded (a lost lease: none). */
export async function finishEvents(
  sql: Sql,
  owner: string,
  outcomes: EventOutcome[],
): Promise<number> {
  if (outcomes.length === 0) return 0;
  const [row] = await sql<{ n: number }[]>`
    select mp_finish_events(${owner}::uuid,
      ${pgArray(outcomes.map((o) => o.id))}::uuid[],
      ${pgArray(outcomes.map((o) => o.outcome))}::text[],
      ${pgArray(outcomes.map((o) => o.next?.toISOString() ?? null))}::timestamptz[],
      ${pgArray(outcomes.map((o) => o.error?.slice(0, 128) ?? null))}::text[]) as n`;
  return row.n;
}

/** Writes the `expiring` events due (at most `limit`); how many. */
export async function flagExpiring(sql: Sql, limit: number): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select mp_flag_expiring_events(${limit}::int) as n`;
  return row.n;
}

/**
 * The outbox's totals: pending, oldest pending creation, failed (all, and in the last 24 hours),
 * the latest error of a pending event (else of one failed in the last 24 hours).
 */
interface OutboxTotals {
  pending: number;
  oldest_pending_at: Date | null;
  failed: number;
  failed_24h: number;
  last_error: string | null;
}

/** Reads the outbox's totals (over partial indexes). */
export async function readOutboxTotals(sql: Sql): Promise<OutboxTotals> {
  const [row] = await sql<OutboxTotals[]>`
    select pending::int as pending, oldest_pending_at, failed::int as failed,
           failed_24h::int as failed_24h, last_error
      from mp_event_outbox_totals()`;
  return row;
}

/** What is left to deliver: due events (counted up to a cap) and the runs delivering now. */
interface DeliveryBacklog {
  due: number;
  active: number;
}

/** Reads the backlog of delivery, counting due events up to `cap`. */
export async function readBacklog(sql: Sql, cap: number): Promise<DeliveryBacklog> {
  const [row] = await sql<DeliveryBacklog[]>`
    select due, active from mp_delivery_backlog(${cap}::int)`;
  return row;
}

/** One event as the pull API reads it, with its position in commit order. */
interface StoredEvent {
  id: string;
  xid: string;
  pos: string;
  payload: string;
}

/** Up to `limit` events after position (`xid`, `pos`) in commit order (from the oldest without one). */
export async function readEvents(
  sql: Sql,
  after: { xid: string; pos: string } | null,
  limit: number,
): Promise<StoredEvent[]> {
  return await sql<StoredEvent[]>`
    select id, xid::text as xid, pos::text as pos, payload
      from mp_read_events(${after?.xid ?? null}::xid8, ${after?.pos ?? null}::bigint,
        ${limit}::int)`;
}

/** Failed events back to pending and due now: the given ids, or all created since `since`. */
export async function redeliverEvents(
  sql: Sql,
  opts: { ids?: string[]; since?: Date },
): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select mp_redeliver_events(${opts.ids ? pgArray(opts.ids) : null}::uuid[],
      ${opts.since?.toISOString() ?? null}::timestamptz) as n`;
  return row.n;
}

/** An event as the operators list it (`deno task events`). */
interface EventListing {
  id: string;
  account_id: string;
  seq: number;
  type: string;
  status: "pending" | "failed" | "delivered";
  attempts: number;
  created_at: Date;
  next_attempt_at: Date;
  last_error: string | null;
}

/** Pending and failed events (oldest first), created since `since` when given; at most `limit`. */
export async function listUndelivered(
  sql: Sql,
  opts: { since?: Date; limit: number },
): Promise<EventListing[]> {
  return await sql<EventListing[]>`
    select id, account_id, seq, type, status, attempts, created_at, next_attempt_at, last_error
      from mp_event_outbox
     where status in ('pending', 'failed')
       and (${opts.since?.toISOString() ?? null}::timestamptz is null
            or created_at >= ${opts.since?.toISOString() ?? null}::timestamptz)
     order by created_at, pos
     limit ${opts.limit}`;
}

/** Records a completed run of a scheduled function (one row per function). */
export async function recordFunctionRun(
  sql: Sql,
  run: { fn: string; startedAt: Date; outcome: string; summary?: unknown },
): Promise<void> {
  await sql`select mp_record_function_run(${run.fn}, ${run.startedAt.toISOString()}::timestamptz,
    ${run.outcome}, ${JSON.stringify(run.summary ?? {})}::text::jsonb)`;
}

/** The last completed run of a function that recorded one. */
export interface FunctionRun {
  function_name: string;
  last_started_at: Date;
  last_finished_at: Date;
  outcome: string;
  /** What the run recorded about itself (its counts; mp-deliver-events: `delivery` on/off). */
  summary: Record<string, unknown>;
}

/** Reads the scheduled functions' last runs, with the database's clock (one statement). */
export async function readFunctionRuns(sql: Sql): Promise<{ now: Date; runs: FunctionRun[] }> {
  const rows = await sql<
    (Omit<Partial<FunctionRun>, "summary"> & { db_now: Date; summary: string | null })[]
  >`
    select now() as db_now, r.function_name, r.last_started_at, r.last_finished_at, r.outcome,
           r.summary::text as summary
      from (select 1) one left join mp_function_runs r on true`;
  return {
    now: rows[0].db_now,
    runs: rows.filter((r) => r.function_name != null).map(({ db_now: _, summary, ...r }) => ({
      ...r,
      summary: summaryOf(summary),
    } as FunctionRun)),
  };
}

/** A run's summary from its JSON text (older rows hold it as a JSON string of the object). */
function summaryOf(text: string | null): Record<string, unknown> {
  let value: unknown = JSON.parse(text ?? "{}");
  if (typeof value === "string") value = JSON.parse(value);
  return value !== null && typeof value === "object" ? value as Record<string, unknown> : {};
}
