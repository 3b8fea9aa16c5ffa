-- Backend DB: schedule mp-reconcile hourly with pg_cron and pg_net (docs/contract.md, mp-reconcile).
-- Same Vault secrets as the refresh schedule, created once by an operator:
--   select vault.create_secret('https://<project-ref>.supabase.co', 'project_url');
--   select vault.create_secret('<a secret key of the project>', 'mp_sync_secret_key');
-- Both are read when the job runs, so rotating the key is a vault.update_secret away.
-- A run checks every linked account by version (a few queries per 5,000 accounts) and
-- repairs at most 10,000 (its default limit); the 150 s timeout is the Edge Functions wall
-- clock. At minute 37, away from the refresh runs at :00/:10/… . cron.schedule upserts the
-- job by name: re-running this is harmless.
--
-- pg_cron works only in the database named by `cron.database_name` (`postgres` on Supabase)
-- and only when preloaded; in any other database (a scratch copy, a branch without it) this
-- migration warns and schedules nothing rather than failing. The setting is readable only
-- by a superuser or a member of pg_read_all_settings; anyone else assumes `postgres`.
-- pg_cron goes where Supabase documents it (`with schema pg_catalog`; its objects live in
-- the `cron` schema), and pg_net `with schema extensions`.

do $do$
declare
  cron_db text := 'postgres';
begin
  if pg_has_role(current_user, 'pg_read_all_settings', 'usage') then
    cron_db := coalesce(current_setting('cron.database_name', true), cron_db);
  end if;
  if not exists (select 1 from pg_extension where extname = 'pg_cron')
     and cron_db <> current_database() then
    raise warning 'pg_cron is not usable in database %: mp-reconcile is not scheduled',
      current_database();
    return;
  end if;
  create extension if not exists pg_cron with schema pg_catalog;

  -- pg_net owns the `net` schema; where something already provides it (the real extension,
  -- or the local stack's stand-in) there is nothing to create.
  if not exists (select 1 from pg_namespace where nspname = 'net') then
    create extension if not exists pg_net with schema extensions;
  end if;

  perform cron.schedule(
    'mp-reconcile',
    '37 * * * *',
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
end
$do$;
