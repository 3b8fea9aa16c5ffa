-- Backend DB: schedule mp-refresh every 10 minutes with pg_cron and pg_net (docs/contract.md, mp-refresh).
-- The project URL and the server key come from two Vault secrets an operator creates once:
--   select vault.create_secret('https://<project-ref>.supabase.co', 'project_url');
--   select vault.create_secret('<a secret key of the project>', 'mp_sync_secret_key');
-- pg_net's default 2 s timeout would cut a run short: mp-refresh answers after its run
-- (it stops starting refreshes after ~100 s), so the request may take up to the Edge
-- Functions wall clock of 150 s. cron.schedule upserts the job by name: re-running this is
-- harmless.
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
    raise warning 'pg_cron is not usable in database %: mp-refresh is not scheduled',
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
    'mp-refresh',
    '*/10 * * * *',
    $cmd$
    select net.http_post(
      url := (select decrypted_secret from vault.decrypted_secrets where name = 'project_url')
             || '/functions/v1/mp-refresh',
      headers := jsonb_build_object(
        'Content-Type', 'application/json',
        'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets
                                        where name = 'mp_sync_secret_key')),
      body := '{"limit": 200}'::jsonb,
      timeout_milliseconds := 150000
    )
    $cmd$
  );
end
$do$;
