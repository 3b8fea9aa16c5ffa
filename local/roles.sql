-- The bootstrap of a local cluster, as Supabase's Postgres image does it: run once by the
-- superuser `supabase_admin` (initdb -U supabase_admin) in both clusters, before any
-- migration. It creates the API roles, a NON-superuser `postgres` (the role migrations and
-- the functions use, as on hosted Supabase), the `extensions` schema and the default
-- privileges a Supabase project has, so the migrations' RLS and privilege rules are
-- exercised for real. Never part of the migrations.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'postgres') then
    create role postgres login createrole createdb replication bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end $$;
alter role postgres nosuperuser login createrole createdb replication bypassrls;
grant anon, authenticated, service_role to authenticator;
-- postgres administers the API roles (Supabase grants them to it with admin option).
grant anon, authenticated, service_role to postgres with admin option;

-- postgres creates schemas (supabase_migrations, …) and owns what it creates in public.
do $$ begin
  execute format('grant create, connect, temporary on database %I to postgres', current_database());
end $$;
grant all on schema public to postgres with grant option;
grant usage on schema public to anon, authenticated, service_role;

create schema if not exists extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
grant create on schema extensions to postgres;
alter role postgres set search_path to "$user", public, extensions;

-- What postgres (the migrations) and supabase_admin create in public is open to the API
-- roles until a migration says otherwise; the migrations revoke what must stay closed.
alter default privileges for role postgres in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on sequences to anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on functions to anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
