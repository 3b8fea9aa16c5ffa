/**
 * Privileges in both databases (docs/contract.md, schema): `anon` and `authenticated` cannot read any MP
 * column nor any MP table (OAuth states, audit trail, escrow…), while `service_role` can.
 * Checked by `set local role` inside a transaction as the postgres user, and by a catalog
 * sweep that also catches views and columns added later.
 */
import assert from "node:assert/strict";
import { adminDb, backendDb, closeDbs } from "./_stack.ts";
import type { Sql } from "../shared/platform/db.ts";

/** The test pools close once, after every test of this file. */
Deno.test.afterAll(closeDbs);

const CACHE_TABLES = new Set(["public.clients", "public.nv_accounts"]);
const SECRETISH = "(^mp_|token|secret|verifier|escrow)";

/** A relation that holds MP data: the MP columns of a kept table, or a whole MP table. */
interface Guarded {
  relation: string;
  schema: string;
  /** Columns anon/authenticated must not reach; every column for an MP table. */
  columns: string[];
  whole: boolean;
}

/** Finds every relation with MP data in the non-system schemas of a database. */
async function guarded(sql: Sql): Promise<Guarded[]> {
  const rows = await sql<{ schema: string; rel: string; cols: string[]; all_cols: string[] }[]>`
    select n.nspname as schema, c.relname as rel,
           array_agg(a.attname::text order by a.attnum)
             filter (where a.attname ~* ${SECRETISH}) as cols,
           array_agg(a.attname::text order by a.attnum) as all_cols
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
     where c.relkind in ('r', 'v', 'm', 'p', 'f')
       and n.nspname not in ('pg_catalog', 'information_schema')
       and n.nspname !~ '^pg_'
     group by n.nspname, c.relname`;
  const out: Guarded[] = [];
  for (const r of rows) {
    const relation = `${r.schema}.${r.rel}`;
    const mpTable = /^mp_|escrow/i.test(r.rel);
    if (CACHE_TABLES.has(relation)) {
      out.push({ relation, schema: r.schema, columns: r.cols ?? [], whole: false });
    } else if (mpTable) {
      out.push({ relation, schema: r.schema, columns: r.all_cols, whole: true });
    } else if (r.cols?.length) {
      out.push({ relation, schema: r.schema, columns: r.cols, whole: false });
    }
  }
  return out;
}

const quote = (ident: string) => `"${ident.replaceAll('"', '""')}"`;
const qualified = (relation: string) => relation.split(".").map(quote).join(".");

/** Runs `query` as `role` inside a transaction; resolves to the SQLSTATE it failed with, or "ok". */
async function asRole(sql: Sql, role: string, query: string): Promise<string> {
  try {
    await sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      await tx.unsafe(query);
    });
    return "ok";
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

async function checkDatabase(sql: Sql, expected: string[]) {
  const found = await guarded(sql);
  const names = found.map((g) => g.relation);
  for (const e of expected) assert.ok(names.includes(e), `${e} is among the guarded relations`);
  for (const g of found) {
    const rel = qualified(g.relation);
    for (const role of ["anon", "authenticated"]) {
      for (const col of g.columns) {
        const state = await asRole(sql, role, `select ${quote(col)} from ${rel} limit 0`);
        assert.equal(state, "42501", `${role} must not read ${g.relation}.${col}`);
      }
      const [priv] = await sql<{ table: boolean; any_column: boolean; cols: string[] }[]>`
        select has_table_privilege(${role}, ${g.relation}, 'SELECT') as table,
               has_any_column_privilege(${role}, ${g.relation}, 'SELECT') as any_column,
               coalesce(array_agg(col) filter (
                 where has_column_privilege(${role}, ${g.relation}, col, 'SELECT')
                    or has_column_privilege(${role}, ${g.relation}, col, 'UPDATE')
                    or has_column_privilege(${role}, ${g.relation}, col, 'INSERT')), '{}') as cols
          from unnest(${g.columns}::text[]) as col`;
      assert.equal(priv.table, false, `${role} has no table-wide SELECT on ${g.relation}`);
      if (g.schema === "public") {
        const [{ any }] = await sql`select has_table_privilege(${role}, ${g.relation},
          'TRUNCATE, TRIGGER, REFERENCES') as any`;
        assert.equal(any, false, `${role} has no TRUNCATE, TRIGGER or REFERENCES on ${g.relation}`);
      }
      assert.deepEqual(priv.cols, [], `${role} reaches no MP column of ${g.relation}`);
      if (g.whole) {
        assert.equal(priv.any_column, false, `${role} reads no column of ${g.relation}`);
        const state = await asRole(sql, role, `select count(*) from ${rel}`);
        assert.equal(state, "42501", `${role} must not read ${g.relation}`);
      }
    }
    if (g.schema === "public") {
      const cols = g.columns.map(quote).join(", ");
      const state = await asRole(sql, "service_role", `select ${cols} from ${rel} limit 1`);
      assert.equal(state, "ok", `service_role reads ${g.relation} (${g.columns.join(", ")})`);
    }
  }
  return found;
}

Deno.test("Backend DB: anon and authenticated cannot read the MP columns of clients; service_role can", async () => {
  const found = await checkDatabase(backendDb(), ["public.clients"]);
  const clients = found.find((g) => g.relation === "public.clients")!;
  for (const col of ["mp_access_token", "mp_public_key", "mp_token_version", "mp_synced_at"]) {
    assert.ok(clients.columns.includes(col), `clients.${col} is checked`);
  }
  const state = await asRole(backendDb(), "anon", "select id from public.clients limit 0");
  assert.equal(state, "ok", "the non-MP columns stay as the existing system had them");
});

Deno.test("Admin DB: anon and authenticated cannot read MP columns nor MP tables; service_role can", async () => {
  const found = await checkDatabase(adminDb(), [
    "public.nv_accounts",
    "public.mp_oauth_states",
    "public.mp_credential_events",
  ]);
  const accounts = found.find((g) => g.relation === "public.nv_accounts")!;
  for (
    const col of [
      "mp_access_token_encrypted",
      "mp_refresh_token",
      "mp_public_key",
      "mp_user_id",
      "mp_token_version",
    ]
  ) {
    assert.ok(accounts.columns.includes(col), `nv_accounts.${col} is checked`);
  }
  assert.ok(found.find((g) => g.relation === "public.mp_oauth_states")!.whole);
});
