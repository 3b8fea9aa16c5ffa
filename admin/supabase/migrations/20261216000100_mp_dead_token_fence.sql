-- Admin DB: a dead access token is cleared whoever holds the refresh lease (docs/invariants.md,
-- invariants 3, 4 and 9; docs/contract.md "Connection states").
-- * mp_clear_dead_token replaces mp_record_token_dead: MercadoPago confirmed the access token of
--   `p_base_version` dead (401 on /users/me), so it is cleared from the master at the next
--   version under the version fence alone — not under the refresh lease, which a refresh in
--   flight (or a crashed worker, until its lease runs out) may hold. The lease, the refresh
--   token and its sends are left as they are: the dead-clear changes the access token only.
--   It records the cleared version (mp_token_dead_version).
-- * The refresh side fences on the version its refresh token belongs to:
--   mp_refresh_base_version() is the token version, or, while the dead-clear is the account's
--   last change (version = mp_token_dead_version + 1, no access token), the version before it.
--   A refresh that was in flight when the token was declared dead therefore still counts its
--   call, saves its pair (a fresh pair is newer than a dead access token) or records its
--   failure, and a pair it escrowed from that version is applied by the next run, whose claim
--   reports that version (shared/store/refresh_leases.ts). Any other change (connect, refresh,
--   revoke, reconcile's bump) moves the version on and ends the alias.
-- Idempotent: `add column if not exists`, `create or replace`, `drop function if exists`.

alter table public.nv_accounts add column if not exists mp_token_dead_version bigint;

comment on column public.nv_accounts.mp_token_dead_version is
  'The token version whose access token MercadoPago last confirmed dead (mp_clear_dead_token cleared it at the next version).';

-- The version a refresh of the account works from (the base of its fences): the token version,
-- or the one before it while a dead-clear is the account's last change (the refresh token, its
-- sends and an escrowed pair belong to that version; the clear changed the access token only).
create or replace function public.mp_refresh_base_version(
  p_version bigint,
  p_dead_version bigint,
  p_access_token_encrypted text
) returns bigint
language sql
immutable
set search_path = public, pg_temp
as $fn$
  select case when p_dead_version = p_version - 1 and p_access_token_encrypted is null
              then p_dead_version else p_version end
$fn$;

-- MercadoPago confirmed the access token of `p_base_version` dead: cleared at a new version (the
-- cache write that follows clears the cache; the fallback finds nothing to serve: invariant 9),
-- the account needs re-authorization (token_dead). No lease needed, none changed: a refresh
-- holding the account keeps it, and its pair is still saved (mp_refresh_base_version). Returns
-- the row as the sync needs it, plus whether its refresh token is unsent.
drop function if exists public.mp_record_token_dead(uuid, uuid, bigint);
create or replace function public.mp_clear_dead_token(
  p_id uuid,
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
         mp_token_dead_version = a.mp_token_version,
         mp_needs_reauth = true,
         mp_reauth_reason = 'token_dead',
         mp_report_verdict = 'dead',
         mp_updated_at = now()
   where a.id = p_id and a.mp_token_version = p_base_version and a.mp_connected
     and a.mp_access_token_encrypted is not null
  returning a.id, a.backend_client_id, a.mp_connected, a.mp_access_token_encrypted,
            a.mp_public_key, a.mp_token_version, a.mp_refresh_sends
$$;

-- As in …_mp_connection_state.sql, fenced on the refresh base version.
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
       and mp_refresh_base_version(mp_token_version, mp_token_dead_version,
                                   mp_access_token_encrypted) = p_base_version
       and mp_connected
       and (mp_refresh_sends = 0
            or (mp_refresh_sends = 1 and mp_token_expires_at <= now() + interval '7 days'))
    returning 1)
  select exists (select 1 from upd)
$$;

-- As in …_mp_connection_state.sql, fenced on the refresh base version.
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
     where id = p_id and mp_refresh_lease_owner = p_owner
       and mp_refresh_base_version(mp_token_version, mp_token_dead_version,
                                   mp_access_token_encrypted) = p_base_version
    returning 1)
  select exists (select 1 from upd)
$$;

-- As in …_mp_connection_state.sql, fenced on the refresh base version.
create or replace function public.mp_record_refresh_failure(
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
   where id = p_id and mp_refresh_lease_owner = p_owner
     and mp_refresh_base_version(mp_token_version, mp_token_dead_version,
                                 mp_access_token_encrypted) = p_base_version
  returning mp_refresh_failures, mp_refresh_next_attempt_at
$$;

-- As in …_mp_connection_state.sql, fenced on the refresh base version.
create or replace function public.mp_record_reauth_required(
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
     where id = p_id and mp_refresh_lease_owner = p_owner
       and mp_refresh_base_version(mp_token_version, mp_token_dead_version,
                                   mp_access_token_encrypted) = p_base_version
    returning 1)
  select exists (select 1 from upd)
$$;

-- As in …_mp_connection_state.sql (the seller fence, the end of at_risk and reauth_required),
-- fenced on the refresh base version: a pair refreshed from the version whose access token was
-- then declared dead is saved (it is newer than the dead token).
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
     and mp_refresh_base_version(nv_accounts.mp_token_version, nv_accounts.mp_token_dead_version,
                                 nv_accounts.mp_access_token_encrypted) = p_base_version
     and nv_accounts.mp_refresh_lease_owner = p_owner
     and nv_accounts.mp_connected
     and (p_user_id is null or nv_accounts.mp_user_id is null
          or nv_accounts.mp_user_id = p_user_id)
  returning nv_accounts.id, nv_accounts.backend_client_id, nv_accounts.mp_connected,
            nv_accounts.mp_access_token_encrypted, nv_accounts.mp_public_key,
            nv_accounts.mp_token_version
$$;

-- Grants: only the service role (and the functions' own user, the owner) may run these.
do $$
declare
  grantee_role text;
  fn text;
begin
  foreach fn in array array[
    'public.mp_refresh_base_version(bigint, bigint, text)',
    'public.mp_clear_dead_token(uuid, bigint)',
    'public.mp_begin_refresh_call(uuid, uuid, bigint)',
    'public.mp_record_refresh_unconfirmed(uuid, uuid, bigint, text)',
    'public.mp_record_refresh_failure(uuid, uuid, bigint, text, interval, interval, interval, boolean)',
    'public.mp_record_reauth_required(uuid, uuid, bigint, text)',
    'public.mp_save_refreshed(uuid, uuid, bigint, text, text, integer, timestamptz, bigint, text, boolean, text)'
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
