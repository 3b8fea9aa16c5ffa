-- Backend DB: the public edges hardened, and the schedules that keep the cache in shape.
-- * anon/authenticated hold no TRUNCATE, TRIGGER or REFERENCES on the MP tables (clients:
--   …_api_roles_no_truncate.sql); row level security does not apply to TRUNCATE.
-- * mp-reconcile runs every 5 minutes: each run checks a bounded slice and continues where
--   the last stopped (mp_reconcile_cursor): 20,000 accounts a run, 240,000 an hour.
-- * A daily retention job deletes pg_cron's run history older than 7 days, which otherwise
--   grows forever with a job every 5 minutes.
-- Idempotent and non-destructive; cron.schedule upserts by job name.

do $$
declare
  grantee_role text;
  tbl text;
begin
  -- (clients itself: …_api_roles_no_truncate.sql)
  foreach tbl in array array['public.mp_refresh_escrow', 'public.mp_reconcile_cursor'] loop
    execute format('revoke truncate, trigger, references on table %s from public', tbl);
    foreach grantee_role in array array['anon', 'authenticated'] loop
      if exists (select 1 from pg_roles where rolname = grantee_role) then
        execute format('revoke truncate, trigger, references on table %s from %I', tbl, grantee_role);
      end if;
    end loop;
  end loop;
end
$$;

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
    raise warning 'pg_cron is not usable in database %: nothing is scheduled', current_database();
    return;
  end if;
  create extension if not exists pg_cron with schema pg_catalog;

  perform cron.schedule(
    'mp-reconcile',
    '*/5 * * * *',
    $cmd$
    select net.http_post(
      url := (select decrypted_secret from vault.decrypted_secrets where name = 'project_url')
             || '/functions/v1/mp-reconcile',
      headers := jsonb_build_object(
        'Content-Type', 'application/json',
        'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets
                                        where name = 'mp_sync_secret_key')),
      body := '{}'::jsonb,
      timeout_milliseconds := 150000
    )
    $cmd$
  );

  perform cron.schedule(
    'mp-retention',
    '23 3 * * *',
    $cmd$ delete from cron.job_run_details where end_time < now() - interval '7 days' $cmd$
  );
end
$do$;
