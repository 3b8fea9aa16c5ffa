-- pg_cron as a Supabase project has it (run by supabase_admin in the database named by
-- cron.database_name): the extension in pg_catalog with its own `cron` schema, usable by
-- postgres, whose jobs then run as postgres.
create extension if not exists pg_cron with schema pg_catalog;
grant usage on schema cron to postgres;
grant all privileges on all tables in schema cron to postgres;
grant all privileges on all sequences in schema cron to postgres;
