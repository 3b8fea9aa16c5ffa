-- Admin DB: every country MercadoPago serves (docs/contract.md "Applications and sites").
-- * nv_accounts.mp_site_id: the site (MLA, MLB, MLM, MLC, MCO, MLU, MPE) of the MercadoPago
--   application an account is connected through; every connect writes it (mp_save_connection
--   with p_site_id), so it is not null once connected from now on. A migration cannot read the
--   functions' environment, so an account connected before this migration keeps a null site,
--   which the functions read as "the configuration's default site" (MP_SITE_ID, the single
--   app's) — the application that connected it — and which mp-refresh then writes down, a
--   bounded batch per run (mp_adopt_default_site), so events and totals name it too.
-- * mp_oauth_states.site_id: the site a connect was started for; the callback exchanges the
--   code with that site's application (null: a state started before this migration, the
--   default site's).
-- * mp_site_state_totals: accounts per site and connection state, kept by statement triggers
--   as mp_state_totals is (constant-time per-site figures for mp-health at any size); site ''
--   holds the accounts without a site (the default site's, until adopted).
-- * Events carry data.site_id (null only for an account not adopted yet).
-- Idempotent and non-destructive: `if not exists`, `create or replace`, guarded DO blocks; no
-- existing value is rewritten (the adoption only fills nulls, from the functions).

alter table public.nv_accounts add column if not exists mp_site_id text;
alter table public.mp_oauth_states add column if not exists site_id text;

comment on column public.nv_accounts.mp_site_id is
  'MercadoPago site of the application the account is connected through (MLA, MLB, …); null: connected before sites were stored, served by the configured default site.';

do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'nv_accounts_mp_site_id_check'
                   and conrelid = 'public.nv_accounts'::regclass) then
    alter table public.nv_accounts add constraint nv_accounts_mp_site_id_check
      check (mp_site_id in ('MLA', 'MLB', 'MLM', 'MLC', 'MCO', 'MLU', 'MPE'));
  end if;
  if not exists (select 1 from pg_constraint where conname = 'mp_oauth_states_site_id_check'
                   and conrelid = 'public.mp_oauth_states'::regclass) then
    alter table public.mp_oauth_states add constraint mp_oauth_states_site_id_check
      check (site_id in ('MLA', 'MLB', 'MLM', 'MLC', 'MCO', 'MLU', 'MPE'));
  end if;
end
$$;

-- The accounts the adoption has yet to give a site (once connected: version > 0).
create index if not exists nv_accounts_mp_site_unset_idx on public.nv_accounts (id)
  where mp_site_id is null and mp_token_version > 0;
-- Per-site expiring counts: the range of the expiring accounts, read from the index alone.
create index if not exists nv_accounts_mp_expiring_site_idx
  on public.nv_accounts (mp_token_expires_at, mp_site_id) where mp_state in ('connected', 'at_risk');

-- ---- Connect: the site written with the connection, in the same statement ----

-- As the 9-argument mp_save_connection (…_mp_connection_state.sql), plus the site the connect
-- went through (null keeps the stored one), and the site returned with the row.
create or replace function public.mp_save_connection(
  p_account_id uuid,
  p_user_id bigint,
  p_access_token_encrypted text,
  p_refresh_token_encrypted text,
  p_public_key text,
  p_expires_in integer,
  p_live_mode boolean,
  p_scope text,
  p_replace_seller boolean,
  p_site_id text
) returns table (
  result text,
  id uuid,
  backend_client_id uuid,
  mp_connected boolean,
  mp_access_token_encrypted text,
  mp_public_key text,
  mp_token_version bigint,
  mp_token_expires_at timestamptz,
  other_account_id uuid,
  mp_site_id text
)
language plpgsql
set search_path = public, pg_temp
as $fn$
#variable_conflict use_column
declare
  other uuid;
  current_seller bigint;
begin
  perform pg_advisory_xact_lock(hashtextextended('mp_user_id:' || p_user_id::text, 0));
  select a.mp_user_id into current_seller from public.nv_accounts a
   where a.id = p_account_id for update;
  if not found then
    return query select 'account_not_found'::text, p_account_id, null::uuid, false, null::text,
      null::text, null::bigint, null::timestamptz, null::uuid, null::text;
    return;
  end if;
  if current_seller is not null and current_seller <> p_user_id and not p_replace_seller then
    return query select 'seller_mismatch'::text, p_account_id, null::uuid, false, null::text,
      null::text, null::bigint, null::timestamptz, null::uuid, null::text;
    return;
  end if;
  select a.id into other
    from public.nv_accounts a
   where a.mp_user_id = p_user_id and a.id <> p_account_id and coalesce(a.mp_connected, false)
   limit 1;
  if other is not null then
    return query select 'mp_account_in_use'::text, p_account_id, null::uuid, false, null::text,
      null::text, null::bigint, null::timestamptz, other, null::text;
    return;
  end if;
  return query
    update public.nv_accounts a set
      mp_connected = true,
      mp_user_id = p_user_id,
      mp_site_id = coalesce(p_site_id, a.mp_site_id),
      mp_access_token_encrypted = p_access_token_encrypted,
      mp_refresh_token = p_refresh_token_encrypted,
      mp_public_key = p_public_key,
      mp_expires_in = p_expires_in,
      mp_token_expires_at = now() + make_interval(secs => p_expires_in),
      mp_live_mode = p_live_mode,
      mp_scope = p_scope,
      mp_token_version = a.mp_token_version + 1,
      mp_needs_reauth = false,
      mp_reauth_reason = null,
      mp_revoke_reason = null,
      mp_refresh_failures = 0,
      mp_refresh_next_attempt_at = null,
      mp_refresh_last_error = null,
      mp_refresh_lease_owner = null,
      mp_refresh_lease_expires_at = null,
      mp_refresh_sends = 0,
      mp_refresh_unconfirmed_at = null,
      mp_refresh_failing_since = null,
      mp_verified_at = now(),
      mp_report_verdict = null,
      mp_connected_at = now(),
      mp_updated_at = now()
    where a.id = p_account_id
    returning 'connected'::text, a.id, a.backend_client_id, a.mp_connected,
      a.mp_access_token_encrypted, a.mp_public_key, a.mp_token_version, a.mp_token_expires_at,
      null::uuid, a.mp_site_id;
end
$fn$;

-- The 9-argument form (callers from before sites) is the same connect, keeping the stored site.
create or replace function public.mp_save_connection(
  p_account_id uuid,
  p_user_id bigint,
  p_access_token_encrypted text,
  p_refresh_token_encrypted text,
  p_public_key text,
  p_expires_in integer,
  p_live_mode boolean,
  p_scope text,
  p_replace_seller boolean
) returns table (
  result text,
  id uuid,
  backend_client_id uuid,
  mp_connected boolean,
  mp_access_token_encrypted text,
  mp_public_key text,
  mp_token_version bigint,
  mp_token_expires_at timestamptz,
  other_account_id uuid
)
language sql
set search_path = public, pg_temp
as $fn$
  select s.result, s.id, s.backend_client_id, s.mp_connected, s.mp_access_token_encrypted,
         s.mp_public_key, s.mp_token_version, s.mp_token_expires_at, s.other_account_id
    from public.mp_save_connection(p_account_id, p_user_id, p_access_token_encrypted,
      p_refresh_token_encrypted, p_public_key, p_expires_in, p_live_mode, p_scope,
      p_replace_seller, null::text) s
$fn$;

-- ---- Accounts connected before sites: the default site, written down by the functions ----

-- Gives up to p_limit once-connected accounts without a site the site p_site (the
-- configuration's default, whose application served them); how many it gave one.
create or replace function public.mp_adopt_default_site(p_site text, p_limit integer)
returns integer
language sql volatile
set search_path = public, pg_temp
as $fn$
  with due as (
    select n.id from public.nv_accounts n
     where n.mp_site_id is null and n.mp_token_version > 0
     order by n.id
     limit greatest(p_limit, 0)
     for update skip locked),
  upd as (
    update public.nv_accounts a set mp_site_id = p_site
      from due where a.id = due.id and a.mp_site_id is null
    returning 1)
  select count(*)::integer from upd
$fn$;

-- ---- Accounts per site and state, kept by statement triggers ----

create table if not exists public.mp_site_state_totals (
  site_id text not null,
  state text not null,
  accounts bigint not null default 0,
  primary key (site_id, state)
);

comment on table public.mp_site_state_totals is
  'Accounts per site and connection state, kept by statement triggers on nv_accounts; site '''' holds the accounts without a site.';

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
    on conflict (site_id, state) do update set accounts = t.accounts + excluded.accounts;
  elsif tg_op = 'DELETE' then
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
    on conflict (site_id, state) do update set accounts = t.accounts + excluded.accounts;
  end if;
  return null;
end
$fn$;

create or replace function public.mp_site_state_totals_truncated()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
begin
  update public.mp_site_state_totals set accounts = 0;
  return null;
end
$fn$;

-- Recounts the per-site counters from the table (locks out writers while it counts).
create or replace function public.mp_recount_site_state_totals()
returns void
language plpgsql
set search_path = public, pg_temp
as $fn$
begin
  lock table public.nv_accounts in share mode;
  update public.mp_site_state_totals set accounts = 0;
  insert into public.mp_site_state_totals as t (site_id, state, accounts)
  select coalesce(mp_site_id, ''), mp_state, count(*) from public.nv_accounts group by 1, 2
  on conflict (site_id, state) do update set accounts = excluded.accounts;
end
$fn$;

drop trigger if exists mp_site_state_totals_insert on public.nv_accounts;
create trigger mp_site_state_totals_insert after insert on public.nv_accounts
  referencing new table as new_rows
  for each statement execute function public.mp_site_state_totals_change();
drop trigger if exists mp_site_state_totals_update on public.nv_accounts;
create trigger mp_site_state_totals_update after update on public.nv_accounts
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.mp_site_state_totals_change();
drop trigger if exists mp_site_state_totals_delete on public.nv_accounts;
create trigger mp_site_state_totals_delete after delete on public.nv_accounts
  referencing old table as old_rows
  for each statement execute function public.mp_site_state_totals_change();
drop trigger if exists mp_site_state_totals_truncate on public.nv_accounts;
create trigger mp_site_state_totals_truncate after truncate on public.nv_accounts
  for each statement execute function public.mp_site_state_totals_truncated();

select public.mp_recount_site_state_totals();

-- ---- Events carry the account's site ----

-- The payload of the 9-argument mp_event_payload (…_mp_event_outbox.sql) with data.site_id
-- (always present; null for an account without a site yet). Pure.
create or replace function public.mp_event_payload(
  p_type text,
  p_at timestamptz,
  p_account_id uuid,
  p_client_id uuid,
  p_user_id bigint,
  p_state text,
  p_reason text,
  p_deadline timestamptz,
  p_version bigint,
  p_site_id text
) returns jsonb
language sql
immutable
set search_path = public, pg_temp
as $fn$
  select jsonb_set(
    public.mp_event_payload(p_type, p_at, p_account_id, p_client_id, p_user_id, p_state,
                            p_reason, p_deadline, p_version),
    '{data,site_id}', coalesce(to_jsonb(p_site_id), 'null'::jsonb))
$fn$;

-- The three writers of events, as in …_mp_event_outbox.sql, with the site.
create or replace function public.mp_connection_state_event()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
declare
  t text := public.mp_event_type(old.mp_state, new.mp_state, old.mp_user_id, new.mp_user_id,
                                 new.mp_state_reason);
begin
  if t is null then
    return new;
  end if;
  new.mp_event_seq := coalesce(old.mp_event_seq, 0) + 1;
  insert into public.mp_event_outbox (account_id, seq, type, payload)
  values (new.id, new.mp_event_seq, t,
          public.mp_event_payload(t, now(), new.id, new.backend_client_id, new.mp_user_id,
            new.mp_state, new.mp_state_reason,
            public.mp_event_deadline(new.mp_state, new.mp_access_token_encrypted is not null,
                                     new.mp_token_expires_at),
            new.mp_token_version, new.mp_site_id));
  return new;
end
$fn$;

create or replace function public.mp_event_outbox_inserted()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
begin
  insert into public.mp_event_outbox (account_id, seq, type, payload)
  select n.id, n.mp_event_seq, e.t,
         public.mp_event_payload(e.t, now(), n.id, n.backend_client_id, n.mp_user_id, n.mp_state,
           n.mp_state_reason,
           public.mp_event_deadline(n.mp_state, n.mp_access_token_encrypted is not null,
                                    n.mp_token_expires_at),
           n.mp_token_version, n.mp_site_id)
    from new_rows n
   cross join lateral (select public.mp_event_type(null, n.mp_state, null, n.mp_user_id,
                                                   n.mp_state_reason) as t) e
   where e.t is not null;
  return null;
end
$fn$;

create or replace function public.mp_flag_expiring_events(p_limit integer default 500)
returns integer
language sql
volatile
set search_path = public, pg_temp
as $fn$
  with due as (
    select a.id from public.nv_accounts a
     where a.mp_connected and a.mp_access_token_encrypted is not null
       and a.mp_token_expires_at < now() + interval '7 days'
       and a.mp_expiring_version is distinct from a.mp_token_version
     order by a.mp_token_expires_at
     limit greatest(p_limit, 0)
     for update skip locked),
  upd as (
    update public.nv_accounts a
       set mp_expiring_version = a.mp_token_version, mp_event_seq = a.mp_event_seq + 1
      from due where a.id = due.id
    returning a.id, a.mp_event_seq, a.backend_client_id, a.mp_user_id, a.mp_state,
              a.mp_state_reason, a.mp_token_expires_at, a.mp_token_version, a.mp_site_id),
  ins as (
    insert into public.mp_event_outbox (account_id, seq, type, payload)
    select u.id, u.mp_event_seq, 'mp.connection.expiring',
           public.mp_event_payload('mp.connection.expiring', now(), u.id, u.backend_client_id,
             u.mp_user_id, u.mp_state, u.mp_state_reason, u.mp_token_expires_at,
             u.mp_token_version, u.mp_site_id)
      from upd u
    returning 1)
  select count(*)::integer from ins
$fn$;

-- ---- Privileges: the site is an MP column; the new table and functions are the service's ----
do $$
declare
  grantee_role text;
  fn text;
begin
  foreach grantee_role in array array['anon', 'authenticated', 'public'] loop
    if grantee_role = 'public' or exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke select (mp_site_id), insert (mp_site_id), update (mp_site_id) '
                     'on table public.nv_accounts from %s', grantee_role);
      execute format('revoke select (site_id), insert (site_id), update (site_id) '
                     'on table public.mp_oauth_states from %s', grantee_role);
      execute format('revoke all on table public.mp_site_state_totals from %s', grantee_role);
    end if;
  end loop;
  alter table public.mp_site_state_totals enable row level security;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant select on table public.mp_site_state_totals to service_role;
  end if;

  foreach fn in array array[
    'public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text, boolean, text)',
    'public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text, boolean)',
    'public.mp_adopt_default_site(text, integer)',
    'public.mp_site_state_totals_change()',
    'public.mp_site_state_totals_truncated()',
    'public.mp_recount_site_state_totals()',
    'public.mp_event_payload(text, timestamptz, uuid, uuid, bigint, text, text, timestamptz, bigint, text)',
    'public.mp_connection_state_event()',
    'public.mp_event_outbox_inserted()',
    'public.mp_flag_expiring_events(integer)'
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
