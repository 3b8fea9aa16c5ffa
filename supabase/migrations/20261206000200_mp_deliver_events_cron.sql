-- Backend DB: schedule mp-deliver-events every minute (SPEC §10; docs/events.md) through
-- public.mp_invoke_function (…_mp_probe_cron.sql). A run delivers up to its limit of due
-- events within its time budget (well inside the 60 s the pg_net call waits); the functions
-- that change a connection also deliver in the background of their own request, so the
-- schedule is the safety net and the retry clock. Same guards as …_mp_probe_cron.sql.
-- Idempotent (cron.schedule upserts by name).

do $do$
declare
  cron_db text := 'postgres';
begin
  if pg_has_role(current_user, 'pg_read_all_settings', 'usage') then
    cron_db := coalesce(current_setting('cron.database_name', true), cron_db);
  end if;
  if not exists (select 1 from pg_extension where extname = 'pg_cron')
     and cron_db <> current_database() then
    raise warning 'pg_cron is not usable in database %: mp-deliver-events is not scheduled',
      current_database();
    return;
  end if;
  create extension if not exists pg_cron with schema pg_catalog;
  if not exists (select 1 from pg_namespace where nspname = 'net') then
    create extension if not exists pg_net with schema extensions;
  end if;
  perform cron.schedule(
    'mp-deliver-events',
    '* * * * *',
    $cmd$select public.mp_invoke_function('mp-deliver-events', '{}'::jsonb, 60000)$cmd$
  );
end
$do$;
