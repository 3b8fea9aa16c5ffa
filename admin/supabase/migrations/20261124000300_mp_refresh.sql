-- Admin DB: the scheduled refresh's atomic steps (docs/invariants.md, invariants 3 and 4; docs/atomic-state.md).
-- Each step is one statement in a SQL function, so no refresher ever reads, decides in
-- TypeScript and writes back: claim (lease with owner and expiry, FOR UPDATE SKIP LOCKED),
-- compare-and-swap save, failure and invalid_grant recorders, lease release.
-- Idempotent: `create or replace` and `if not exists` only; no data is touched.

-- Claims up to `p_limit` accounts for `p_owner` for `p_lease`. Claimable: connected with a
-- refresh token and no live lease, and then either forced (`p_force`), or with a pair
-- waiting in the Backend escrow (`p_escrowed`: applying it is always right), or due: not
-- needing re-authorization, not backing off, expiring within `p_due_within` (or of unknown
-- expiry). Escrowed first, then most urgent first. Concurrent claimers skip each other's
-- locked rows, so each account goes to one claimer.
create or replace function public.mp_claim_due_accounts(
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
  lease_expires_at timestamptz,
  db_now timestamptz
) language sql volatile as $$
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
         and (p_force or n.id = any (p_escrowed) or (
               not n.mp_needs_reauth
               and (n.mp_refresh_next_attempt_at is null or n.mp_refresh_next_attempt_at <= now())
               and (n.mp_token_expires_at is null
                    or n.mp_token_expires_at <= now() + p_due_within)))
       order by n.id = any (p_escrowed) desc, n.mp_token_expires_at nulls first, n.id
       limit greatest(p_limit, 0)
       for update skip locked
    ) due
   where a.id = due.id
  returning a.id, a.mp_token_version, a.mp_refresh_token, a.backend_client_id,
            a.mp_refresh_lease_expires_at, now()
$$;

-- Saves a refreshed token pair (ciphertexts) as a compare-and-swap: only while the row is
-- still at `p_base_version` and leased by `p_owner`. Fields MercadoPago left out of the
-- refresh answer (null here) keep their stored values. Bumps the version, clears the lease
-- and the failure state. Returns the row as the sync needs it; no row = lost the CAS.
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
) language sql volatile as $$
  update public.nv_accounts
     set mp_access_token_encrypted = p_access_token_encrypted,
         mp_refresh_token = p_refresh_token_encrypted,
         mp_expires_in = p_expires_in,
         mp_token_expires_at = p_token_expires_at,
         mp_user_id = coalesce(p_user_id, nv_accounts.mp_user_id),
         mp_public_key = coalesce(p_public_key, nv_accounts.mp_public_key),
         mp_live_mode = coalesce(p_live_mode, nv_accounts.mp_live_mode),
         mp_scope = coalesce(p_scope, nv_accounts.mp_scope),
         mp_token_version = nv_accounts.mp_token_version + 1,
         mp_refresh_lease_owner = null,
         mp_refresh_lease_expires_at = null,
         mp_refresh_failures = 0,
         mp_refresh_next_attempt_at = null,
         mp_refresh_last_error = null,
         mp_needs_reauth = false,
         mp_last_refreshed_at = now(),
         mp_updated_at = now()
   where nv_accounts.id = p_id
     and nv_accounts.mp_token_version = p_base_version
     and nv_accounts.mp_refresh_lease_owner = p_owner
     and nv_accounts.mp_connected
  returning nv_accounts.id, nv_accounts.backend_client_id, nv_accounts.mp_connected,
            nv_accounts.mp_access_token_encrypted, nv_accounts.mp_public_key,
            nv_accounts.mp_token_version
$$;

-- Records a transient failure: failures +1, next attempt after `p_retry_after` when
-- MercadoPago gave one, else after least(p_cap, p_base * 2^failures); releases the lease.
-- Only while `p_owner` still holds the lease on `p_base_version`.
create or replace function public.mp_record_refresh_failure(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint,
  p_error text,
  p_retry_after interval,
  p_base interval,
  p_cap interval
) returns table (failures integer, next_attempt_at timestamptz) language sql volatile as $$
  update public.nv_accounts
     set mp_refresh_failures = mp_refresh_failures + 1,
         mp_refresh_next_attempt_at = now() + coalesce(
           p_retry_after,
           least(p_cap, p_base * power(2, least(mp_refresh_failures, 30)))),
         mp_refresh_last_error = p_error,
         mp_refresh_lease_owner = null,
         mp_refresh_lease_expires_at = null,
         mp_updated_at = now()
   where id = p_id and mp_token_version = p_base_version and mp_refresh_lease_owner = p_owner
  returning mp_refresh_failures, mp_refresh_next_attempt_at
$$;

-- Records MercadoPago's invalid_grant: the account needs re-authorization (no automatic
-- retries until it reconnects or a forced refresh). The access token is kept and keeps
-- being served until it expires. Releases the lease; only while `p_owner` holds it.
create or replace function public.mp_record_reauth_required(
  p_id uuid,
  p_owner uuid,
  p_base_version bigint
) returns boolean language sql volatile as $$
  with upd as (
    update public.nv_accounts
       set mp_needs_reauth = true,
           mp_refresh_failures = mp_refresh_failures + 1,
           mp_refresh_next_attempt_at = null,
           mp_refresh_last_error = 'invalid_grant',
           mp_refresh_lease_owner = null,
           mp_refresh_lease_expires_at = null,
           mp_updated_at = now()
     where id = p_id and mp_token_version = p_base_version and mp_refresh_lease_owner = p_owner
    returning 1)
  select exists (select 1 from upd)
$$;

-- Releases the leases `p_owner` holds on `p_ids` (accounts a run claimed but did not use).
create or replace function public.mp_release_refresh_leases(p_owner uuid, p_ids uuid[])
returns integer language sql volatile as $$
  with upd as (
    update public.nv_accounts
       set mp_refresh_lease_owner = null, mp_refresh_lease_expires_at = null
     where id = any (p_ids) and mp_refresh_lease_owner = p_owner
    returning 1)
  select count(*)::integer from upd
$$;

-- Only the service role and the functions' own user may run these.
revoke all on function public.mp_claim_due_accounts(uuid, integer, interval, interval, uuid, boolean, uuid[]) from public;
revoke all on function public.mp_save_refreshed(uuid, uuid, bigint, text, text, integer, timestamptz, bigint, text, boolean, text) from public;
revoke all on function public.mp_record_refresh_failure(uuid, uuid, bigint, text, interval, interval, interval) from public;
revoke all on function public.mp_record_reauth_required(uuid, uuid, bigint) from public;
revoke all on function public.mp_release_refresh_leases(uuid, uuid[]) from public;

do $$
declare
  fn text;
  grantee_role text;
  fns constant text[] := array[
    'public.mp_claim_due_accounts(uuid, integer, interval, interval, uuid, boolean, uuid[])',
    'public.mp_save_refreshed(uuid, uuid, bigint, text, text, integer, timestamptz, bigint, text, boolean, text)',
    'public.mp_record_refresh_failure(uuid, uuid, bigint, text, interval, interval, interval)',
    'public.mp_record_reauth_required(uuid, uuid, bigint)',
    'public.mp_release_refresh_leases(uuid, uuid[])'
  ];
begin
  foreach fn in array fns loop
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
