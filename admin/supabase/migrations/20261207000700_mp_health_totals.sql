-- Admin DB: what mp-health needs for its one-definition totals and its `ok` (docs/contract.md,
-- "mp-reconcile / mp-health"; docs/scale.md, "mp-health").
-- * expiring_7d is defined by the connection state: accounts in state `connected` or `at_risk`
--   whose served token expires within 7 days (or has expired). A partial index over exactly
--   those accounts' expiry keeps it a range count of the accounts in that window.
-- * mp_event_outbox_totals() also answers `failed_24h` (events that failed in the last 24 hours,
--   a range over the failed index on failed_at) and, as `last_error`, the latest error of a
--   pending event, else of an event failed in the last 24 hours.
-- Idempotent and non-destructive: `create index if not exists`; the totals function (it holds
-- no data) is dropped and created again because its result type changes.

create index if not exists nv_accounts_mp_expiring_by_state_idx
  on public.nv_accounts (mp_token_expires_at) where mp_state in ('connected', 'at_risk');

drop function if exists public.mp_event_outbox_totals();
create function public.mp_event_outbox_totals()
returns table (
  pending bigint,
  oldest_pending_at timestamptz,
  failed bigint,
  failed_24h bigint,
  last_error text
)
language sql stable
set search_path = public, pg_temp
as $fn$
  select (select count(*) from public.mp_event_outbox where status = 'pending'),
         (select min(created_at) from public.mp_event_outbox where status = 'pending'),
         (select count(*) from public.mp_event_outbox where status = 'failed'),
         (select count(*) from public.mp_event_outbox
           where status = 'failed' and failed_at > now() - interval '24 hours'),
         coalesce(
           (select e.last_error from public.mp_event_outbox e
             where e.status = 'pending' and e.last_error is not null
             order by e.next_attempt_at desc limit 1),
           (select e.last_error from public.mp_event_outbox e
             where e.status = 'failed' and e.failed_at > now() - interval '24 hours'
             order by e.failed_at desc limit 1))
$fn$;

do $$
declare
  grantee_role text;
  fn text := 'public.mp_event_outbox_totals()';
begin
  execute format('revoke all on function %s from public', fn);
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on function %s from %I', fn, grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    execute format('grant execute on function %s to service_role', fn);
  end if;
end
$$;
