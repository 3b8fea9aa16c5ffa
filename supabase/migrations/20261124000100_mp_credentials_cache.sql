-- Backend DB: MercadoPago credentials, plain-text runtime cache (docs/contract.md, schema).
-- clients gains the columns it lacks. Idempotent and non-destructive: only `if not exists`,
-- a guarded DO block and privilege changes; no existing value is dropped or rewritten.

create table if not exists public.clients (
  id uuid primary key default gen_random_uuid(),
  mp_access_token text,
  mp_public_key text
);

alter table public.clients
  add column if not exists mp_access_token text,
  add column if not exists mp_public_key text,
  add column if not exists mp_token_version bigint,
  add column if not exists mp_synced_at timestamptz;

comment on column public.clients.mp_token_version is
  'nv_accounts.mp_token_version (Admin DB) of the credentials this cache holds; written only upward';

alter table public.clients enable row level security;

-- anon/authenticated (and PUBLIC) must not read or write any mp_* column. A column-level
-- REVOKE is void while a table-level grant stands, so a table-level SELECT/INSERT/UPDATE is
-- replaced by the same privilege on every column not named mp_*; the other columns keep
-- working for the existing system.
do $$
declare
  tbl constant regclass := 'public.clients';
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
    end if;
  end loop;

  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.clients to service_role;
  end if;
end
$$;
