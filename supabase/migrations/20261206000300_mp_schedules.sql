-- Backend DB: every scheduled function through ONE SQL helper (docs/atomic-state.md,
-- "Schedules"). public.mp_schedule_function(job, schedule, function, body, timeout) holds the
-- guard every schedule needs — pg_cron works only in the database named by
-- `cron.database_name` (`postgres` on Supabase) and only when preloaded; anywhere else it
-- warns and schedules nothing rather than failing (the setting is readable only by a
-- superuser or a member of pg_read_all_settings; anyone else assumes `postgres`) — creates
-- pg_cron (`with schema pg_catalog`) and pg_net (`with schema extensions`) where missing, and
-- upserts the job by name with a command that calls public.mp_invoke_function (…_mp_probe_cron.sql:
-- pg_net, the project URL and the secret key from Vault, the key in `apikey` as Supabase asks
-- of server callers with `sb_secret_…` keys, and as `Authorization: Bearer`).
-- The jobs of mp-refresh and mp-reconcile are scheduled again through it, so their calls carry
-- the `apikey` header too; mp-probe and mp-deliver-events are scheduled by it for the first
-- time. Idempotent: cron.schedule upserts by job name.

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
  perform cron.schedule(
    p_job,
    p_schedule,
    format('select public.mp_invoke_function(%L, %L::jsonb, %s)', p_function, p_body::text,
           p_timeout_ms)
  );
  return true;
end
$fn$;

comment on function public.mp_schedule_function(text, text, text, jsonb, integer) is
  'Schedules an Edge Function of this project with pg_cron through mp_invoke_function (pg_net, Vault).';

revoke all on function public.mp_schedule_function(text, text, text, jsonb, integer) from public;
do $$
declare
  grantee_role text;
begin
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format(
        'revoke all on function public.mp_schedule_function(text, text, text, jsonb, integer) from %I',
        grantee_role);
    end if;
  end loop;
end
$$;

-- mp-refresh: every 10 minutes, a run of up to 200 accounts; the call may take a whole run.
select public.mp_schedule_function('mp-refresh', '*/10 * * * *', 'mp-refresh',
                                   '{"limit": 200}', 150000);
-- mp-reconcile: every minute, one slice from its saved cursor.
select public.mp_schedule_function('mp-reconcile', '* * * * *', 'mp-reconcile', '{}', 150000);
-- mp-probe: every minute, one slice of tokens verified at MercadoPago.
select public.mp_schedule_function('mp-probe', '* * * * *', 'mp-probe', '{}', 60000);
-- mp-deliver-events: every minute, what is due of the event outbox (docs/events.md); the
-- functions that change a connection also deliver in the background of their own request, so
-- the schedule is the safety net and the retry clock.
select public.mp_schedule_function('mp-deliver-events', '* * * * *', 'mp-deliver-events', '{}',
                                   60000);
