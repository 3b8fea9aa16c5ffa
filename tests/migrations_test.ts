/**
 * The schema migrations of both projects, pushed with the real Supabase CLI as `postgres`
 * (not a superuser) into scratch databases created next to BACKEND_DB_URL / ADMIN_DB_URL and
 * bootstrapped as a Supabase database is (each test makes and drops its own).
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import {
  ADMIN_MIGRATIONS,
  ADMIN_PROJECT,
  BACKEND_MIGRATIONS,
  BACKEND_PROJECT,
  migrate,
  MigrationError,
} from "../tooling/migrate.ts";
import { scratchDatabase } from "../local/bootstrap.ts";

type Sql = postgres.Sql;

// Set by `deno task test`; without them every test here fails (nothing is skipped).
const BACKEND_URL = Deno.env.get("BACKEND_DB_URL") ?? "";
const ADMIN_URL = Deno.env.get("ADMIN_DB_URL") ?? "";
const CACHE_FILE = "20261124000100_mp_credentials_cache.sql";
const MASTER_FILE = "20261124000100_mp_credentials_master.sql";

/**
 * Runs `fn` in a scratch database created next to `url` and bootstrapped like a Supabase
 * project's (roles, non-superuser `postgres`, default privileges), then drops it. `sql` is
 * connected as `postgres`, as a project's owner (SQL editor, migrations) is.
 */
async function withScratchDb(url: string, fn: (url: string, sql: Sql) => Promise<void>) {
  const db = await scratchDatabase(url, "mig");
  const sql = postgres(db.postgresUrl, { onnotice: () => {}, max: 1 });
  try {
    await fn(db.postgresUrl, sql);
  } finally {
    await sql.end();
    await db.drop();
  }
}

/** Runs `query` as `role` in a transaction of its own. */
function asRole(sql: Sql, role: string, query: string) {
  return sql.begin(async (tx) => {
    await tx.unsafe(`set local role ${role}`);
    return await tx.unsafe(query);
  });
}

async function columns(sql: Sql, table: string) {
  const rows = await sql<{ name: string; type: string; nullable: boolean; default: string }[]>`
    select attname as name, format_type(atttypid, atttypmod) as type, not attnotnull as nullable,
           pg_get_expr(adbin, adrelid) as default
    from pg_attribute left join pg_attrdef on adrelid = attrelid and adnum = attnum
    where attrelid = ${table}::regclass and attnum > 0 and not attisdropped order by attnum`;
  return new Map(rows.map((r) => [r.name, r]));
}

/** Asserts the columns named exist with exactly these `type [not null] [default …]`. */
async function assertColumns(sql: Sql, table: string, expected: Record<string, string>) {
  const actual = await columns(sql, table);
  for (const [name, spec] of Object.entries(expected)) {
    const c = actual.get(name);
    assert.ok(c, `${table}.${name} exists`);
    const got = [c.type, c.nullable ? "" : "not null", c.default ? `default ${c.default}` : ""];
    assert.equal(got.filter(Boolean).join(" "), spec, `${table}.${name}`);
  }
}

/** RLS on; anon/authenticated can use the other columns but no mp_* one, nor `closed` tables. */
async function assertLockedDown(sql: Sql, table: string, closed: string[] = []) {
  const rls = await sql`select relname, relrowsecurity from pg_class
    where oid = any(${[table, ...closed]}::regclass[])`;
  assert.equal(rls.length, 1 + closed.length);
  for (const r of rls) assert.equal(r.relrowsecurity, true, `RLS on ${r.relname}`);

  const names = [...(await columns(sql, table)).keys()];
  const open = names.filter((n) => !n.startsWith("mp_"));
  const mp = names.filter((n) => n.startsWith("mp_"));
  assert.ok(mp.length >= 2 && open.length >= 1);
  for (const role of ["anon", "authenticated"]) {
    await asRole(sql, role, `select ${open.join(", ")} from ${table}`);
    for (const column of mp) {
      await assert.rejects(
        asRole(sql, role, `select ${column} from ${table}`),
        { code: "42501" },
        `${role} must not read ${table}.${column}`,
      );
    }
    const [{ any }] = await sql`select has_table_privilege(${role}, ${table},
      'TRUNCATE, TRIGGER, REFERENCES') as any`;
    assert.equal(any, false, `${role} has no TRUNCATE, TRIGGER or REFERENCES on ${table}`);
    const [{ writable }] = await sql`select count(*)::int as writable from unnest(${mp}::text[]) c
      where has_column_privilege(${role}, ${table}, c, 'INSERT')
         or has_column_privilege(${role}, ${table}, c, 'UPDATE')`;
    assert.equal(writable, 0, `${role} must not write ${table}.mp_*`);
    for (const t of closed) {
      await assert.rejects(asRole(sql, role, `select * from ${t}`), { code: "42501" }, t);
      const [{ any }] = await sql`select has_table_privilege(${role}, ${t},
        'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') as any`;
      assert.equal(any, false, `${role} has no privilege on ${t}`);
    }
  }
  for (const t of [table, ...closed]) {
    const [{ all }] = await sql`select has_table_privilege('service_role', ${t},
      'SELECT, INSERT, UPDATE, DELETE') as all`;
    assert.equal(all, true, `service_role on ${t}`);
  }
}

async function assertRecorded(sql: Sql, file: string) {
  const [version, name] = [file.slice(0, 14), file.slice(15, -4)];
  const rows = await sql`select name, statements from supabase_migrations.schema_migrations
    where version = ${version}`;
  assert.equal(rows.length, 1, `${file} recorded`);
  assert.equal(rows[0].name, name);
  assert.ok(rows[0].statements.length > 3);
  for (const s of rows[0].statements) assert.ok(s.trim() === s && s && !s.endsWith(";"));
}

/** Pushes twice: the first push applies `file`, the second is a no-op. */
async function migrateTwice(url: string, workdir: string, file: string) {
  const first = await migrate(url, workdir);
  assert.ok(first.applied.includes(file.slice(0, 14)), `${file} applied`);
  const second = await migrate(url, workdir);
  assert.deepEqual(second.applied, []);
  assert.deepEqual(second.skipped, [...first.skipped, ...first.applied].sort());
}

const CACHE_COLUMNS = {
  mp_token_version: "bigint",
  mp_synced_at: "timestamp with time zone",
};
const MASTER_COLUMNS = {
  backend_client_id: "uuid",
  mp_token_expires_at: "timestamp with time zone",
  mp_token_version: "bigint not null default 0",
  mp_live_mode: "boolean",
  mp_scope: "text",
  mp_refresh_lease_owner: "uuid",
  mp_refresh_lease_expires_at: "timestamp with time zone",
  mp_refresh_failures: "integer not null default 0",
  mp_refresh_next_attempt_at: "timestamp with time zone",
  mp_refresh_last_error: "text",
  mp_needs_reauth: "boolean not null default false",
  mp_connected_at: "timestamp with time zone",
  mp_last_refreshed_at: "timestamp with time zone",
  mp_updated_at: "timestamp with time zone",
};
const ADMIN_TABLES = ["public.mp_oauth_states", "public.mp_credential_events"];

Deno.test({
  name: "backend migrations keep existing clients data and hide its MP columns",
  fn: () =>
    withScratchDb(BACKEND_URL, async (url, sql) => {
      await sql.unsafe(`
        create table public.clients (id uuid primary key, name text, mp_access_token text,
          mp_public_key text);
        create policy clients_read on public.clients for select to anon, authenticated using (true);
        insert into public.clients values
          ('6f1c1c57-0d5e-4d55-9a8e-2b1bb1a0c001', 'Tienda Uno', 'APP_USR-111-tok', 'APP_USR-pk-1'),
          ('6f1c1c57-0d5e-4d55-9a8e-2b1bb1a0c002', 'Tienda Dos', 'APP_USR-222-tok', 'APP_USR-pk-2');
      `).simple();
      const [{ before }] = await sql`select has_column_privilege('anon', 'public.clients',
        'mp_access_token', 'SELECT') as before`;
      assert.equal(before, true, "setup: anon holds table-level SELECT as on Supabase");
      const kept =
        `select id, name, mp_access_token, mp_public_key from public.clients order by id`;
      const rows = await sql.unsafe(kept);

      await migrateTwice(url, BACKEND_PROJECT, CACHE_FILE);
      // The file itself is idempotent too, run outside the runner.
      await sql.unsafe(await Deno.readTextFile(`${BACKEND_MIGRATIONS}/${CACHE_FILE}`)).simple();

      assert.deepEqual(await sql.unsafe(kept), rows);
      await assertColumns(sql, "public.clients", CACHE_COLUMNS);
      const fresh = await sql`select mp_token_version, mp_synced_at from public.clients`;
      assert.deepEqual(
        [...fresh],
        rows.map(() => ({ mp_token_version: null, mp_synced_at: null })),
      );
      await assertRecorded(sql, CACHE_FILE);
      await assertLockedDown(sql, "public.clients");
      // The existing policy still lets anon read the columns it may read.
      assert.equal((await asRole(sql, "anon", "select name from public.clients")).length, 2);
      await assert.rejects(asRole(sql, "anon", "select mp_access_token from public.clients"), {
        code: "42501",
      });
      const policies = await sql`select policyname from pg_policies where tablename = 'clients'`;
      assert.deepEqual(policies.map((p) => p.policyname), ["clients_read"]);
    }),
});

Deno.test({
  name: "admin migrations keep existing nv_accounts data, add columns and tables, hide MP columns",
  fn: () =>
    withScratchDb(ADMIN_URL, async (url, sql) => {
      await sql.unsafe(`
        create table public.nv_accounts (id uuid primary key, name text, mp_connected boolean,
          mp_user_id bigint, mp_access_token_encrypted text, mp_refresh_token text,
          mp_public_key text, mp_expires_in integer);
        insert into public.nv_accounts values
          ('0b0d8a52-4a8e-4d1c-8f3e-7f0e5d1a0001', 'Cuenta Uno', true, 123456789012,
           'v1:k1:QUFBQQ==', 'v1:k1:QkJCQg==', 'APP_USR-pk-1', 15552000),
          ('0b0d8a52-4a8e-4d1c-8f3e-7f0e5d1a0002', 'Cuenta Dos', false, 223456789012,
           'v1:k1:Q0NDQw==', 'v1:k1:RERERA==', 'APP_USR-pk-2', 21600);
      `).simple();
      const kept = `select id, name, mp_connected, mp_user_id, mp_access_token_encrypted,
        mp_refresh_token, mp_public_key, mp_expires_in from public.nv_accounts order by id`;
      const rows = await sql.unsafe(kept);

      await migrateTwice(url, ADMIN_PROJECT, MASTER_FILE);
      await sql.unsafe(await Deno.readTextFile(`${ADMIN_MIGRATIONS}/${MASTER_FILE}`)).simple();

      assert.deepEqual(await sql.unsafe(kept), rows);
      await assertColumns(sql, "public.nv_accounts", MASTER_COLUMNS);
      const added = await sql`select mp_token_version, mp_refresh_failures, mp_needs_reauth,
        backend_client_id, mp_token_expires_at from public.nv_accounts`;
      for (const r of added) {
        assert.deepEqual({ ...r }, {
          mp_token_version: "0", // bigint
          mp_refresh_failures: 0,
          mp_needs_reauth: false,
          backend_client_id: null,
          mp_token_expires_at: null,
        });
      }
      await assertRecorded(sql, MASTER_FILE);
      await assertLockedDown(sql, "public.nv_accounts", ADMIN_TABLES);
      await asRole(sql, "authenticated", "select id, name, backend_client_id from nv_accounts");

      // One account per client; the refresher's index; states go with their account.
      await assert.rejects(
        sql`update public.nv_accounts set backend_client_id = '6f1c1c57-0d5e-4d55-9a8e-2b1bb1a0c001'`,
        { code: "23505" },
      );
      const [index] = await sql`select indexdef from pg_indexes
        where tablename = 'nv_accounts' and indexdef like '%(mp_token_expires_at)%'`;
      assert.match(index.indexdef, /WHERE mp_connected$/);
      const [{ id }] = await sql`select id from public.nv_accounts limit 1`;
      await sql`insert into public.mp_oauth_states (state_hash, account_id, expires_at)
        values (${"ab".repeat(32)}, ${id}, now() + interval '10 minutes')`;
      await sql`insert into public.mp_credential_events (account_id, event) values (${id}, 'test')`;
      await sql`delete from public.nv_accounts where id = ${id}`;
      assert.equal((await sql`select 1 from public.mp_oauth_states`).length, 0);
      assert.equal((await sql`select 1 from public.mp_credential_events`).length, 1);
    }),
});

Deno.test({
  name: "migrations create everything on fresh empty databases",
  fn: async () => {
    await withScratchDb(BACKEND_URL, async (url, sql) => {
      await migrateTwice(url, BACKEND_PROJECT, CACHE_FILE);
      await assertColumns(sql, "public.clients", {
        id: "uuid not null default gen_random_uuid()",
        mp_access_token: "text",
        mp_public_key: "text",
        ...CACHE_COLUMNS,
      });
      await assertRecorded(sql, CACHE_FILE);
      await assertLockedDown(sql, "public.clients");
    });
    await withScratchDb(ADMIN_URL, async (url, sql) => {
      await migrateTwice(url, ADMIN_PROJECT, MASTER_FILE);
      await assertColumns(sql, "public.nv_accounts", {
        id: "uuid not null default gen_random_uuid()",
        mp_connected: "boolean not null default false",
        mp_user_id: "bigint",
        mp_access_token_encrypted: "text",
        mp_refresh_token: "text",
        mp_public_key: "text",
        mp_expires_in: "integer",
        ...MASTER_COLUMNS,
      });
      await assertColumns(sql, "public.mp_oauth_states", {
        state_hash: "text not null",
        account_id: "uuid not null",
        code_verifier_encrypted: "text",
        created_at: "timestamp with time zone not null default now()",
        expires_at: "timestamp with time zone not null",
        consumed_at: "timestamp with time zone",
      });
      await assertColumns(sql, "public.mp_credential_events", {
        occurred_at: "timestamp with time zone not null default now()",
        account_id: "uuid",
        client_id: "uuid",
        event: "text not null",
        detail: "jsonb not null default '{}'::jsonb",
        request_id: "text",
      });
      await assertRecorded(sql, MASTER_FILE);
      await assertLockedDown(sql, "public.nv_accounts", ADMIN_TABLES);
    });
  },
});

/** A throwaway CLI project holding `files` as its migrations; removed by the caller. */
async function tempProject(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/supabase/migrations`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/supabase/config.toml`,
    'project_id = "scratch"\n\n[db]\nmajor_version = 15\n',
  );
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/supabase/migrations/${name}`, text);
  }
  return dir;
}

Deno.test({
  name: "CLI push: statements recorded as the CLI splits them, a failing file leaves nothing",
  fn: () =>
    withScratchDb(BACKEND_URL, async (url, sql) => {
      const dir = await tempProject({
        "20000101000001_tricky.sql": `-- a comment; with a semicolon
create table probe (v text);
/* a block comment; with a semicolon */
insert into probe values ('a;b'), ($$e;f$$), ($t$g;'h$t$);
create function "probe;fn"() returns text language plpgsql as $fn$ begin return 'x;y'; end $fn$;
insert into "probe" values ('it''s;');
-- only a comment; at the end
`,
      });
      try {
        assert.deepEqual(await migrate(url, dir), { applied: ["20000101000001"], skipped: [] });
        const [{ statements, name }] = await sql`select statements, name
          from supabase_migrations.schema_migrations where version = '20000101000001'`;
        assert.equal(name, "tricky");
        assert.ok(statements.length >= 4, "one entry per statement");
        const values = await sql`select v from probe`;
        assert.deepEqual(values.map((r) => r.v), ["a;b", "e;f", "g;'h", "it's;"]);
        assert.equal((await sql`select "probe;fn"() as r`)[0].r, "x;y");
        const [{ owner }] = await sql`select tableowner as owner from pg_tables
          where tablename = 'probe'`;
        assert.equal(owner, "postgres", "migrations run as postgres");

        // A failing file leaves nothing behind and is not recorded.
        await Deno.writeTextFile(
          `${dir}/supabase/migrations/20000101000002_broken.sql`,
          "create table broken (v int);\nselect 1/0;\n",
        );
        await assert.rejects(migrate(url, dir), MigrationError);
        assert.equal((await sql`select to_regclass('broken') as t`)[0].t, null);
        const versions = await sql`select version from supabase_migrations.schema_migrations`;
        assert.deepEqual(versions.map((r) => r.version), ["20000101000001"]);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }),
});

Deno.test({
  name: "CLI push as postgres: a migration that needs a superuser fails, as on deploy",
  fn: () =>
    withScratchDb(BACKEND_URL, async (url, sql) => {
      const statements = [
        "alter system set work_mem = '8MB'",
        "create role mig_superuser superuser",
        "create extension plpgsql_check",
      ];
      for (const [i, statement] of statements.entries()) {
        const dir = await tempProject({ [`2000010100001${i}_superuser.sql`]: `${statement};\n` });
        try {
          await assert.rejects(migrate(url, dir), (err: Error) => {
            assert.ok(err instanceof MigrationError, statement);
            assert.match(err.message, /permission denied|must be superuser|42501/i, statement);
            return true;
          });
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      }
      assert.equal(
        (await sql`select count(*)::int as n from pg_roles
        where rolname = 'mig_superuser'`)[0].n,
        0,
      );
      const [{ rolsuper }] = await sql`select rolsuper from pg_roles where rolname = current_user`;
      assert.equal(rolsuper, false, "postgres is not a superuser");
    }),
});

Deno.test({
  name: "every migration file of both projects runs as postgres on the stack's databases",
  fn: async () => {
    // The stack pushed them at start (as postgres); a second push is a no-op.
    for (
      const [url, workdir, dir] of [
        [BACKEND_URL, BACKEND_PROJECT, BACKEND_MIGRATIONS],
        [ADMIN_URL, ADMIN_PROJECT, ADMIN_MIGRATIONS],
      ]
    ) {
      const asPostgres = new URL(url);
      asPostgres.username = "postgres";
      const files: string[] = [];
      for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".sql")) files.push(e.name);
      const again = await migrate(asPostgres.href, workdir);
      assert.deepEqual(again.applied, []);
      assert.deepEqual(again.skipped, files.map((f) => f.slice(0, 14)).sort());
    }
  },
});
