-- Backend DB: the cache says which MercadoPago site its credentials belong to, so get-mp-config
-- answers `site_id` from its fast path (docs/contract.md, "get-mp-config";
-- docs/contract.md, "Applications and sites"). Written by the one writer of the cache with the
-- token, under the same version fence; null: credentials of an account connected before sites
-- were stored (the configuration's default site).
-- Idempotent and non-destructive: `add column if not exists` and privilege changes only.

alter table public.clients add column if not exists mp_site_id text;

comment on column public.clients.mp_site_id is
  'MercadoPago site (MLA, MLB, …) of the credentials this cache holds; null: the configured default site';

-- An MP column: anon/authenticated (and PUBLIC) neither read nor write it.
do $$
declare
  grantee_role text;
begin
  foreach grantee_role in array array['anon', 'authenticated', 'public'] loop
    if grantee_role = 'public' or exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke select (mp_site_id), insert (mp_site_id), update (mp_site_id) '
                     'on table public.clients from %s', grantee_role);
    end if;
  end loop;
end
$$;
