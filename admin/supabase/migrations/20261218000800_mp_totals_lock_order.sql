-- Admin DB: the per-state counters lock their rows in one order (docs/atomic-state.md).
-- The statement triggers of …_mp_connection_state.sql (mp_state_totals) and …_mp_sites.sql
-- (mp_site_state_totals) upserted each statement's changed counter rows in the order of an
-- unordered GROUP BY: a hash aggregate's order, which differs with the statement's row count
-- (the planner sizes the hash table from the transition table). Two concurrent statements
-- changing the same counters (e.g. one refresh recording an unknown outcome, connected ->
-- at_risk, while another run's many-row update moves accounts between the same states) could
-- so take the same two rows in opposite orders: `deadlock detected` (40P01), one of them
-- failing. Every branch now takes its counter rows in key order (state; site then state).
-- Idempotent: `create or replace` only.

create or replace function public.mp_state_totals_change()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
begin
  if tg_op = 'INSERT' then
    insert into public.mp_state_totals as t (state, accounts)
    select mp_state, count(*) from new_rows group by mp_state order by mp_state
    on conflict (state) do update set accounts = t.accounts + excluded.accounts;
  elsif tg_op = 'DELETE' then
    perform 1 from public.mp_state_totals t
      where t.state in (select mp_state from old_rows)
      order by t.state for update;
    update public.mp_state_totals t set accounts = t.accounts - d.n
      from (select mp_state, count(*) as n from old_rows group by mp_state) d
     where t.state = d.mp_state;
  else
    insert into public.mp_state_totals as t (state, accounts)
    select s, sum(n) from (
      select mp_state as s, -count(*) as n from old_rows group by mp_state
      union all
      select mp_state, count(*) from new_rows group by mp_state) x
     group by s having sum(n) <> 0
     order by s
    on conflict (state) do update set accounts = t.accounts + excluded.accounts;
  end if;
  return null;
end
$fn$;

create or replace function public.mp_site_state_totals_change()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
begin
  if tg_op = 'INSERT' then
    insert into public.mp_site_state_totals as t (site_id, state, accounts)
    select coalesce(mp_site_id, ''), mp_state, count(*) from new_rows group by 1, 2
     order by 1, 2
    on conflict (site_id, state) do update set accounts = t.accounts + excluded.accounts;
  elsif tg_op = 'DELETE' then
    perform 1 from public.mp_site_state_totals t
      where (t.site_id, t.state) in (select coalesce(mp_site_id, ''), mp_state from old_rows)
      order by t.site_id, t.state for update;
    update public.mp_site_state_totals t set accounts = t.accounts - d.n
      from (select coalesce(mp_site_id, '') as site_id, mp_state, count(*) as n
              from old_rows group by 1, 2) d
     where t.site_id = d.site_id and t.state = d.mp_state;
  else
    insert into public.mp_site_state_totals as t (site_id, state, accounts)
    select site_id, s, sum(n) from (
      select coalesce(mp_site_id, '') as site_id, mp_state as s, -count(*) as n
        from old_rows group by 1, 2
      union all
      select coalesce(mp_site_id, ''), mp_state, count(*) from new_rows group by 1, 2) x
     group by site_id, s having sum(n) <> 0
     order by site_id, s
    on conflict (site_id, state) do update set accounts = t.accounts + excluded.accounts;
  end if;
  return null;
end
$fn$;
