-- Backend DB: where mp-reconcile's slices resume. Each run checks a bounded slice of the
-- linked accounts (and of the cached clients) after the saved id, wrapping around to the
-- first id, so one invocation stays inside the edge runtime's CPU limit at any size.
-- Idempotent and non-destructive.

create table if not exists public.mp_reconcile_cursor (
  scan text primary key check (scan in ('accounts', 'orphans')),
  after_id uuid, -- the last id the previous run checked; null: start from the first
  updated_at timestamptz not null default now()
);

comment on table public.mp_reconcile_cursor is
  'mp-reconcile: the last id each scan checked, so the next run continues from there.';

alter table public.mp_reconcile_cursor enable row level security;

revoke all on table public.mp_reconcile_cursor from public;

do $$
declare
  grantee_role text;
begin
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on table public.mp_reconcile_cursor from %I', grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.mp_reconcile_cursor to service_role;
  end if;
end
$$;
