-- Admin DB: the public edges hardened.
-- * Webhook deliveries are claimed atomically before anything is done for them, and a
--   delivery whose handling failed (MercadoPago unreachable) can be claimed again when
--   MercadoPago redelivers it: mp_claim_webhook_delivery() / mp_finish_webhook_delivery().
-- * A rejected OAuth state is recorded once, on its own row (rejected_at), however often it
--   comes back; a state carries whether it may replace the account's seller.
-- * mp_save_connection() refuses a seller other than the account's unless the state was
--   started with replace_seller (result 'seller_mismatch').
-- * anon/authenticated hold no TRUNCATE, TRIGGER or REFERENCES on any MP table.
-- * Retention: mp_prune_retention() deletes expired OAuth states (a day after expiry),
--   webhook deliveries past 30 days and audit events past 400 days (at least), daily.
-- Idempotent and non-destructive: `if not exists`, `create or replace`, guarded DO blocks.

alter table public.mp_oauth_states
  add column if not exists replace_seller boolean not null default false,
  add column if not exists rejected_at timestamptz;

alter table public.mp_webhook_deliveries
  add column if not exists status text not null default 'done',
  add column if not exists claimed_at timestamptz,
  add column if not exists attempts integer not null default 1;

-- Claims a delivery before it is acted on: true for a new delivery, or for one whose earlier
-- handling failed or was abandoned mid-way (claimed over 2 minutes ago and never finished);
-- false for a delivery handled or being handled. One statement: two racing claims, one wins.
create or replace function public.mp_claim_webhook_delivery(
  p_request_id text,
  p_action text,
  p_mp_user_id bigint
) returns boolean
language sql
set search_path = public, pg_temp
as $fn$
  with claimed as (
    insert into public.mp_webhook_deliveries as d
      (request_id, action, mp_user_id, status, received_at, claimed_at)
    values (left(p_request_id, 128), left(p_action, 64), p_mp_user_id, 'processing', now(), now())
    on conflict (request_id) do update
      set status = 'processing', claimed_at = now(), attempts = d.attempts + 1
      where d.status = 'failed'
         or (d.status = 'processing' and d.claimed_at < now() - interval '2 minutes')
    returning 1)
  select exists (select 1 from claimed)
$fn$;

-- Marks a claimed delivery 'done' or 'failed' (a failed one may be claimed again).
create or replace function public.mp_finish_webhook_delivery(p_request_id text, p_status text)
returns void
language sql
set search_path = public, pg_temp
as $fn$
  update public.mp_webhook_deliveries set status = p_status
   where request_id = p_request_id and status = 'processing' and p_status in ('done', 'failed')
$fn$;

-- Records the first rejection of a known state; true only for that first one.
create or replace function public.mp_reject_oauth_state(p_state_hash text)
returns boolean
language sql
set search_path = public, pg_temp
as $fn$
  with first as (
    update public.mp_oauth_states set rejected_at = now()
     where state_hash = p_state_hash and rejected_at is null
    returning 1)
  select exists (select 1 from first)
$fn$;

-- The connection write gains the seller rule (invariant: an account's seller changes only
-- through a connect started with replace_seller). The old signature is replaced.
drop function if exists public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text);

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
end
$fn$;

comment on function public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text, boolean) is
  'Atomic write of a new MercadoPago connection (ciphertexts only); refuses another seller unless replacing, and a seller connected to another account.';

-- Deletes what would otherwise grow forever: OAuth states a day after they expired, webhook
-- deliveries past p_delivery_days, audit events past p_audit_days (never fewer than 400).
create or replace function public.mp_prune_retention(
  p_audit_days integer default 400,
  p_delivery_days integer default 30
) returns table (oauth_states bigint, webhook_deliveries bigint, credential_events bigint)
language plpgsql
set search_path = public, pg_temp
as $fn$
declare
  n_states bigint;
  n_deliveries bigint;
  n_events bigint;
begin
  delete from public.mp_oauth_states where expires_at < now() - interval '1 day';
  get diagnostics n_states = row_count;
  delete from public.mp_webhook_deliveries
   where received_at < now() - make_interval(days => greatest(p_delivery_days, 1));
  get diagnostics n_deliveries = row_count;
  delete from public.mp_credential_events
   where occurred_at < now() - make_interval(days => greatest(p_audit_days, 400));
  get diagnostics n_events = row_count;
  return query select n_states, n_deliveries, n_events;
end
$fn$;

-- Only the service role and the functions' own database user may call these.
do $$
declare
  grantee_role text;
  fn text;
  tbl text;
begin
  foreach fn in array array[
    'public.mp_claim_webhook_delivery(text, text, bigint)',
    'public.mp_finish_webhook_delivery(text, text)',
    'public.mp_reject_oauth_state(text)',
    'public.mp_save_connection(uuid, bigint, text, text, text, integer, boolean, text, boolean)',
    'public.mp_prune_retention(integer, integer)'
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

  -- (nv_accounts itself: …_api_roles_no_truncate.sql)
  foreach tbl in array array[
    'public.mp_oauth_states', 'public.mp_credential_events', 'public.mp_webhook_deliveries'
  ] loop
    execute format('revoke truncate, trigger, references on table %s from public', tbl);
    foreach grantee_role in array array['anon', 'authenticated'] loop
      if exists (select 1 from pg_roles where rolname = grantee_role) then
        execute format('revoke truncate, trigger, references on table %s from %I', tbl, grantee_role);
      end if;
    end loop;
  end loop;
end
$$;
