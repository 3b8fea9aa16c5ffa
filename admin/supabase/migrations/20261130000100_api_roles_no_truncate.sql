-- Admin DB: anon and authenticated get no TRUNCATE, TRIGGER or REFERENCES on nv_accounts
-- (docs/contract.md, schema). A Supabase project's default privileges grant every privilege on a new table in
-- public to the API roles (and an existing nv_accounts table has them likewise); the master
-- migration narrowed SELECT/INSERT/UPDATE to the non-MP columns, this takes away what no API
-- role needs. DELETE stays as the existing system had it. Idempotent: revokes only.

revoke truncate, trigger, references on table public.nv_accounts from public;

do $$
declare
  grantee_role text;
begin
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke truncate, trigger, references on table public.nv_accounts from %I',
        grantee_role);
    end if;
  end loop;
end
$$;
