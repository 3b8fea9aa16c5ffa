-- Admin DB: the last nv_accounts transitions that were inline statements become SQL
-- functions, so every multi-column change of an account is one function with a fixed
-- search_path (docs/atomic-state.md): revoke, link to a client, and reconcile's version bump.
-- Same statements as before, same results. Idempotent: `create or replace` and grants only.

-- Clears an account's credentials and bumps its version; an account with nothing left to
-- clear keeps its version (revoking twice is not a change). No row: no such account.
create or replace function public.mp_revoke_account(p_account_id uuid)
returns table (backend_client_id uuid, mp_token_version bigint, changed boolean)
language sql
set search_path = public, pg_temp
as $fn$
  with upd as (
    update public.nv_accounts set
      mp_connected = false, mp_access_token_encrypted = null, mp_refresh_token = null,
      mp_public_key = null, mp_token_expires_at = null, mp_token_version = mp_token_version + 1,
      mp_needs_reauth = false, mp_refresh_failures = 0, mp_refresh_next_attempt_at = null,
      mp_refresh_last_error = null, mp_refresh_lease_owner = null,
      mp_refresh_lease_expires_at = null, mp_updated_at = now()
     where id = p_account_id
       and (coalesce(mp_connected, false) or mp_access_token_encrypted is not null
            or mp_refresh_token is not null or mp_public_key is not null)
    returning backend_client_id, mp_token_version, true as changed)
  select * from upd
  union all
  select a.backend_client_id, a.mp_token_version, false from public.nv_accounts a
   where a.id = p_account_id and not exists (select 1 from upd)
$fn$;

-- Links an account to a Backend client unless it already feeds another one. Results:
-- 'linked', 'account_linked_elsewhere', 'client_fed_by_another_account', 'account_not_found'.
create or replace function public.mp_link_account(p_account_id uuid, p_client_id uuid)
returns text
language plpgsql
set search_path = public, pg_temp
as $fn$
begin
  update public.nv_accounts set backend_client_id = p_client_id, mp_updated_at = now()
   where id = p_account_id and (backend_client_id is null or backend_client_id = p_client_id);
  if found then
    return 'linked';
  end if;
  if exists (select 1 from public.nv_accounts where id = p_account_id) then
    return 'account_linked_elsewhere';
  end if;
  return 'account_not_found';
exception when unique_violation then
  return 'client_fed_by_another_account';
end
$fn$;

-- Moves accounts' versions past a cache level with or ahead of them (so a fenced sync can
-- overwrite it), each only while it still has the version it was seen with and no refresher
-- owns it. Credentials are untouched. Returns the rows bumped, as the sync needs them.
create or replace function public.mp_bump_account_versions(
  p_ids uuid[],
  p_versions bigint[],
  p_past bigint[]
) returns table (
  id uuid,
  backend_client_id uuid,
  mp_connected boolean,
  mp_access_token_encrypted text,
  mp_public_key text,
  mp_token_version bigint
)
language sql
set search_path = public, pg_temp
as $fn$
  update public.nv_accounts a
     set mp_token_version = greatest(a.mp_token_version, x.past) + 1, mp_updated_at = now()
    from unnest(p_ids, p_versions, p_past) as x(id, version, past)
   where a.id = any(p_ids) and a.id = x.id and a.mp_token_version = x.version
     and a.mp_refresh_lease_owner is null
  returning a.id, a.backend_client_id, coalesce(a.mp_connected, false), a.mp_access_token_encrypted,
            a.mp_public_key, a.mp_token_version
$fn$;

do $$
declare
  grantee_role text;
  fn text;
begin
  foreach fn in array array[
    'public.mp_revoke_account(uuid)',
    'public.mp_link_account(uuid, uuid)',
    'public.mp_bump_account_versions(uuid[], bigint[], bigint[])'
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

-- The refresh transitions (…_mp_refresh.sql) get the same pinned search_path as every other.
do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
       and p.proname in ('mp_claim_due_accounts', 'mp_save_refreshed', 'mp_record_refresh_failure',
                         'mp_record_reauth_required', 'mp_release_refresh_leases')
  loop
    execute format('alter function %s set search_path = public, pg_temp', f);
  end loop;
end
$$;
