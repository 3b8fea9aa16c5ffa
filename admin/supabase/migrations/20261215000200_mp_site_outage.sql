-- Admin DB: one country's MercadoPago failing never takes another's turn (docs/contract.md,
-- "Applications and sites"). A run that stops calling one application (its circuit breaker
-- opened, or it is paused after a 429) leaves that site's claimed accounts untouched; released,
-- they would be the first claimed again by the next runs (the earliest due, the least recently
-- verified) and fill every run's slice while the outage lasts, so the other sites' accounts would
-- wait. With several applications, the functions defer them instead:
-- * mp_defer_refreshes: the spared accounts' next refresh attempt waits `p_retry_after`, their
--   last error says why, and their failing time starts (3 days of it is `at_risk`,
--   `refresh_failing`, as for any refresh that keeps failing); no send is counted (none left);
--   only while `p_owner` holds the lease, which it releases.
-- * mp_defer_probes: the spared tokens' probe lease is kept for `p_wait`, so no probe run claims
--   them before then.
-- Idempotent: `create or replace` only.

create or replace function public.mp_defer_refreshes(
  p_owner uuid,
  p_ids uuid[],
  p_error text,
  p_retry_after interval
) returns integer
language sql volatile
set search_path = public, pg_temp
as $fn$
  with upd as (
    update public.nv_accounts
       set mp_refresh_next_attempt_at = now() + p_retry_after,
           mp_refresh_last_error = left(p_error, 64),
           mp_refresh_failing_since = coalesce(mp_refresh_failing_since, now()),
           mp_refresh_lease_owner = null,
           mp_refresh_lease_expires_at = null,
           mp_updated_at = now()
     where id = any (p_ids) and mp_refresh_lease_owner = p_owner
    returning 1)
  select count(*)::integer from upd
$fn$;

create or replace function public.mp_defer_probes(p_ids uuid[], p_wait interval)
returns integer
language sql volatile
set search_path = public, pg_temp
as $fn$
  with upd as (
    update public.nv_accounts set mp_probe_lease_until = now() + p_wait
     where id = any (p_ids) and mp_probe_lease_until is not null
    returning 1)
  select count(*)::integer from upd
$fn$;

do $$
declare
  grantee_role text;
  fn text;
begin
  foreach fn in array array[
    'public.mp_defer_refreshes(uuid, uuid[], text, interval)',
    'public.mp_defer_probes(uuid[], interval)'
  ] loop
    execute format('revoke all on function %s from public', fn);
    foreach grantee_role in array array['anon', 'authenticated'] loop
      if exists (select 1 from pg_roles where rolname = grantee_role) then
        execute format('revoke all on function %s from %I', fn, grantee_role);
      end if;
    end loop;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant execute on function %s to service_role', fn);
    end if;
  end loop;
end
$$;
