-- Backend DB: when each scheduled function was scheduled, so mp-health counts a schedule's
-- interval from the later of its last completed run and the moment it was scheduled (a fresh
-- deploy is not `stalled` before its first runs were due; docs/contract.md,
-- "mp-reconcile / mp-health"). pg_cron 1.4's cron.job has no creation time, so the one
-- scheduling helper, public.mp_schedule_function (…_mp_schedules.sql), records it:
-- * public.mp_schedules: one row per job — the function it calls, its schedule and command,
--   and `scheduled_at`, the moment the job took its current form (created, or its schedule or
--   command changed). Scheduling a job again unchanged (a migration run twice) keeps it; a job
--   that was unscheduled and is scheduled again gets a new one.
-- * The helper records nothing when it schedules nothing (pg_cron not usable here).
-- * The four jobs are scheduled again through it (unchanged: same names, schedules, commands),
--   so a project deployed before this migration gets its records.
-- Idempotent: `create table if not exists`, `create or replace`, cron.schedule upserts by name.

create table if not exists public.mp_schedules (
  job_name text primary key,
  function_name text not null,
  schedule text not null,
  command text not null,
  scheduled_at timestamptz not null default now()
);

comment on table public.mp_schedules is
  'Jobs scheduled by mp_schedule_function, and when each took its current form (mp-health).';

alter table public.mp_schedules enable row level security;

create or replace function public.mp_schedule_function(
  p_job text,
  p_schedule text,
  p_function text,
  p_body jsonb default '{}'::jsonb,
  p_timeout_ms integer default 60000
) returns boolean
language plpgsql
set search_path = public, pg_temp
as $fn$
declare
  cron_db text := 'postgres';
  cmd text := format('select public.mp_invoke_function(%L, %L::jsonb, %s)', p_function,
                     p_body::text, p_timeout_ms);
  unchanged boolean;
begin
  if pg_has_role(current_user, 'pg_read_all_settings', 'usage') then
    cron_db := coalesce(current_setting('cron.database_name', true), cron_db);
  end if;
  if not exists (select 1 from pg_extension where extname = 'pg_cron')
     and cron_db <> current_database() then
    raise warning 'pg_cron is not usable in database %: % is not scheduled',
      current_database(), p_job;
    return false;
  end if;
  create extension if not exists pg_cron with schema pg_catalog;
  -- pg_net owns the `net` schema; where something already provides it (the real extension,
  -- or the local stack's stand-in) there is nothing to create.
  if not exists (select 1 from pg_namespace where nspname = 'net') then
    create extension if not exists pg_net with schema extensions;
  end if;
  -- The job as it stands before this call: already there in exactly this form?
  select exists (select 1 from cron.job j
                  where j.jobname = p_job and j.schedule = p_schedule and j.command = cmd)
    into unchanged;
  perform cron.schedule(p_job, p_schedule, cmd);
  insert into public.mp_schedules as s (job_name, function_name, schedule, command, scheduled_at)
  values (p_job, p_function, p_schedule, cmd, now())
  on conflict (job_name) do update
    set function_name = excluded.function_name,
        schedule = excluded.schedule,
        command = excluded.command,
        scheduled_at = case when unchanged and s.schedule = excluded.schedule
                                 and s.command = excluded.command
                            then s.scheduled_at else excluded.scheduled_at end;
  return true;
end
$fn$;

comment on function public.mp_schedule_function(text, text, text, jsonb, integer) is
  'Schedules an Edge Function of this project with pg_cron through mp_invoke_function (pg_net, Vault), and records when (mp_schedules).';

do $$
declare
  grantee_role text;
begin
  revoke all on function public.mp_schedule_function(text, text, text, jsonb, integer) from public;
  revoke all on table public.mp_schedules from public;
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format(
        'revoke all on function public.mp_schedule_function(text, text, text, jsonb, integer) from %I',
        grantee_role);
      execute format('revoke all on table public.mp_schedules from %I', grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant select on table public.mp_schedules to service_role;
  end if;
end
$$;

-- The four jobs, exactly as …_mp_schedules.sql schedules them (so each gets its record).
select public.mp_schedule_function('mp-refresh', '*/10 * * * *', 'mp-refresh',
                                   '{"limit": 200}', 150000);
select public.mp_schedule_function('mp-reconcile', '* * * * *', 'mp-reconcile', '{}', 150000);
select public.mp_schedule_function('mp-probe', '* * * * *', 'mp-probe', '{}', 60000);
select public.mp_schedule_function('mp-deliver-events', '* * * * *', 'mp-deliver-events', '{}',
                                   60000);
