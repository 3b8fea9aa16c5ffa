/**
 * Whether each scheduled function still completes its runs (mp-health): from the functions'
 * own run records (`mp_function_runs`), not from `cron.job_run_details`, which says
 * "succeeded" as soon as pg_net has queued the call.
 */
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import {
  type FunctionRun,
  recordFunctionRun,
  type ScheduledFunction,
  SCHEDULES,
} from "../store/events.ts";

/** One scheduled function's last completed run as mp-health reports it. */
export interface ScheduleStatus {
  /** The schedule's interval in seconds. */
  interval_s: number;
  last_run_at: string | null;
  outcome: string | null;
  /** No completed run within twice the interval (or never). */
  stalled: boolean;
}

/**
 * The status of every scheduled function from its last recorded run, judged at `now` (the
 * database's clock): stalled when it has not completed a run within twice its interval. Pure.
 */
export function scheduleStatuses(
  runs: Pick<FunctionRun, "function_name" | "last_finished_at" | "outcome">[],
  now: Date,
): Record<ScheduledFunction, ScheduleStatus> {
  const byName = new Map(runs.map((r) => [r.function_name, r]));
  const out = {} as Record<ScheduledFunction, ScheduleStatus>;
  for (const [name, interval] of Object.entries(SCHEDULES) as [ScheduledFunction, number][]) {
    const run = byName.get(name);
    const at = run ? new Date(run.last_finished_at) : null;
    out[name] = {
      interval_s: interval / 1000,
      last_run_at: at?.toISOString() ?? null,
      outcome: run?.outcome ?? null,
      stalled: !at || now.getTime() - at.getTime() > 2 * interval,
    };
  }
  return out;
}

/**
 * Records a completed run of a scheduled function at the end of the run (one SQL function);
 * a failure to record is logged and never fails the run.
 */
export async function recordRun(
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
