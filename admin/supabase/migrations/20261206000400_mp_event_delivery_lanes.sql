-- Admin DB: what mp-deliver-events needs to drain a burst with parallel runs (docs/events.md,
-- "Bursts"). A run that used its whole limit asks mp_delivery_backlog() how much is still due
-- and how many other runs are delivering right now (distinct lease owners of pending events:
-- a run holds leases while its batch is in flight), and starts that many successors of itself
-- at most. Parallel runs are safe: mp_claim_events() leases an event only when no earlier
-- pending event of its account exists, under `for update skip locked`.

-- The leases in flight: a small index (one row per event being attempted right now; a finished
-- attempt clears its lease), so counting the runs that deliver never scans the backlog.
create index if not exists mp_event_outbox_leased_idx on public.mp_event_outbox (lease_owner)
  where status = 'pending' and lease_owner is not null;

-- `due`: pending events due now and not leased, counted up to p_cap (so a burst of 100,000
-- costs a bounded scan); `active`: the runs holding live leases.
create or replace function public.mp_delivery_backlog(p_cap integer)
returns table (due integer, active integer)
language sql stable
set search_path = public, pg_temp
as $fn$
  select
    (select count(*) from (
       select 1 from public.mp_event_outbox c
        where c.status = 'pending' and c.next_attempt_at <= now()
          and (c.lease_until is null or c.lease_until <= now())
        limit greatest(least(p_cap, 100000), 0)) d)::integer,
    (select count(distinct l.lease_owner) from public.mp_event_outbox l
      where l.status = 'pending' and l.lease_owner is not null and l.lease_until > now())::integer
$fn$;

do $$
declare
  grantee_role text;
  fn text := 'public.mp_delivery_backlog(integer)';
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
