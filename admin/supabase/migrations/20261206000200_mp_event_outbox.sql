-- Admin DB: events to the platform (docs/contract.md, "Events to the platform"; invariant 10;
-- docs/events.md).
-- * An outbox, mp_event_outbox: every change of an account's connection state writes exactly
--   one event row IN THE SAME TRANSACTION as the change, because the row is written by
--   triggers on nv_accounts that run after mp_connection_state_keep has derived mp_state:
--     - BEFORE UPDATE mp_connection_state_keep_events (the name sorts after
--       mp_connection_state_keep, so it sees the derived state), only for rows whose
--       mp_state or mp_user_id changed (its WHEN clause: other updates cost nothing);
--     - AFTER INSERT mp_event_outbox_insert, per statement over the inserted rows (set-based:
--       a COPY of 1,000,000 connected accounts writes its 1,000,000 `connected` events in
--       one INSERT … SELECT, not a million trigger calls).
--   Each account has its own sequence (nv_accounts.mp_event_seq, +1 per event under the
--   account's row lock); an inserted account's first event has sequence 0.
-- * `expiring` (the served token expires within 7 days and no refresh succeeded since: the
--   version is unchanged) is written by mp_flag_expiring_events(limit), once per token
--   version (nv_accounts.mp_expiring_version remembers the version reported); mp-deliver-events
--   calls it at the start of every run.
-- * Delivery: mp_claim_events() leases each account's OLDEST pending event only (a later
--   event waits for the earlier one), mp_finish_events() records the attempts.
-- * Pull (mp-events): each row keeps the id of the transaction that wrote it (xid8); a
--   reader returns only rows of transactions below its snapshot's xmin (all finished), in
--   (xid, pos) order, so a transaction that commits late can never be skipped.
-- * Runs of the scheduled functions (mp_function_runs), written by the functions at the end
--   of a run through mp_record_function_run(): what mp-health's `stalled` is computed from.
-- * Retention: mp_prune_retention() also deletes delivered events after 30 days and failed
--   ones (and pending ones, which exist that long only while delivery is off) after 90.
-- Idempotent and non-destructive.

alter table public.nv_accounts
  add column if not exists mp_event_seq bigint not null default 0,
  add column if not exists mp_expiring_version bigint;

comment on column public.nv_accounts.mp_event_seq is
  'Sequence of the account''s last event in mp_event_outbox (per-account order).';
comment on column public.nv_accounts.mp_expiring_version is
  'Token version for which mp.connection.expiring was written (once per version).';

create table if not exists public.mp_event_outbox (
  id uuid primary key default gen_random_uuid(),
  pos bigint generated always as identity unique,
  account_id uuid not null,
  seq bigint not null,
  type text not null,
  payload jsonb not null,
  created_at timestamptz not null default now(),
  xid xid8 not null default pg_current_xact_id(),
  status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts integer not null default 0,
  retry_from timestamptz not null default now(),
  next_attempt_at timestamptz not null default now(),
  lease_owner uuid,
  lease_until timestamptz,
  last_error text check (length(last_error) <= 128),
  delivered_at timestamptz,
  failed_at timestamptz
);

comment on table public.mp_event_outbox is
  'Connection events for the platform (docs/contract.md, "Events to the platform"). Never store secrets (tokens, codes, keys) here.';

-- The pull cursor's order.
create index if not exists mp_event_outbox_xid_pos_idx on public.mp_event_outbox (xid, pos);
-- What is due for delivery.
create index if not exists mp_event_outbox_due_idx on public.mp_event_outbox (next_attempt_at, pos)
  where status = 'pending';
-- An account's earlier pending events (the per-account order of delivery).
create index if not exists mp_event_outbox_account_pending_idx
  on public.mp_event_outbox (account_id, seq, pos) where status = 'pending';
create index if not exists mp_event_outbox_pending_created_idx
  on public.mp_event_outbox (created_at) where status = 'pending';
create index if not exists mp_event_outbox_delivered_idx on public.mp_event_outbox (delivered_at)
  where status = 'delivered';
create index if not exists mp_event_outbox_failed_idx on public.mp_event_outbox (failed_at)
  where status = 'failed';

-- The event type of a change of connection state (null: no event). Pure.
create or replace function public.mp_event_type(
  p_old_state text,
  p_new_state text,
  p_old_user bigint,
  p_new_user bigint,
  p_new_reason text
) returns text
language sql
immutable
set search_path = public, pg_temp
as $fn$
  select case
    when p_new_state = 'connected' and p_old_state in ('connected', 'at_risk', 'reauth_required')
         and p_old_user is not null and p_new_user is distinct from p_old_user
      then 'mp.connection.seller_replaced'
    when p_new_state is not distinct from p_old_state then null
    when p_new_state = 'connected' and p_old_state in ('at_risk', 'reauth_required')
      then 'mp.connection.recovered'
    when p_new_state = 'connected' then 'mp.connection.connected'
    when p_new_state = 'at_risk' then 'mp.connection.at_risk'
    when p_new_state = 'reauth_required' then 'mp.connection.reauth_required'
    when p_new_state = 'revoked' and p_new_reason = 'mp_deauthorized'
      then 'mp.connection.deauthorized'
    when p_new_state = 'revoked' then 'mp.connection.revoked'
    else null
  end
$fn$;

-- The payload (docs/contract.md, "Events to the platform"): {"type","timestamp","data":{
-- account_id, client_id, mp_user_id, state, reason?, deadline?, token_version}} — never a
-- token, code or key. Pure.
create or replace function public.mp_event_payload(
  p_type text,
  p_at timestamptz,
  p_account_id uuid,
  p_client_id uuid,
  p_user_id bigint,
  p_state text,
  p_reason text,
  p_deadline timestamptz,
  p_version bigint
) returns jsonb
language sql
immutable
set search_path = public, pg_temp
as $fn$
  select jsonb_build_object(
    'type', p_type,
    'timestamp', to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'data', jsonb_strip_nulls(jsonb_build_object(
              'account_id', p_account_id,
              'client_id', p_client_id,
              'mp_user_id', p_user_id,
              'state', p_state,
              'reason', p_reason,
              'deadline', to_char(p_deadline at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
              'token_version', p_version))
            -- client_id and mp_user_id are always present (null when unknown)
            || jsonb_build_object('client_id', p_client_id, 'mp_user_id', p_user_id))
$fn$;

-- The deadline the events carry (as the view mp_connection_states): the served token's
-- expiry in the states in which a person must act before then. Pure.
create or replace function public.mp_event_deadline(
  p_state text,
  p_has_token boolean,
  p_expires_at timestamptz
) returns timestamptz
language sql
immutable
set search_path = public, pg_temp
as $fn$
  select case when p_state in ('at_risk', 'reauth_required') and p_has_token then p_expires_at end
$fn$;

-- Writes the event of a state change of one row, in the statement that changes it.
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
            new.mp_token_version));
  return new;
end
$fn$;

drop trigger if exists mp_connection_state_keep_events on public.nv_accounts;
create trigger mp_connection_state_keep_events before update on public.nv_accounts
  for each row
  when (old.mp_state is distinct from new.mp_state or old.mp_user_id is distinct from new.mp_user_id)
  execute function public.mp_connection_state_event();

-- Inserted accounts that are not `not_connected` (a seeded or migrated connected account is a
-- real `connected`): one set-based insert per statement.
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
           n.mp_token_version)
    from new_rows n
   cross join lateral (select public.mp_event_type(null, n.mp_state, null, n.mp_user_id,
                                                   n.mp_state_reason) as t) e
   where e.t is not null;
  return null;
end
$fn$;

drop trigger if exists mp_event_outbox_insert on public.nv_accounts;
create trigger mp_event_outbox_insert after insert on public.nv_accounts
  referencing new table as new_rows
  for each statement execute function public.mp_event_outbox_inserted();

-- `expiring`: up to p_limit accounts whose served token expires within 7 days (or has
-- expired) at a version not reported yet — no refresh succeeded, since a refresh makes a new
-- version. Once per token version. Returns how many events it wrote.
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
              a.mp_state_reason, a.mp_token_expires_at, a.mp_token_version),
  ins as (
    insert into public.mp_event_outbox (account_id, seq, type, payload)
    select u.id, u.mp_event_seq, 'mp.connection.expiring',
           public.mp_event_payload('mp.connection.expiring', now(), u.id, u.backend_client_id,
             u.mp_user_id, u.mp_state, u.mp_state_reason, u.mp_token_expires_at,
             u.mp_token_version)
      from upd u
    returning 1)
  select count(*)::integer from ins
$fn$;

-- Leases up to p_limit due events, each the OLDEST pending event of its account (a later
-- event waits until the earlier one is delivered or failed), and counts the attempt.
create or replace function public.mp_claim_events(
  p_owner uuid,
  p_limit integer,
  p_lease interval
) returns table (
  id uuid,
  account_id uuid,
  seq bigint,
  type text,
  payload text,
  created_at timestamptz,
  retry_from timestamptz,
  attempts integer,
  db_now timestamptz
) language sql volatile
set search_path = public, pg_temp
as $fn$
  update public.mp_event_outbox e
     set lease_owner = p_owner, lease_until = now() + p_lease, attempts = e.attempts + 1
    from (
      select c.pos from public.mp_event_outbox c
       where c.status = 'pending' and c.next_attempt_at <= now()
         and (c.lease_until is null or c.lease_until <= now())
         and not exists (
           select 1 from public.mp_event_outbox p
            where p.account_id = c.account_id and p.status = 'pending'
              and (p.seq, p.pos) < (c.seq, c.pos))
       order by c.next_attempt_at, c.pos
       limit greatest(p_limit, 0)
       for update skip locked
    ) d
   where e.pos = d.pos
  returning e.id, e.account_id, e.seq, e.type, e.payload::text, e.created_at, e.retry_from,
            e.attempts, now()
$fn$;

-- Records attempts of events this owner leased: 'delivered', 'retry' (at p_next) or 'failed'
-- (the 3 days are over). Returns how many were recorded (a lost lease records nothing).
create or replace function public.mp_finish_events(
  p_owner uuid,
  p_ids uuid[],
  p_outcomes text[],
  p_next timestamptz[],
  p_errors text[]
) returns integer
language sql volatile
set search_path = public, pg_temp
as $fn$
  with upd as (
    update public.mp_event_outbox e
       set status = case x.outcome when 'delivered' then 'delivered'
                                   when 'failed' then 'failed' else 'pending' end,
           delivered_at = case when x.outcome = 'delivered' then now() end,
           failed_at = case when x.outcome = 'failed' then now() end,
           next_attempt_at = case when x.outcome = 'retry' then coalesce(x.next_at, now())
                                  else e.next_attempt_at end,
           last_error = left(x.error, 128),
           lease_owner = null, lease_until = null
      from unnest(p_ids, p_outcomes, p_next, p_errors) as x(id, outcome, next_at, error)
     where e.id = x.id and e.lease_owner = p_owner and e.status = 'pending'
    returning 1)
  select count(*)::integer from upd
$fn$;

-- Failed events back to pending, due now, with a new 3-day window (deno task events
-- --redeliver): the given ids, or every failed event created since p_since (all when null).
create or replace function public.mp_redeliver_events(
  p_ids uuid[] default null,
  p_since timestamptz default null
) returns integer
language sql volatile
set search_path = public, pg_temp
as $fn$
  with upd as (
    update public.mp_event_outbox e
       set status = 'pending', failed_at = null, next_attempt_at = now(), retry_from = now(),
           attempts = 0, lease_owner = null, lease_until = null
     where e.status = 'failed'
       and (p_ids is null or e.id = any (p_ids))
       and (p_since is null or e.created_at >= p_since)
    returning 1)
  select count(*)::integer from upd
$fn$;

-- Events for the pull API, in commit order after the cursor (p_xid, p_pos): only rows of
-- transactions below this snapshot's xmin — every one of them has finished, so no row
-- that commits later can sort before the rows returned.
create or replace function public.mp_read_events(
  p_xid xid8 default null,
  p_pos bigint default null,
  p_limit integer default 100
) returns table (id uuid, xid xid8, pos bigint, payload text)
language sql stable
set search_path = public, pg_temp
as $fn$
  select e.id, e.xid, e.pos, e.payload::text
    from public.mp_event_outbox e
   where e.xid < pg_snapshot_xmin(pg_current_snapshot())
     and (p_xid is null or (e.xid, e.pos) > (p_xid, coalesce(p_pos, 0)))
   order by e.xid, e.pos
   limit greatest(least(p_limit, 1000), 0)
$fn$;

-- The outbox as mp-health reports it.
create or replace function public.mp_event_outbox_totals()
returns table (pending bigint, oldest_pending_at timestamptz, failed bigint, last_error text)
language sql stable
set search_path = public, pg_temp
as $fn$
  select (select count(*) from public.mp_event_outbox where status = 'pending'),
         (select min(created_at) from public.mp_event_outbox where status = 'pending'),
         (select count(*) from public.mp_event_outbox where status = 'failed'),
         (select e.last_error from public.mp_event_outbox e
           where e.status = 'pending' and e.last_error is not null
           order by e.next_attempt_at desc limit 1)
$fn$;

-- ---- Runs of the scheduled functions, as the functions themselves record them ----

create table if not exists public.mp_function_runs (
  function_name text primary key,
  last_started_at timestamptz not null,
  last_finished_at timestamptz not null,
  outcome text not null,
  summary jsonb not null default '{}',
  runs bigint not null default 1
);

comment on table public.mp_function_runs is
  'The last completed run of each scheduled function, written by the function at the end of the run.';

-- Records a completed run (one row per function; bounded text).
create or replace function public.mp_record_function_run(
  p_function text,
  p_started_at timestamptz,
  p_outcome text,
  p_summary jsonb default '{}'
) returns void
language sql volatile
set search_path = public, pg_temp
as $fn$
  insert into public.mp_function_runs as r
    (function_name, last_started_at, last_finished_at, outcome, summary)
  values (left(p_function, 64), p_started_at, now(), left(p_outcome, 32),
          coalesce(p_summary, '{}'))
  on conflict (function_name) do update
    set last_started_at = excluded.last_started_at, last_finished_at = excluded.last_finished_at,
        outcome = excluded.outcome, summary = excluded.summary, runs = r.runs + 1
$fn$;

-- ---- Retention: as before, plus the outbox ----

drop function if exists public.mp_prune_retention(integer, integer);
create or replace function public.mp_prune_retention(
  p_audit_days integer default 400,
  p_delivery_days integer default 30,
  p_event_delivered_days integer default 30,
  p_event_failed_days integer default 90
) returns table (
  oauth_states bigint,
  webhook_deliveries bigint,
  credential_events bigint,
  events_delivered bigint,
  events_failed bigint
)
language plpgsql
set search_path = public, pg_temp
as $fn$
declare
  n_states bigint;
  n_deliveries bigint;
  n_events bigint;
  n_delivered bigint;
  n_failed bigint;
begin
  delete from public.mp_oauth_states where expires_at < now() - interval '1 day';
  get diagnostics n_states = row_count;
  delete from public.mp_webhook_deliveries
   where received_at < now() - make_interval(days => greatest(p_delivery_days, 1));
  get diagnostics n_deliveries = row_count;
  delete from public.mp_credential_events
   where occurred_at < now() - make_interval(days => greatest(p_audit_days, 400));
  get diagnostics n_events = row_count;
  delete from public.mp_event_outbox
   where status = 'delivered'
     and delivered_at < now() - make_interval(days => greatest(p_event_delivered_days, 1));
  get diagnostics n_delivered = row_count;
  -- Failed events after 90 days; pending ones that old exist only while delivery is off.
  delete from public.mp_event_outbox
   where (status = 'failed'
          and failed_at < now() - make_interval(days => greatest(p_event_failed_days, 1)))
      or (status = 'pending'
          and created_at < now() - make_interval(days => greatest(p_event_failed_days, 1)));
  get diagnostics n_failed = row_count;
  return query select n_states, n_deliveries, n_events, n_delivered, n_failed;
end
$fn$;

-- Grants: only the service role (and the functions' own user, the owner).
do $$
declare
  grantee_role text;
  fn text;
  tbl text;
begin
  foreach fn in array array[
    'public.mp_event_type(text, text, bigint, bigint, text)',
    'public.mp_event_payload(text, timestamptz, uuid, uuid, bigint, text, text, timestamptz, bigint)',
    'public.mp_event_deadline(text, boolean, timestamptz)',
    'public.mp_connection_state_event()',
    'public.mp_event_outbox_inserted()',
    'public.mp_flag_expiring_events(integer)',
    'public.mp_claim_events(uuid, integer, interval)',
    'public.mp_finish_events(uuid, uuid[], text[], timestamptz[], text[])',
    'public.mp_redeliver_events(uuid[], timestamptz)',
    'public.mp_read_events(xid8, bigint, integer)',
    'public.mp_event_outbox_totals()',
    'public.mp_record_function_run(text, timestamptz, text, jsonb)',
    'public.mp_prune_retention(integer, integer, integer, integer)'
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

  foreach tbl in array array['public.mp_event_outbox', 'public.mp_function_runs'] loop
    execute format('alter table %s enable row level security', tbl);
    execute format('revoke all on table %s from public', tbl);
    foreach grantee_role in array array['anon', 'authenticated'] loop
      if exists (select 1 from pg_roles where rolname = grantee_role) then
        execute format('revoke all on table %s from %I', tbl, grantee_role);
      end if;
    end loop;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
      execute format('grant select, insert, update, delete on table %s to service_role', tbl);
    end if;
  end loop;
end
$$;
