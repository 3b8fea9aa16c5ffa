-- Backend DB: the call every schedule makes (…_mp_schedules.sql schedules mp-probe and the
-- others with it): public.mp_invoke_function(name, body,
-- timeout) posts to `<project_url>/functions/v1/<name>` with pg_net, reading the project URL
-- and the server key from the Vault secrets `project_url` and `mp_sync_secret_key`, and sends
-- the key in the `apikey` header (as Supabase asks of server callers with the new
-- `sb_secret_…` keys) and as `Authorization: Bearer` (what legacy keys use).
-- mp-probe checks up to 200 tokens a run at 10 calls a second (~20 s): 288,000 a day, so a
-- million accounts are each verified well within MP_PROBE_INTERVAL_DAYS (7).
-- Idempotent.

create or replace function public.mp_invoke_function(
  p_function text,
  p_body jsonb default '{}'::jsonb,
  p_timeout_ms integer default 60000
) returns bigint
language plpgsql
set search_path = public, pg_temp
as $fn$
declare
  key text := (select decrypted_secret from vault.decrypted_secrets where name = 'mp_sync_secret_key');
begin
  return net.http_post(
    url := (select decrypted_secret from vault.decrypted_secrets where name = 'project_url')
           || '/functions/v1/' || p_function,
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'apikey', key,
      'Authorization', 'Bearer ' || key),
    body := p_body,
    timeout_milliseconds := p_timeout_ms
  );
end
$fn$;

comment on function public.mp_invoke_function(text, jsonb, integer) is
  'Calls an Edge Function of this project from pg_cron (pg_net), with the server key from Vault.';

revoke all on function public.mp_invoke_function(text, jsonb, integer) from public;
do $$
declare
  grantee_role text;
begin
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on function public.mp_invoke_function(text, jsonb, integer) from %I',
                     grantee_role);
    end if;
  end loop;
end
$$;
