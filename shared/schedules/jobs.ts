/**
 * The scheduled functions, declared once. Each entry is a pg_cron job of the Backend project that
 * posts `body` to the function of the same name (`supabase/functions/<name>/`) on `schedule`,
 * waiting up to `timeoutMs` for its answer. Everything else reads this list: the Backend
 * migration that schedules the jobs is generated from it (`deno task schedules`, which writes a
 * new `…_mp_scheduled_jobs.sql` when the list changes), mp-health judges each job's liveness by
 * the interval of its schedule (`shared/schedules/runs.ts`), a function declared with
 * `defineScheduledFunction` records its runs under its name, and the tests check that the jobs
 * in `cron.job` after migrate are exactly these.
 *
 * Adding a scheduled function: its folder under `supabase/functions/`, one entry here, then
 * `deno task schedules` (the migration and the function's `supabase/config.toml` entry).
 */

/** One scheduled function: its pg_cron job. */
export interface ScheduledJob {
  /** The function the job calls, and the job's name in `cron.job` (`[a-z0-9-]`). */
  name: string;
  /**
   * pg_cron's schedule (UTC): `* * * * *` (every minute), `*\/N * * * *` (every N minutes),
   * `M * * * *` (hourly), `M *\/N * * *` (every N hours) or `M H * * *` (daily). mp-health
   * calls the job stalled after twice its interval without a completed run (`intervalOf`).
   */
  schedule: string;
  /** The JSON body of each call (the function's input; `{}`: its defaults). */
  body: Record<string, unknown>;
  /** How long pg_net waits for the answer, in ms (a run that answers after it is cut off). */
  timeoutMs: number;
}

/** The scheduled functions (the Backend's pg_cron jobs). */
export const SCHEDULED_JOBS = [
  // Every 10 minutes, a run of up to 200 accounts; the call may take a whole run (the Edge
  // Functions' 150 s wall clock).
  { name: "mp-refresh", schedule: "*/10 * * * *", body: { limit: 200 }, timeoutMs: 150_000 },
  // Every minute, one slice of the keyspace from its saved cursor.
  { name: "mp-reconcile", schedule: "* * * * *", body: {}, timeoutMs: 150_000 },
  // Every minute, one slice of tokens verified at MercadoPago.
  { name: "mp-probe", schedule: "* * * * *", body: {}, timeoutMs: 60_000 },
  // Every minute, what is due of the event outbox (docs/events.md): the functions that change a
  // connection also deliver in the background of their own request, so the schedule is the
  // safety net and the retry clock.
  { name: "mp-deliver-events", schedule: "* * * * *", body: {}, timeoutMs: 60_000 },
] as const satisfies readonly ScheduledJob[];

/** A scheduled function's name. */
export type ScheduledFunction = (typeof SCHEDULED_JOBS)[number]["name"];

/** A whole number field of a schedule: digits within [min, max]. */
function wholeIn(field: string, min: number, max: number): number | undefined {
  if (!/^\d{1,2}$/.test(field)) return undefined;
  const n = Number(field);
  return n >= min && n <= max ? n : undefined;
}

/** The N of a `*\/N` field within [1, max]. */
function stepIn(field: string, max: number): number | undefined {
  const m = /^\*\/(\d{1,2})$/.exec(field);
  return m ? wholeIn(m[1], 1, max) : undefined;
}

/**
 * The longest time between two runs of `schedule`, in seconds, for the forms `ScheduledJob`
 * lists; undefined for any other (`deno task schedules` refuses such a declaration). Pure.
 */
export function intervalOf(schedule: string): number | undefined {
  const fields = schedule.trim().split(/\s+/);
  const [minute, hour, ...rest] = fields;
  if (fields.length === 5 && rest.every((f) => f === "*")) {
    if (hour === "*") {
      if (minute === "*") return 60;
      const every = stepIn(minute, 59);
      if (every !== undefined) return every * 60;
      if (wholeIn(minute, 0, 59) !== undefined) return 3600;
    } else if (wholeIn(minute, 0, 59) !== undefined) {
      const every = stepIn(hour, 23);
      if (every !== undefined) return every * 3600;
      if (wholeIn(hour, 0, 23) !== undefined) return 86_400;
    }
  }
  return undefined;
}
