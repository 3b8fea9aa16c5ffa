-- Backend DB: the scheduled functions as one set (docs/atomic-state.md, "Schedules"). The jobs are
-- declared once, in shared/schedules/jobs.ts; `deno task schedules` writes a migration
-- (`…_mp_scheduled_jobs.sql`, generated, never edited) that hands the whole declaration to
-- public.mp_schedule_functions(jobs), defined here:
-- * each job of `jobs` (a JSON array of {"name", "schedule", "body", "timeout_ms"}) is scheduled
--   through public.mp_schedule_function (…_mp_schedule_records.sql: the pg_cron guard, the call
--   through mp_invoke_function, the `mp_schedules` record), the job named after its function;
-- * every other job that calls a function of this project (its command calls
--   mp_invoke_function) is unscheduled, and its `mp_schedules` record removed: a job taken out
--   of the declaration stops, so `cron.job` holds exactly the declared jobs;
-- * where pg_cron is not usable (mp_schedule_function warns and schedules nothing) nothing is
--   changed. Returns how many jobs it scheduled.
-- Idempotent: scheduling an unchanged job keeps it and its `scheduled_at`.

create or replace function public.mp_schedule_functions(p_jobs jsonb)
returns integer
language plpgsql
set search_path = public, pg_temp
as $fn$
declare
  job jsonb;
  declared text[] := array(select j ->> 'name' from jsonb_array_elements(p_jobs) j);
  scheduled integer := 0;
begin
  for job in select j from jsonb_array_elements(p_jobs) j loop
    if not public.mp_schedule_function(job ->> 'name', job ->> 'schedule', job ->> 'name',
                                       job -> 'body', (job ->> 'timeout_ms')::integer) then
      return 0;
    end if;
    scheduled := scheduled + 1;
  end loop;
  if to_regclass('cron.job') is null then
    return scheduled;
  end if;
  perform cron.unschedule(j.jobname)
     from cron.job j
    where j.command like 'select public.mp_invoke_function(%'
      and not (j.jobname = any (declared));
  delete from public.mp_schedules s where not (s.job_name = any (declared));
  return scheduled;
end
$fn$;

comment on function public.mp_schedule_functions(jsonb) is
  'Schedules exactly the declared functions (shared/schedules/jobs.ts) and unschedules any other function job.';

do $$
declare
  grantee_role text;
begin
  revoke all on function public.mp_schedule_functions(jsonb) from public;
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on function public.mp_schedule_functions(jsonb) from %I',
                     grantee_role);
    end if;
  end loop;
end
$$;
