/**
 * The runs of the scheduled functions (`jobs.ts`): each run's record, kept by the function at its
 * end (`runRecordOf`, what `defineScheduledFunction` is given), and whether each job still
 * completes its runs (mp-health) — from the functions' own run records (`mp_function_runs`,
 * Admin DB) and the moment each job was scheduled (`mp_schedules`, Backend DB), not from
 * `cron.job_run_details`, which says "succeeded" as soon as pg_net has queued the call.
 */
import type { Context } from "../platform/context.ts";
import type { ScheduledRuns } from "../platform/http.ts";
import type { Logger } from "../platform/log.ts";
import { type FunctionRun, recordFunctionRun } from "../store/events.ts";
import type { ScheduleRecord } from "../store/schedules.ts";
import { intervalOf, SCHEDULED_JOBS, type ScheduledFunction } from "./jobs.ts";

/** One scheduled function's last completed run as mp-health reports it. */
export interface ScheduleStatus {
  /** The schedule's interval in seconds. */
  interval_s: number;
  /** When its job took its current form (the Backend's `mp_schedules`), or null if never. */
  scheduled_at: string | null;
  last_run_at: string | null;
  outcome: string | null;
  /**
   * No completed run within twice the interval, counted from the later of the last completed
   * run and the moment the job was scheduled (neither: stalled).
   */
  stalled: boolean;
}

/**
 * The status of every scheduled function from its last recorded run and the moment its job was
 * scheduled, judged at `now` (the database's clock): stalled when twice its interval has passed
 * since the later of the two, or when it has neither. Pure.
 */
export function scheduleStatuses(
  runs: Pick<FunctionRun, "function_name" | "last_finished_at" | "outcome">[],
  scheduled: Pick<ScheduleRecord, "function_name" | "scheduled_at">[],
  now: Date,
): Record<ScheduledFunction, ScheduleStatus> {
  const byName = new Map(runs.map((r) => [r.function_name, r]));
  const since = new Map<string, number>();
  for (const s of scheduled) {
    const at = new Date(s.scheduled_at).getTime();
    since.set(s.function_name, Math.max(at, since.get(s.function_name) ?? -Infinity));
  }
  const out = {} as Record<ScheduledFunction, ScheduleStatus>;
  for (const { name, schedule } of SCHEDULED_JOBS) {
    // A schedule of no form `intervalOf` reads (never declared: the task refuses it) is stalled.
    const interval = (intervalOf(schedule) ?? 0) * 1000;
    const run = byName.get(name);
    const ranAt = run ? new Date(run.last_finished_at).getTime() : undefined;
    const scheduledAt = since.get(name);
    const from = Math.max(ranAt ?? -Infinity, scheduledAt ?? -Infinity);
    out[name] = {
      interval_s: interval / 1000,
      scheduled_at: scheduledAt === undefined ? null : new Date(scheduledAt).toISOString(),
      last_run_at: ranAt === undefined ? null : new Date(ranAt).toISOString(),
      outcome: run?.outcome ?? null,
      stalled: from === -Infinity || interval === 0 || now.getTime() - from > 2 * interval,
    };
  }
  return out;
}

/**
 * Records a completed run of a scheduled function at the end of the run (one SQL function);
 * a failure to record is logged and never fails the run.
 */
async function recordRun(
  ctx: Context,
  log: Logger,
  fn: ScheduledFunction,
  startedAt: Date,
  summary: Record<string, unknown>,
  outcome = "completed",
): Promise<void> {
  await ctx.admin((sql) => recordFunctionRun(sql, { fn, startedAt, outcome, summary })).catch(
    (err) => log.warn("Could not record the run", { error: err }),
  );
}

/**
 * The declared job `name` as a scheduled function needs it (`defineScheduledFunction`): its name
 * and the record it keeps of each of its runs.
 */
export function runRecordOf(name: ScheduledFunction): ScheduledRuns {
  return {
    name,
    record: (ctx, log, startedAt, summary) => recordRun(ctx, log, name, startedAt, summary),
  };
}
