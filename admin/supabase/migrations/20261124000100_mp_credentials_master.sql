-- Admin DB: MercadoPago credentials, encrypted master copy (docs/contract.md, schema).
-- nv_accounts gains the columns it lacks; single-use OAuth states and the credential audit
-- trail get tables of their own. Idempotent and non-destructive: only `if not exists`,
-- guarded DO blocks and privilege changes; no existing value is dropped or rewritten.

create table if not exists public.nv_accounts (
  id uuid primary key default gen_random_uuid(),
  mp_connected boolean not null default false,
  mp_user_id bigint,
  mp_access_token_encrypted text,
  mp_refresh_token text,
  mp_public_key text,
  mp_expires_in integer
);

alter table public.nv_accounts
  add column if not exists mp_connected boolean not null default false,
  add column if not exists mp_user_id bigint,
  add column if not exists mp_access_token_encrypted text,
  add column if not exists mp_refresh_token text,
  add column if not exists mp_public_key text,
  add column if not exists mp_expires_in integer,
  add column if not exists backend_client_id uuid,
  add column if not exists mp_token_expires_at timestamptz,
  add column if not exists mp_token_version bigint not null default 0,
  add column if not exists mp_live_mode boolean,
  add column if not exists mp_scope text,
  -- Operational state of the refresher and the connection.
  add column if not exists mp_refresh_lease_owner uuid,
  add column if not exists mp_refresh_lease_expires_at timestamptz,
  add column if not exists mp_refresh_failures integer not null default 0,
  add column if not exists mp_refresh_next_attempt_at timestamptz,
  add column if not exists mp_refresh_last_error text,
  add column if not exists mp_needs_reauth boolean not null default false,
  add column if not exists mp_connected_at timestamptz,
  add column if not exists mp_last_refreshed_at timestamptz,
  add column if not exists mp_updated_at timestamptz;

comment on column public.nv_accounts.mp_access_token_encrypted is
  'Ciphertext v1:<key_id>:<base64(iv|ciphertext|tag)>, AAD mp:<account_id>:access_token';
comment on column public.nv_accounts.mp_refresh_token is
  'Ciphertext v1:<key_id>:<base64(iv|ciphertext|tag)>, AAD mp:<account_id>:refresh_token';
comment on column public.nv_accounts.backend_client_id is
  'clients.id in the Backend DB that this account feeds';
comment on column public.nv_accounts.mp_token_version is
  '+1 on every change of the credentials (connect, refresh, revoke)';

-- One account feeds at most one client: add the unique constraint unless a unique index on
-- backend_client_id alone already exists.
do $$
begin
  if not exists (
    select 1
    from pg_index i
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
    where i.indrelid = 'public.nv_accounts'::regclass
      and i.indisunique and i.indnkeyatts = 1 and i.indpred is null
      and a.attname = 'backend_client_id'
  ) then
    alter table public.nv_accounts
      add constraint nv_accounts_backend_client_id_key unique (backend_client_id);
  end if;
end
$$;

-- The refresher looks for connected accounts by expiry.
create index if not exists nv_accounts_mp_token_expires_at_idx
  on public.nv_accounts (mp_token_expires_at) where mp_connected;

create table if not exists public.mp_oauth_states (
  state_hash text primary key, -- hex SHA-256 of the state; the state itself is never stored
  account_id uuid not null references public.nv_accounts (id) on delete cascade,
  code_verifier_encrypted text, -- ciphertext, AAD mp:<account_id>:code_verifier
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  consumed_at timestamptz
);

-- Audit trail of credential events. NO SECRETS here, ever: no token, code, code verifier,
-- client secret or key in any column, `detail` included.
create table if not exists public.mp_credential_events (
  id bigserial primary key,
  occurred_at timestamptz not null default now(),
  account_id uuid,
  client_id uuid,
  event text not null,
  detail jsonb not null default '{}',
  request_id text
);

comment on table public.mp_credential_events is
  'Audit trail of MercadoPago credential events. Never store secrets (tokens, codes, code verifiers, keys) here.';

create index if not exists mp_credential_events_event_occurred_at_idx
  on public.mp_credential_events (event, occurred_at);
create index if not exists mp_credential_events_account_id_occurred_at_idx
  on public.mp_credential_events (account_id, occurred_at);

alter table public.nv_accounts enable row level security;
alter table public.mp_oauth_states enable row level security;
alter table public.mp_credential_events enable row level security;

revoke all on table public.mp_oauth_states, public.mp_credential_events from public;

-- anon/authenticated (and PUBLIC) must not read or write any mp_* column. A column-level
-- REVOKE is void while a table-level grant stands, so a table-level SELECT/INSERT/UPDATE is
-- replaced by the same privilege on every column not named mp_*; the other columns keep
-- working for the existing system. The new tables are closed to them entirely.
do $$
declare
  tbl constant regclass := 'public.nv_accounts';
  seq constant text := pg_get_serial_sequence('public.mp_credential_events', 'id');
  grantee_role text;
  priv text;
  keep_cols text;
  mp_cols text;
begin
  select string_agg(quote_ident(attname), ', ' order by attnum) filter (where not starts_with(attname, 'mp_')),
         string_agg(quote_ident(attname), ', ' order by attnum) filter (where starts_with(attname, 'mp_'))
    into keep_cols, mp_cols
    from pg_attribute
    where attrelid = tbl and attnum > 0 and not attisdropped;

  foreach grantee_role in array array['anon', 'authenticated', 'public'] loop
    if grantee_role = 'public' or exists (select 1 from pg_roles where rolname = grantee_role) then
      foreach priv in array array['SELECT', 'INSERT', 'UPDATE'] loop
        if exists (
          select 1 from pg_class c, aclexplode(c.relacl) a
          where c.oid = tbl and a.privilege_type = priv
            and a.grantee = coalesce((select oid from pg_roles where rolname = grantee_role), 0)
        ) then
          execute format('revoke %s on table %s from %s', priv, tbl, grantee_role);
          execute format('grant %s (%s) on table %s to %s', priv, keep_cols, tbl, grantee_role);
        end if;
        execute format('revoke %s (%s) on table %s from %s', priv, mp_cols, tbl, grantee_role);
      end loop;
      if grantee_role <> 'public' then
        execute format('revoke all on table public.mp_oauth_states, public.mp_credential_events from %s', grantee_role);
        execute format('revoke all on sequence %s from %s', seq, grantee_role);
      end if;
    end if;
  end loop;
  execute format('revoke all on sequence %s from public', seq);

  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.nv_accounts, public.mp_oauth_states, public.mp_credential_events
      to service_role;
    execute format('grant all on sequence %s to service_role', seq);
  end if;
end
$$;
