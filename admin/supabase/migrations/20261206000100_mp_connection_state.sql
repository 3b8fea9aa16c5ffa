-- Admin DB: the connection's lifecycle beyond our walls (docs/contract.md "Connection states";
-- docs/invariants.md, invariants 3, 6 and 9).
-- * One connection state per account — connected, at_risk, reauth_required, revoked,
--   not_connected — derived in ONE place, mp_derive_connection_state(), and kept in
--   nv_accounts.mp_state/mp_state_reason by a row trigger, so every statement that changes an
--   account changes its state in the same statement. mp_state_totals counts accounts per
--   state (statement triggers, as mp_account_totals does).
-- * A refresh token is sent at most once: mp_begin_refresh_call() counts, before the request
--   leaves, every request that may reach MercadoPago (mp_refresh_sends). A request with an
--   unknown outcome leaves the account at_risk (refresh_unconfirmed) and its refresh token is
--   never sent again, except one last-resort attempt when the served token expires within 7
--   days. A worker that dies mid-call leaves the count behind; mp_flag_unconfirmed_refreshes()
--   turns it into at_risk once the lease has run out.
-- * The seller never changes through a refresh: mp_save_refreshed() refuses another seller.
-- * A dead access token (401 on /users/me) is cleared from the master at a new version
--   (mp_record_token_dead), so neither the cache nor the fallback can serve it.
-- * mp-probe's bookkeeping (mp_verified_at, its own short lease) and checkout's report limit
--   (one verification a minute per account).
-- Idempotent and non-destructive: `add column if not exists`, `create or replace`, functions
-- whose result type changes are dropped and created again (they hold no data).

alter table public.nv_accounts
  add column if not exists mp_refresh_sends smallint not null default 0,
  add column if not exists mp_refresh_unconfirmed_at timestamptz,
  add column if not exists mp_refresh_failing_since timestamptz,
  add column if not exists mp_reauth_reason text,
  add column if not exists mp_revoke_reason text,
  add column if not exists mp_verified_at timestamptz,
  add column if not exists mp_probe_lease_until timestamptz,
  add column if not exists mp_report_checked_at timestamptz,
  add column if not exists mp_report_verdict text,
  add column if not exists mp_state text not null default 'not_connected',
  add column if not exists mp_state_reason text,
  add column if not exists mp_state_changed_at timestamptz;

comment on column public.nv_accounts.mp_refresh_sends is
  'Requests carrying the current refresh token that may have reached MercadoPago (0, 1, or 2 after the last-resort attempt).';
comment on column public.nv_accounts.mp_refresh_unconfirmed_at is
  'When a refresh of the current refresh token had an unknown outcome (at_risk: refresh_unconfirmed).';
comment on column public.nv_accounts.mp_state is
  'Connection state, kept by the trigger mp_connection_state_keep from mp_derive_connection_state().';

-- Accounts whose refresh may have reached MercadoPago and has no recorded outcome yet.
create index if not exists nv_accounts_mp_refresh_sent_idx on public.nv_accounts (id)
  where mp_refresh_sends > 0 and mp_refresh_unconfirmed_at is null;
-- mp-probe: the connected tokens, least recently verified first.
create index if not exists nv_accounts_mp_probe_due_idx
  on public.nv_accounts (mp_verified_at nulls first, id)
  where mp_connected and mp_access_token_encrypted is not null and not mp_needs_reauth;

-- THE derivation of an account's connection state (the one place; docs/contract.md):
--   not connected            → revoked (it was connected once: version > 0) or not_connected
--   needs re-authorization   → reauth_required (invalid_grant, seller_mismatch, token_dead)
--   unknown refresh outcome  → at_risk (refresh_unconfirmed)
--   failing for 3 days       → at_risk (refresh_failing)
--   otherwise                → connected
create or replace function public.mp_derive_connection_state(
  p_connected boolean,
  p_version bigint,
  p_needs_reauth boolean,
  p_reauth_reason text,
  p_revoke_reason text,
  p_unconfirmed_at timestamptz,
  p_failing_since timestamptz,
  p_now timestamptz
) returns table (state text, reason text)
language sql
immutable
set search_path = public, pg_temp
as $fn$
  select s.state, s.reason from (
    select case
             when not coalesce(p_connected, false) and coalesce(p_version, 0) > 0 then 'revoked'
             when not coalesce(p_connected, false) then 'not_connected'
             when p_needs_reauth then 'reauth_required'
             when p_unconfirmed_at is not null then 'at_risk'
             when p_failing_since <= p_now - interval '3 days' then 'at_risk'
             else 'connected'
           end as state,
           case
             when not coalesce(p_connected, false) and coalesce(p_version, 0) > 0
               then coalesce(p_revoke_reason, 'admin')
             when not coalesce(p_connected, false) then null
             when p_needs_reauth then coalesce(p_reauth_reason, 'invalid_grant')
             when p_unconfirmed_at is not null then 'refresh_unconfirmed'
             when p_failing_since <= p_now - interval '3 days' then 'refresh_failing'
             else null
           end as reason
  ) s
$fn$;

-- Keeps mp_state/mp_state_reason equal to the derivation on every insert and update.
create or replace function public.mp_connection_state_keep()
returns trigger
language plpgsql
set search_path = public, pg_temp
as $fn$
declare
  d record;
begin
  select * into d from public.mp_derive_connection_state(
    new.mp_connected, new.mp_token_version, new.mp_needs_reauth, new.mp_reauth_reason,
    new.mp_revoke_reason, new.mp_refresh_unconfirmed_at, new.mp_refresh_failing_since, now());
  if tg_op = 'INSERT' or new.mp_state is distinct from d.state
     or new.mp_state_reason is distinct from d.reason then
    new.mp_state := d.state;
    new.mp_state_reason := d.reason;
    new.mp_state_changed_at := now();
  end if;
  return new;
end
$fn$;

drop trigger if exists mp_connection_state_keep on public.nv_accounts;
create trigger mp_connection_state_keep before insert or update on public.nv_accounts
  for each row execute function public.mp_connection_state_keep();

-- Existing rows get their state (the trigger computes it).
update public.nv_accounts a set mp_state = a.mp_state
 where not exists (
   select 1 from public.mp_derive_connection_state(
     a.mp_connected, a.mp_token_version, a.mp_needs_reauth, a.mp_reauth_reason,
     a.mp_revoke_reason, a.mp_refresh_unconfirmed_at, a.mp_refresh_failing_since, now()) d
    where d.state = a.mp_state and d.reason is not distinct from a.mp_state_reason);

-- Accounts per state, kept by statement triggers (constant-time mp-health at any size).
create table if not exists public.mp_state_totals (
  state text primary key,
  accounts bigint not null default 0
);

comment on table public.mp_state_totals is
  'Accounts per connection state, kept by statement triggers on nv_accounts.';

create or replace function public.mp_state_totals_change()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
begin
  if tg_op = 'INSERT' then
    insert into public.mp_state_totals as t (state, accounts)
    select mp_state, count(*) from new_rows group by mp_state
    on conflict (state) do update set accounts = t.accounts + excluded.accounts;
  elsif tg_op = 'DELETE' then
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
    on conflict (state) do update set accounts = t.accounts + excluded.accounts;
  end if;
  return null;
end
$fn$;

create or replace function public.mp_state_totals_truncated()
returns trigger
language plpgsql
security definer
set search_path = public, pg_temp
as $fn$
begin
  update public.mp_state_totals set accounts = 0;
  return null;
end
$fn$;

-- Recounts the per-state counters from the table (locks out writers while it counts).
create or replace function public.mp_recount_state_totals()
returns void
language plpgsql
set search_path = public, pg_temp
as $fn$
begin
  lock table public.nv_accounts in share mode;
  update public.mp_state_totals set accounts = 0;
  insert into public.mp_state_totals as t (state, accounts)
  select mp_state, count(*) from public.nv_accounts group by mp_state
  on conflict (state) do update set accounts = excluded.accounts;
end
$fn$;

drop trigger if exists mp_state_totals_insert on public.nv_accounts;
create trigger mp_state_totals_insert after insert on public.nv_accounts
  referencing new table as new_rows
  for each statement execute function public.mp_state_totals_change();
drop trigger if exists mp_state_totals_update on public.nv_accounts;
create trigger mp_state_totals_update after update on public.nv_accounts
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.mp_state_totals_change();
drop trigger if exists mp_state_totals_delete on public.nv_accounts;
create trigger mp_state_totals_delete after delete on public.nv_accounts
  referencing old table as old_rows
  for each statement execute function public.mp_state_totals_change();
drop trigger if exists mp_state_totals_truncate on public.nv_accounts;
create trigger mp_state_totals_truncate after truncate on public.nv_accounts
  for each statement execute function public.mp_state_totals_truncated();

select public.mp_recount_state_totals();

-- Every account's state as the operators and the events read it: the deadline is when the
-- served access token expires, for the states in which a person must act before then.
create or replace view public.mp_connection_states with (security_invoker = true) as
  select a.id as account_id, a.backend_client_id as client_id, a.mp_user_id, a.mp_state as state,
         a.mp_state_reason as reason,
         case when a.mp_state in ('at_risk', 'reauth_required')
                   and a.mp_access_token_encrypted is not null
              then a.mp_token_expires_at end as deadline,
         a.mp_token_version as token_version, a.mp_state_changed_at as changed_at
    from public.nv_accounts a;

-- ---- The refresh: at most one request per refresh token (invariant 3) ----

-- Claimable now also requires the refresh token unsent (or its one last-resort attempt due:
-- sent once, the served token expiring within 7 days) unless a pair waits in escrow; and an
-- account whose access token died with its refresh token unsent stays claimable.
drop function if exists public.mp_claim_due_accounts(uuid, integer, interval, interval, uuid, boolean, uuid[]);
create function public.mp_claim_due_accounts(
  p_owner uuid,
  p_limit integer,
  p_due_within interval,
  p_lease interval,
  p_only_account uuid default null,
  p_force boolean default false,
  p_escrowed uuid[] default '{}'
) returns table (
  id uuid,
  mp_token_version bigint,
  mp_refresh_token text,
  backend_client_id uuid,
  mp_user_id bigint,
  mp_refresh_sends smallint,
  mp_token_expires_at timestamptz,
  lease_expires_at timestamptz,
  db_now timestamptz
) language sql volatile
set search_path = public, pg_temp
as $$
  update public.nv_accounts a
     set mp_refresh_lease_owner = p_owner,
         mp_refresh_lease_expires_at = now() + p_lease
    from (
      select n.id
        from public.nv_accounts n
       where n.mp_connected
         and n.mp_refresh_token is not null
         and (n.mp_refresh_lease_expires_at is null or n.mp_refresh_lease_expires_at <= now())
         and (p_only_account is null or n.id = p_only_account)
         and (n.id = any (p_escrowed) or n.mp_refresh_sends = 0
              or (n.mp_refresh_sends = 1 and n.mp_token_expires_at <= now() + interval '7 days'))
         and (p_force or n.id = any (p_escrowed) or (
               (not n.mp_needs_reauth or n.mp_reauth_reason = 'token_dead')
               and (n.mp_refresh_next_attempt_at is null or n.mp_refresh_next_attempt_at <= now())
               and (n.mp_token_expires_at is null
                    or n.mp_token_expires_at <= now() + p_due_within
                    or n.mp_access_token_encrypted is null)))
       order by n.id = any (p_escrowed) desc, n.mp_token_expires_at nulls first, n.id
       limit greatest(p_limit, 0)
       for update skip locked
    ) due
   where a.id = due.id
  returning a.id, a.mp_token_version, a.mp_refresh_token, a.backend_client_id, a.mp_user_id,
            a.mp_refresh_sends, a.mp_token_expires_at, a.mp_refresh_lease_expires_at, now()
$$;

-- Leases one connected account whatever its refresh state (no live lease of another owner):
-- what a confirmed dead token needs before it is cleared and, if possible, refreshed.
create or replace function public.mp_lease_account(p_id uuid, p_owner uuid, p_lease interval)
returns table (
  id uuid,
  mp_token_version bigint,
  mp_refresh_token text,
  backend_client_id uuid,
  mp_user_id bigint,
  mp_refresh_sends smallint,
  mp_token_expires_at timestamptz,
  lease_expires_at timestamptz,
  db_now timestamptz
) language sql volatile
set search_path = public, pg_temp
as $$
  update public.nv_accounts a
     set mp_refresh_lease_owner = p_owner, mp_refresh_lease_expires_at = now() + p_lease
   where a.id = p_id and a.mp_connected
     and (a.mp_refresh_lease_expires_at is null or a.mp_refresh_lease_expires_at <= now()
          or a.mp_refresh_lease_owner = p_owner)
  returning a.id, a.mp_token_version, a.mp_refresh_token, a.backend_client_id, a.mp_user_id,
            a.mp_refresh_sends, a.mp_token_expires_at, a.mp_refresh_lease_expires_at, now()
$$;

-- Counts a request that is about to carry the refresh token to MercadoPago — BEFORE it is
-- sent, so a worker that dies mid-call still counts it. Refused (false) unless this owner holds
-- a live lease on this version and the token is unsent, or sent once with the served token
-- expiring within 7 days (the single last-resort attempt). `force` cannot pass it.
create or replace function public.mp_begin_refresh_call(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint
) returns boolean
language sql volatile
set search_path = public, pg_temp
as $$
  with upd as (
    update public.nv_accounts
       set mp_refresh_sends = mp_refresh_sends + 1
     where id = p_id and mp_refresh_lease_owner = p_owner
       and mp_refresh_lease_expires_at > now()
       and mp_token_version = p_base_version and mp_connected
       and (mp_refresh_sends = 0
            or (mp_refresh_sends = 1 and mp_token_expires_at <= now() + interval '7 days'))
    returning 1)
  select exists (select 1 from upd)
$$;

-- Records a refresh whose outcome is unknown (timeout or connection lost after sending, 5xx,
-- an unreadable 2xx): at_risk, the refresh token kept and never sent again (but the last
-- resort). Releases the lease. Only while `p_owner` holds it on `p_base_version`.
create or replace function public.mp_record_refresh_unconfirmed(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint,
  p_error text
) returns boolean
language sql volatile
set search_path = public, pg_temp
as $$
  with upd as (
    update public.nv_accounts
       set mp_refresh_unconfirmed_at = coalesce(mp_refresh_unconfirmed_at, now()),
           mp_refresh_last_error = left(p_error, 64),
           mp_refresh_failures = mp_refresh_failures + 1,
           mp_refresh_failing_since = coalesce(mp_refresh_failing_since, now()),
           mp_refresh_next_attempt_at = null,
           mp_refresh_lease_owner = null,
           mp_refresh_lease_expires_at = null,
           mp_updated_at = now()
     where id = p_id and mp_token_version = p_base_version and mp_refresh_lease_owner = p_owner
    returning 1)
  select exists (select 1 from upd)
$$;

-- Refreshes that may have reached MercadoPago and whose worker never recorded an outcome
-- (terminated mid-call): once the lease has run out they are at_risk like any unknown outcome.
create or replace function public.mp_flag_unconfirmed_refreshes()
returns integer
language sql volatile
set search_path = public, pg_temp
as $$
  with upd as (
    update public.nv_accounts
       set mp_refresh_unconfirmed_at = now(), mp_refresh_last_error = 'outcome_lost',
           mp_refresh_failing_since = coalesce(mp_refresh_failing_since, now()),
           mp_updated_at = now()
     where mp_refresh_sends > 0 and mp_refresh_unconfirmed_at is null and mp_connected
       and (mp_refresh_lease_expires_at is null or mp_refresh_lease_expires_at <= now())
    returning 1)
  select count(*)::integer from upd
$$;

-- A transient failure MercadoPago provably did not process (p_unsend: the request counted by
-- mp_begin_refresh_call never reached it, so it is uncounted again) backs off as before.
drop function if exists public.mp_record_refresh_failure(uuid, uuid, bigint, text, interval, interval, interval);
create function public.mp_record_refresh_failure(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint,
  p_error text,
  p_retry_after interval,
  p_base interval,
  p_cap interval,
  p_unsend boolean default false
) returns table (failures integer, next_attempt_at timestamptz) language sql volatile
set search_path = public, pg_temp
as $$
  update public.nv_accounts
     set mp_refresh_failures = mp_refresh_failures + 1,
         mp_refresh_next_attempt_at = now() + coalesce(
           p_retry_after,
           least(p_cap, p_base * power(2, least(mp_refresh_failures, 30)))),
         mp_refresh_last_error = left(p_error, 64),
         mp_refresh_sends = case when p_unsend then greatest(mp_refresh_sends - 1, 0)
                                 else mp_refresh_sends end,
         mp_refresh_failing_since = coalesce(mp_refresh_failing_since, now()),
         mp_refresh_lease_owner = null,
         mp_refresh_lease_expires_at = null,
         mp_updated_at = now()
   where id = p_id and mp_token_version = p_base_version and mp_refresh_lease_owner = p_owner
  returning mp_refresh_failures, mp_refresh_next_attempt_at
$$;

-- MercadoPago refused the grant (invalid_grant) or answered for another seller
-- (seller_mismatch): re-authorization required, the current access token kept and served
-- until it expires. Releases the lease; only while `p_owner` holds it.
drop function if exists public.mp_record_reauth_required(uuid, uuid, bigint);
create function public.mp_record_reauth_required(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint,
  p_reason text default 'invalid_grant'
) returns boolean language sql volatile
set search_path = public, pg_temp
as $$
  with upd as (
    update public.nv_accounts
       set mp_needs_reauth = true,
           mp_reauth_reason = case when mp_needs_reauth and mp_reauth_reason = 'token_dead'
                                   then 'token_dead' else p_reason end,
           mp_refresh_failures = mp_refresh_failures + 1,
           mp_refresh_next_attempt_at = null,
           mp_refresh_last_error = p_reason,
           mp_refresh_lease_owner = null,
           mp_refresh_lease_expires_at = null,
           mp_updated_at = now()
     where id = p_id and mp_token_version = p_base_version and mp_refresh_lease_owner = p_owner
    returning 1)
  select exists (select 1 from upd)
$$;

-- MercadoPago confirmed the access token of `p_base_version` dead (401 on /users/me): the
-- token is cleared at a new version (the cache write that follows clears the cache; the
-- fallback finds nothing to serve: invariant 9) and the account needs re-authorization,
-- reason token_dead. The lease stays with `p_owner` so it may still use an unsent refresh
-- token (which ends the state). Returns the row as the sync needs it, plus the refresh state.
create or replace function public.mp_record_token_dead(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint
) returns table (
  id uuid,
  backend_client_id uuid,
  mp_connected boolean,
  mp_access_token_encrypted text,
  mp_public_key text,
  mp_token_version bigint,
  mp_refresh_sends smallint
) language sql volatile
set search_path = public, pg_temp
as $$
  update public.nv_accounts a
     set mp_access_token_encrypted = null,
         mp_token_version = a.mp_token_version + 1,
         mp_needs_reauth = true,
         mp_reauth_reason = 'token_dead',
         mp_report_verdict = 'dead',
         mp_updated_at = now()
   where a.id = p_id and a.mp_token_version = p_base_version and a.mp_refresh_lease_owner = p_owner
     and a.mp_connected
  returning a.id, a.backend_client_id, a.mp_connected, a.mp_access_token_encrypted,
            a.mp_public_key, a.mp_token_version, a.mp_refresh_sends
$$;

-- The save of a refreshed pair: as before, plus the seller fence (invariant 6: an answer for
-- another seller is never stored; an answer without one keeps the stored seller) and the end
-- of at_risk and reauth_required (a new refresh token, unsent; the token verified just now).
create or replace function public.mp_save_refreshed(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint,
  p_access_token_encrypted text,
  p_refresh_token_encrypted text,
  p_expires_in integer,
  p_token_expires_at timestamptz,
  p_user_id bigint default null,
  p_public_key text default null,
  p_live_mode boolean default null,
  p_scope text default null
) returns table (
  id uuid,
  backend_client_id uuid,
  mp_connected boolean,
  mp_access_token_encrypted text,
  mp_public_key text,
  mp_token_version bigint
) language sql volatile
set search_path = public, pg_temp
as $$
  update public.nv_accounts
     set mp_access_token_encrypted = p_access_token_encrypted,
         mp_refresh_token = p_refresh_token_encrypted,
         mp_expires_in = p_expires_in,
         mp_token_expires_at = p_token_expires_at,
         mp_user_id = coalesce(nv_accounts.mp_user_id, p_user_id),
         mp_public_key = coalesce(p_public_key, nv_accounts.mp_public_key),
         mp_live_mode = coalesce(p_live_mode, nv_accounts.mp_live_mode),
         mp_scope = coalesce(p_scope, nv_accounts.mp_scope),
         mp_token_version = nv_accounts.mp_token_version + 1,
         mp_refresh_lease_owner = null,
         mp_refresh_lease_expires_at = null,
         mp_refresh_failures = 0,
         mp_refresh_next_attempt_at = null,
         mp_refresh_last_error = null,
         mp_refresh_sends = 0,
         mp_refresh_unconfirmed_at = null,
         mp_refresh_failing_since = null,
         mp_needs_reauth = false,
         mp_reauth_reason = null,
         mp_verified_at = now(),
         mp_report_verdict = null,
         mp_last_refreshed_at = now(),
         mp_updated_at = now()
   where nv_accounts.id = p_id
     and nv_accounts.mp_token_version = p_base_version
     and nv_accounts.mp_refresh_lease_owner = p_owner
     and nv_accounts.mp_connected
     and (p_user_id is null or nv_accounts.mp_user_id is null
          or nv_accounts.mp_user_id = p_user_id)
  returning nv_accounts.id, nv_accounts.backend_client_id, nv_accounts.mp_connected,
            nv_accounts.mp_access_token_encrypted, nv_accounts.mp_public_key,
            nv_accounts.mp_token_version
$$;

-- ---- Connect and revoke end at_risk and reauth_required ----

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
      null::text, null::bigint, null::timestamptz, null::uuid;
    return;
  end if;
  if current_seller is not null and current_seller <> p_user_id and not p_replace_seller then
    return query select 'seller_mismatch'::text, p_account_id, null::uuid, false, null::text,
      null::text, null::bigint, null::timestamptz, null::uuid;
    return;
  end if;
  select a.id into other
    from public.nv_accounts a
   where a.mp_user_id = p_user_id and a.id <> p_account_id and coalesce(a.mp_connected, false)
   limit 1;
  if other is not null then
    return query select 'mp_account_in_use'::text, p_account_id, null::uuid, false, null::text,
      null::text, null::bigint, null::timestamptz, other;
    return;
  end if;
  return query
    update public.nv_accounts a set
      mp_connected = true,
      mp_user_id = p_user_id,
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
      null::uuid;
end
$fn$;

-- Revoke with its reason ('admin', or 'mp_deauthorized' after a confirmed webhook).
drop function if exists public.mp_revoke_account(uuid);
create or replace function public.mp_revoke_account(p_account_id uuid, p_reason text default 'admin')
returns table (backend_client_id uuid, mp_token_version bigint, changed boolean)
language sql
set search_path = public, pg_temp
as $fn$
  with upd as (
    update public.nv_accounts set
      mp_connected = false, mp_access_token_encrypted = null, mp_refresh_token = null,
      mp_public_key = null, mp_token_expires_at = null, mp_token_version = mp_token_version + 1,
      mp_needs_reauth = false, mp_reauth_reason = null, mp_revoke_reason = left(p_reason, 32),
      mp_refresh_failures = 0, mp_refresh_next_attempt_at = null,
      mp_refresh_last_error = null, mp_refresh_lease_owner = null,
      mp_refresh_lease_expires_at = null, mp_refresh_sends = 0,
      mp_refresh_unconfirmed_at = null, mp_refresh_failing_since = null,
      mp_report_verdict = null, mp_updated_at = now()
     where id = p_account_id
       and (coalesce(mp_connected, false) or mp_access_token_encrypted is not null
            or mp_refresh_token is not null or mp_public_key is not null)
    returning backend_client_id, mp_token_version, true as changed)
  select * from upd
  union all
  select a.backend_client_id, a.mp_token_version, false from public.nv_accounts a
   where a.id = p_account_id and not exists (select 1 from upd)
$fn$;

-- ---- Verification of access tokens: mp-probe and checkout's reports (§9) ----

-- Claims up to `p_limit` connected tokens not verified within `p_interval` (or the one
-- account `p_only_account`, now), least recently verified first, under a short probe lease
-- (two probe runs never check the same account at once).
create or replace function public.mp_claim_probe(
  p_limit integer,
  p_interval interval,
  p_lease interval,
  p_only_account uuid default null
) returns table (
  id uuid,
  mp_token_version bigint,
  mp_access_token_encrypted text,
  backend_client_id uuid
) language sql volatile
set search_path = public, pg_temp
as $$
  update public.nv_accounts a
     set mp_probe_lease_until = now() + p_lease
    from (
      select n.id from public.nv_accounts n
       where n.mp_connected and n.mp_access_token_encrypted is not null and not n.mp_needs_reauth
         and (n.mp_probe_lease_until is null or n.mp_probe_lease_until <= now())
         and (case when p_only_account is null
                   then n.mp_verified_at is null or n.mp_verified_at <= now() - p_interval
                   else n.id = p_only_account end)
       order by n.mp_verified_at nulls first, n.id
       limit greatest(p_limit, 0)
       for update skip locked
    ) due
   where a.id = due.id
  returning a.id, a.mp_token_version, a.mp_access_token_encrypted, a.backend_client_id
$$;

-- Records tokens MercadoPago accepted (each only while still at the version checked) and
-- releases the probe leases of `p_release` (accounts a run claimed and did not check).
create or replace function public.mp_record_verified(
  p_ids uuid[],
  p_versions bigint[],
  p_release uuid[] default '{}'
) returns integer
language sql volatile
set search_path = public, pg_temp
as $$
  with ok as (
    update public.nv_accounts a
       set mp_verified_at = now(), mp_probe_lease_until = null,
           mp_report_verdict = case when a.mp_report_verdict = 'pending' then 'alive'
                                    else a.mp_report_verdict end
      from unnest(p_ids, p_versions) as x(id, version)
     where a.id = x.id and a.mp_token_version = x.version
    returning 1),
  released as (
    update public.nv_accounts set mp_probe_lease_until = null
     where id = any (p_release) and not (id = any (p_ids))
    returning 1)
  select (select count(*)::integer from ok)
$$;

-- Checkout's report that the token of `p_version` was rejected: 'check' when this call may
-- ask MercadoPago (at most once a minute per account), else the last verdict ('alive',
-- 'dead', or 'pending' while another check runs). 'stale' when the version is not current.
create or replace function public.mp_claim_token_check(p_id uuid, p_version bigint)
returns text
language sql volatile
set search_path = public, pg_temp
as $$
  with upd as (
    update public.nv_accounts
       set mp_report_checked_at = now(), mp_report_verdict = 'pending'
     where id = p_id and mp_token_version = p_version and mp_connected
       and mp_access_token_encrypted is not null
       and (mp_report_checked_at is null or mp_report_checked_at <= now() - interval '1 minute')
    returning 1)
  select case
           when exists (select 1 from upd) then 'check'
           else (select case when a.mp_token_version <> p_version then 'stale'
                             else coalesce(a.mp_report_verdict, 'alive') end
                   from public.nv_accounts a where a.id = p_id)
         end
$$;

-- Grants: only the service role (and the functions' own user, the owner) may run these.
do $$
declare
  grantee_role text;
  fn text;
begin
  foreach fn in array array[
    'public.mp_derive_connection_state(boolean, bigint, boolean, text, text, timestamptz, timestamptz, timestamptz)',
    'public.mp_connection_state_keep()',
    'public.mp_state_totals_change()',
    'public.mp_state_totals_truncated()',
    'public.mp_recount_state_totals()',
    'public.mp_claim_due_accounts(uuid, integer, interval, interval, uuid, boolean, uuid[])',
    'public.mp_lease_account(uuid, uuid, interval)',
    'public.mp_begin_refresh_call(uuid, uuid, bigint)',
    'public.mp_record_refresh_unconfirmed(uuid, uuid, bigint, text)',
    'public.mp_flag_unconfirmed_refreshes()',
    'public.mp_record_refresh_failure(uuid, uuid, bigint, text, interval, interval, interval, boolean)',
    'public.mp_record_reauth_required(uuid, uuid, bigint, text)',
    'public.mp_record_token_dead(uuid, uuid, bigint)',
    'public.mp_save_refreshed(uuid, uuid, bigint, text, text, integer, timestamptz, bigint, text, boolean, text)',
    'public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text, boolean)',
    'public.mp_revoke_account(uuid, text)',
    'public.mp_claim_probe(integer, interval, interval, uuid)',
    'public.mp_record_verified(uuid[], bigint[], uuid[])',
    'public.mp_claim_token_check(uuid, bigint)'
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

  alter table public.mp_state_totals enable row level security;
  revoke all on table public.mp_state_totals, public.mp_connection_states from public;
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on table public.mp_state_totals, public.mp_connection_states from %I',
                     grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant select on table public.mp_state_totals, public.mp_connection_states to service_role;
  end if;
end
$$;
