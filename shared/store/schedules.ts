/**
 * The Backend DB's record of the scheduled jobs (`mp_schedules`, written by the scheduling
 * helper `mp_schedule_function` of the Backend migrations): which function each job calls and
 * when it took its current form.
 */
import type { Sql } from "../platform/db.ts";

/** One scheduled job: the function it calls and the moment it was scheduled. */
export interface ScheduleRecord {
  job_name: string;
  function_name: string;
  scheduled_at: Date;
}

/** Reads every recorded job (a handful of rows). */
export async function readScheduleRecords(sql: Sql): Promise<ScheduleRecord[]> {
  return await sql<ScheduleRecord[]>`
    select job_name, function_name, scheduled_at from mp_schedules`;
}
