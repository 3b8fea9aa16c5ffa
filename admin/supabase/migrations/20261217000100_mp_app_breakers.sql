-- Admin DB: each application's circuit breaker outlives the run that opened it (docs/contract.md,
-- "Applications and sites"; docs/invariants.md, invariant 3). A run stops calling one site's
-- MercadoPago after 3 unknown outcomes in a row; without a memory every run (every 10 minutes)
-- started closed and spent ~10 more unknown outcomes on a site known down. Now:
-- * mp_app_breakers: one row per site whose breaker ever opened. `open_until` null: closed; in the
--   future: open (no run calls that application); past: half open (the next run to claim the trial
--   makes one call). `opens`: consecutive opens since it last closed (the backoff doubles with
--   each: 10 minutes, 20, 40, 80, then 2 hours; the caller passes the schedule). `trial_owner`: the
--   run holding the half-open trial.
-- * mp_open_app_breaker: a run's breaker opened; persisted unless it is open already (two runs
--   opening it together count one open).
-- * mp_claim_app_breaker_trial: compare-and-set (`where open_until <= now()`): exactly one run wins
--   the trial; it holds the breaker open for `p_hold` (longer than a run) meanwhile.
-- * mp_end_app_breaker_trial: the trial's answer: closed (a usable answer) or opened again with the
--   next backoff (an unknown outcome); only by the run holding the trial.
-- Not exposed: RLS on, no grant to anon/authenticated; service_role only.
-- Idempotent: `create table if not exists`, `create or replace`.

create table if not exists public.mp_app_breakers (
  site_id text primary key,
  opens integer not null default 0,
  open_until timestamptz,
  opened_at timestamptz,
  trial_owner uuid,
  changed_at timestamptz not null default now()
);

comment on table public.mp_app_breakers is
  'The circuit breaker of each MercadoPago application (by site) across refresh runs: open_until null closed, future open, past half open (one trial); opens: consecutive opens.';

-- A run's breaker for `p_site` opened: open for the backoff of its next consecutive open
-- (`p_backoffs[n]`, the last one for any later n), unless it is open or its trial is held already.
-- Returns the new `open_until`, or null when it was open already.
create or replace function public.mp_open_app_breaker(p_site text, p_backoffs interval[])
returns timestamptz
language sql volatile
set search_path = public, pg_temp
as $fn$
  insert into public.mp_app_breakers as b (site_id, opens, open_until, opened_at, changed_at)
  values (p_site, 1, now() + p_backoffs[1], now(), now())
  on conflict (site_id) do update
     set opens = b.opens + 1,
         open_until = now() + p_backoffs[least(b.opens + 1, cardinality(p_backoffs))],
         opened_at = now(),
         trial_owner = null,
         changed_at = now()
   where b.open_until is null or b.open_until <= now()
  returning open_until
$fn$;

-- Claims the half-open trial of `p_site` for run `p_owner`: only once the backoff is over, and
-- only one run (compare-and-set); the breaker stays open for `p_hold` while the trial runs.
create or replace function public.mp_claim_app_breaker_trial(
  p_site text,
  p_owner uuid,
  p_hold interval
) returns boolean
language sql volatile
set search_path = public, pg_temp
as $fn$
  with upd as (
    update public.mp_app_breakers
       set open_until = now() + p_hold, trial_owner = p_owner, changed_at = now()
     where site_id = p_site and open_until <= now()
    returning 1)
  select exists (select 1 from upd)
$fn$;

-- The answer of the trial `p_owner` holds: `p_ok` closes the breaker (its opens start again);
-- else it opens again for the backoff of its next consecutive open. Returns the new
-- `open_until` (null: closed, or not this run's trial).
create or replace function public.mp_end_app_breaker_trial(
  p_site text,
  p_owner uuid,
  p_ok boolean,
  p_backoffs interval[]
) returns timestamptz
language sql volatile
set search_path = public, pg_temp
as $fn$
  update public.mp_app_breakers b
     set opens = case when p_ok then 0 else b.opens + 1 end,
         open_until = case when p_ok then null
                      else now() + p_backoffs[least(b.opens + 1, cardinality(p_backoffs))] end,
         opened_at = case when p_ok then b.opened_at else now() end,
         trial_owner = null,
         changed_at = now()
   where b.site_id = p_site and b.trial_owner = p_owner
  returning b.open_until
$fn$;

do $$
declare
  grantee_role text;
  fn text;
begin
  alter table public.mp_app_breakers enable row level security;
  foreach grantee_role in array array['anon', 'authenticated', 'public'] loop
    if grantee_role = 'public' or exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on table public.mp_app_breakers from %s', grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.mp_app_breakers to service_role;
  end if;

  foreach fn in array array[
    'public.mp_open_app_breaker(text, interval[])',
    'public.mp_claim_app_breaker_trial(text, uuid, interval)',
    'public.mp_end_app_breaker_trial(text, uuid, boolean, interval[])'
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
