/**
 * `supabase db lint` (plpgsql_check, through the pinned CLI) on both databases of a running
 * local stack; used by `deno task lint-db` and by the test harness after the whole suite. The CLI's own `create extension plpgsql_check` needs a superuser, which
 * `postgres` is not, so the superuser installs it first (in `extensions`, as Supabase has
 * it), the CLI lints as `postgres`, and the extension is dropped again.
 */
import postgres from "postgres";
import { ADMIN_PROJECT, BACKEND_PROJECT, redactor, supabaseCli } from "./migrate.ts";

/** The outcome of linting one database. */
interface LintResult {
  label: string;
  ok: boolean;
  output: string;
}

/** Lints the database at `superuserUrl` (CLI project `workdir`) as `postgres`. */
async function lintDatabase(
  label: string,
  superuserUrl: string,
  workdir: string,
): Promise<LintResult> {
  const sql = postgres(superuserUrl, { onnotice: () => {}, max: 1, prepare: false });
  const asPostgres = new URL(superuserUrl);
  asPostgres.username = "postgres";
  asPostgres.password = "";
  try {
    const [{ installed }] = await sql`select exists (select 1 from pg_extension
      where extname = 'plpgsql_check') as installed`;
    if (!installed) await sql`create extension plpgsql_check with schema extensions`;
    try {
      const run = await supabaseCli(
        ["db", "lint", "--db-url", asPostgres.href, "--workdir", workdir, "--fail-on", "error"],
        { redact: redactor([superuserUrl]) },
      );
      return { label, ok: run.success, output: run.output.trim() };
    } finally {
      if (!installed) await sql`drop extension if exists plpgsql_check`;
    }
  } finally {
    await sql.end();
  }
}

/** Lints the Backend and Admin databases named in `env` (BACKEND_DB_URL, ADMIN_DB_URL). */
export async function lintDatabases(env: Record<string, string | undefined>) {
  const results: LintResult[] = [];
  for (
    const [label, url, workdir] of [
      ["backend", env.BACKEND_DB_URL, BACKEND_PROJECT],
      ["admin", env.ADMIN_DB_URL, ADMIN_PROJECT],
    ] as const
  ) {
    if (!url) throw new Error(`${label}: no database URL (BACKEND_DB_URL / ADMIN_DB_URL)`);
    results.push(await lintDatabase(label, url, workdir));
  }
  return results;
}
