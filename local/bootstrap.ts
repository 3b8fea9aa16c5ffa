/**
 * The superuser's part of a local database, as Supabase's image does it before a project's
 * first migration: `roles.sql` (API roles, non-superuser `postgres`, `extensions` schema,
 * default privileges), pg_cron with Supabase's grants (`cron.sql`), and the Vault and pg_net
 * stand-ins (`stand_ins.sql`). Run as `supabase_admin`; never part of the migrations.
 */
import postgres from "postgres";
import type { Sql } from "../shared/platform/db.ts";

const sqlFile = (file: string) => Deno.readTextFile(new URL(file, import.meta.url));

/** Bootstraps the database behind `sql` (a superuser connection). */
export async function bootstrap(
  sql: Sql,
  opts: { cron?: boolean; standIns?: boolean } = {},
): Promise<void> {
  await sql.unsafe(await sqlFile("roles.sql"));
  if (opts.cron) await sql.unsafe(await sqlFile("cron.sql"));
  if (opts.standIns) await sql.unsafe(await sqlFile("stand_ins.sql"));
}

/** A scratch database bootstrapped like a Supabase project's, next to a cluster's. */
interface ScratchDatabase {
  name: string;
  /** Direct URL as the superuser (`supabase_admin`). */
  url: string;
  /** Direct URL as `postgres`, the role migrations run as. */
  postgresUrl: string;
  /** Drops the database (disconnecting whoever is left). */
  drop(): Promise<void>;
}

/**
 * Creates database `<prefix>_<random>` in the cluster of `superuserUrl` and bootstraps it
 * with `roles.sql` (no pg_cron: it works only in the `postgres` database).
 */
export async function scratchDatabase(
  superuserUrl: string,
  prefix = "scratch",
): Promise<ScratchDatabase> {
  const name = `${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const server = postgres(superuserUrl, { onnotice: () => {}, max: 1, prepare: false });
  await server.unsafe(`create database ${name}`);
  const url = new URL(superuserUrl);
  url.pathname = `/${name}`;
  const sql = postgres(url.href, { onnotice: () => {}, max: 1, prepare: false });
  try {
    await bootstrap(sql);
  } finally {
    await sql.end();
  }
  const asPostgres = new URL(url);
  asPostgres.username = "postgres";
  asPostgres.password = "";
  return {
    name,
    url: url.href,
    postgresUrl: asPostgres.href,
    async drop() {
      await server.unsafe(`drop database if exists ${name} with (force)`);
      await server.end({ timeout: 1 });
    },
  };
}
