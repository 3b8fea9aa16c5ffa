-- Backend DB: mp-reconcile at a million accounts (docs/scale.md).
-- * mp_reconcile_drift: the drift the reconcile pass found at its last check of each linked
--   account and did not repair — a refresher owned the account, the repair failed, or the
--   client row is missing. Each run replaces the rows of the id range it checked, so
--   mp-health counts outstanding drift without scanning.
-- * mp_reconcile_runs: one row per run (counts only), kept two days, for mp-health's hourly
--   figures and the operators' history.
-- * mp-reconcile runs every minute: a run checks up to 50,000 accounts and 50,000 cached
--   clients (3,000,000 an hour), stopping earlier when its repair budget runs out, so every
--   account of a million is checked several times an hour and the drift found is repaired.
-- Idempotent and non-destructive; cron.schedule upserts by job name.

create table if not exists public.mp_reconcile_drift (
  account_id uuid primary key,
  client_id uuid not null,
  kind text not null check (kind in ('stale', 'empty', 'revoked_cached', 'ahead',
                                     'client_missing')),
  reason text not null check (reason in ('busy', 'failed', 'client_missing')),
  seen_at timestamptz not null default now()
);

comment on table public.mp_reconcile_drift is
  'mp-reconcile: drift found at the last check and not repaired (ids only, never a secret).';

create table if not exists public.mp_reconcile_runs (
  id bigint generated always as identity primary key,
  finished_at timestamptz not null default now(),
  checked integer not null,
  drifted integer not null,
  repaired integer not null,
  failed integer not null,
  skipped integer not null,
  wrapped boolean not null
);

create index if not exists mp_reconcile_runs_finished_at_idx
  on public.mp_reconcile_runs (finished_at);

comment on table public.mp_reconcile_runs is
  'mp-reconcile: what each run checked and repaired (counts only), kept two days.';

alter table public.mp_reconcile_cursor
  add column if not exists wrapped_at timestamptz;

comment on column public.mp_reconcile_cursor.wrapped_at is
  'When this scan last reached the end of the keyspace (a full pass ended).';

do $$
declare
  grantee_role text;
  tbl text;
begin
  foreach tbl in array array['public.mp_reconcile_drift', 'public.mp_reconcile_runs'] loop
    execute format('alter table %s enable row level security', tbl);
    execute format('revoke all on table %s from public', tbl);
    foreach grantee_role in array array['anon', 'authenticated'] loop
      if exists (select 1 from pg_roles where rolname = grantee_role) then
        execute format('revoke all on table %s from %I', tbl, grantee_role);
      end if;
    end loop;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant all on table %s to service_role', tbl);
    end if;
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
    '* * * * *',
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
