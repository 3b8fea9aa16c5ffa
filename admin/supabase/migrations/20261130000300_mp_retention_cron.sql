-- Admin DB: the daily retention job (see mp_prune_retention in 20261130000100). To keep the
-- audit trail longer than 400 days, reschedule it with a larger p_audit_days, e.g.
--   select cron.schedule('mp-retention', '17 3 * * *',
--     'select * from public.mp_prune_retention(p_audit_days => 730)');
-- pg_cron works only in the database named by `cron.database_name` (`postgres` on Supabase)
-- and only when preloaded; elsewhere this warns and schedules nothing. cron.schedule
-- upserts by name: re-running this is harmless.

do $do$
declare
  cron_db text := 'postgres';
begin
  -- The setting is readable only by a superuser or pg_read_all_settings; others assume postgres.
  if pg_has_role(current_user, 'pg_read_all_settings', 'usage') then
    cron_db := coalesce(current_setting('cron.database_name', true), cron_db);
  end if;
  if not exists (select 1 from pg_extension where extname = 'pg_cron')
     and cron_db <> current_database() then
    raise warning 'pg_cron is not usable in database %: mp-retention is not scheduled',
      current_database();
    return;
  end if;
  create extension if not exists pg_cron with schema pg_catalog;
  perform cron.schedule(
    'mp-retention',
    '17 3 * * *',
    $cmd$ select * from public.mp_prune_retention() $cmd$
  );
end
$do$;
