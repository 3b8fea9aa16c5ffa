-- Admin DB: OAuth connect and MercadoPago deauthorization (docs/contract.md, mp-oauth-start / mp-oauth-callback, mp-webhook).
-- Adds the outcome of each consumed OAuth state (so a double-clicked callback can tell the
-- person what the first click did), the webhook deliveries already handled (so a replayed
-- notification is a no-op), and mp_save_connection(), the one atomic write of a new
-- connection. Idempotent and non-destructive: `if not exists`, `create or replace`, guarded
-- DO blocks and privilege changes only.

-- What the callback that consumed a state ended with: 'connected' or an error reason.
alter table public.mp_oauth_states add column if not exists outcome text;

create index if not exists mp_oauth_states_expires_at_idx on public.mp_oauth_states (expires_at);

-- The webhook and the connect check look accounts up by MercadoPago seller.
create index if not exists nv_accounts_mp_user_id_idx
  on public.nv_accounts (mp_user_id) where mp_user_id is not null;

-- MercadoPago webhook deliveries already acted on, by their signed x-request-id. No secrets.
create table if not exists public.mp_webhook_deliveries (
  request_id text primary key,
  received_at timestamptz not null default now(),
  action text,
  mp_user_id bigint
);

create index if not exists mp_webhook_deliveries_received_at_idx
  on public.mp_webhook_deliveries (received_at);

alter table public.mp_webhook_deliveries enable row level security;
revoke all on table public.mp_webhook_deliveries from public;

-- Stores a freshly exchanged token set for an account in one transaction: version +1,
-- connected, expiry from expires_in, every re-authorization/failure/lease/backoff field
-- cleared. A MercadoPago seller feeds one connected account at most: when another connected
-- account already holds p_user_id, nothing is written and the result is 'mp_account_in_use'
-- (an advisory lock on the seller serializes concurrent connects of the same seller).
-- Results: 'connected' (with the row the sync needs), 'mp_account_in_use', 'account_not_found'.
create or replace function public.mp_save_connection(
  p_account_id uuid,
  p_user_id bigint,
  p_access_token_encrypted text,
  p_refresh_token_encrypted text,
  p_public_key text,
  p_expires_in integer,
  p_live_mode boolean,
  p_scope text
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
begin
  perform pg_advisory_xact_lock(hashtextextended('mp_user_id:' || p_user_id::text, 0));
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
      mp_refresh_failures = 0,
      mp_refresh_next_attempt_at = null,
      mp_refresh_last_error = null,
      mp_refresh_lease_owner = null,
      mp_refresh_lease_expires_at = null,
      mp_connected_at = now(),
      mp_updated_at = now()
    where a.id = p_account_id
    returning 'connected'::text, a.id, a.backend_client_id, a.mp_connected,
      a.mp_access_token_encrypted, a.mp_public_key, a.mp_token_version, a.mp_token_expires_at,
      null::uuid;
  if not found then
    return query select 'account_not_found'::text, p_account_id, null::uuid, false, null::text,
      null::text, null::bigint, null::timestamptz, null::uuid;
  end if;
end
$fn$;

comment on function public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text) is
  'Atomic write of a new MercadoPago connection (ciphertexts only); rejects a seller already connected to another account.';

-- Only the service role and the functions' own database user may call it or see deliveries.
revoke all on function public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text)
  from public;

do $$
declare
  grantee_role text;
begin
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on table public.mp_webhook_deliveries from %I', grantee_role);
      execute format(
        'revoke all on function public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text) from %I',
        grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.mp_webhook_deliveries to service_role;
    grant execute on function
      public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text)
      to service_role;
  end if;
end
$$;
