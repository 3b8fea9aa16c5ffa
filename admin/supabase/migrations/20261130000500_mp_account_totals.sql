-- Admin DB: the totals mp-health reports, kept as counters instead of counted on each call
-- (docs/scale.md): at a million accounts a count(*) reads every row.
-- * mp_account_totals (one row): connected accounts and accounts needing re-authorization.
--   Statement-level triggers on nv_accounts add each statement's change; a statement that
--   changes neither (a refresh, a link) does not touch the row, so it is no hot spot.
-- * Expiring within 7 days stays a count, over the partial index on mp_token_expires_at
--   (only the accounts expiring in that window are read).
-- The trigger functions are security definer (owner: the migration's role), so a role allowed
-- to write nv_accounts needs no privilege on the counters.
-- The counters are filled from the table in the same transaction that creates the triggers
-- (creating a trigger locks out writers until commit), so no change is missed.
-- `select public.mp_recount_account_totals()` recounts them (e.g. after a bulk load with
-- triggers disabled). Idempotent.

create table if not exists public.mp_account_totals (
  id boolean primary key default true check (id),
  connected bigint not null default 0,
  needs_reauth bigint not null default 0,
  updated_at timestamptz not null default now()
);

comment on table public.mp_account_totals is
  'Counters of nv_accounts kept by triggers: connected, needing re-authorization.';

create or replace function public.mp_account_totals_change()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
declare
  d_connected bigint := 0;
  d_reauth bigint := 0;
  n bigint;
  r bigint;
begin
  if tg_op in ('UPDATE', 'DELETE') then
    select count(*) filter (where coalesce(mp_connected, false)),
           count(*) filter (where coalesce(mp_needs_reauth, false))
      into n, r from old_rows;
    d_connected := d_connected - n;
    d_reauth := d_reauth - r;
  end if;
  if tg_op in ('UPDATE', 'INSERT') then
    select count(*) filter (where coalesce(mp_connected, false)),
           count(*) filter (where coalesce(mp_needs_reauth, false))
      into n, r from new_rows;
    d_connected := d_connected + n;
    d_reauth := d_reauth + r;
  end if;
  if d_connected <> 0 or d_reauth <> 0 then
    update public.mp_account_totals
       set connected = connected + d_connected, needs_reauth = needs_reauth + d_reauth,
           updated_at = now()
     where id;
  end if;
  return null;
end
$fn$;

create or replace function public.mp_account_totals_truncated()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
begin
  update public.mp_account_totals set connected = 0, needs_reauth = 0, updated_at = now()
   where id;
  return null;
end
$fn$;

-- Recounts the counters from the table (locks out writers of nv_accounts while it counts).
create or replace function public.mp_recount_account_totals()
returns void
language plpgsql
set search_path = public, pg_temp
as $fn$
begin
  lock table public.nv_accounts in share mode;
  insert into public.mp_account_totals (id, connected, needs_reauth, updated_at)
  select true, count(*) filter (where coalesce(mp_connected, false)),
         count(*) filter (where coalesce(mp_needs_reauth, false)), now()
    from public.nv_accounts
  on conflict (id) do update
    set connected = excluded.connected, needs_reauth = excluded.needs_reauth,
        updated_at = excluded.updated_at;
end
$fn$;

drop trigger if exists mp_account_totals_insert on public.nv_accounts;
create trigger mp_account_totals_insert after insert on public.nv_accounts
  referencing new table as new_rows
  for each statement execute function public.mp_account_totals_change();

drop trigger if exists mp_account_totals_update on public.nv_accounts;
create trigger mp_account_totals_update after update on public.nv_accounts
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.mp_account_totals_change();

drop trigger if exists mp_account_totals_delete on public.nv_accounts;
create trigger mp_account_totals_delete after delete on public.nv_accounts
  referencing old table as old_rows
  for each statement execute function public.mp_account_totals_change();

drop trigger if exists mp_account_totals_truncate on public.nv_accounts;
create trigger mp_account_totals_truncate after truncate on public.nv_accounts
  for each statement execute function public.mp_account_totals_truncated();

select public.mp_recount_account_totals();

alter table public.mp_account_totals enable row level security;

do $$
declare
  grantee_role text;
begin
  revoke all on table public.mp_account_totals from public;
  revoke all on function public.mp_account_totals_change() from public;
  revoke all on function public.mp_account_totals_truncated() from public;
  revoke all on function public.mp_recount_account_totals() from public;
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on table public.mp_account_totals from %I', grantee_role);
      execute format('revoke all on function public.mp_recount_account_totals() from %I',
                     grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant select on table public.mp_account_totals to service_role;
  end if;
end
$$;
