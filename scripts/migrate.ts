/**
 * `deno task migrate`: applies both projects' migrations with the real Supabase CLI
 * (`supabase db push --db-url … --workdir …`, the version pinned below and in deno.lock), as
 * a deploy does. The CLI records them in `supabase_migrations.schema_migrations(version, name,
 * statements)` itself; a second push is a no-op. Connect as `postgres` (not a superuser on
 * Supabase): a migration that needs a superuser fails here as it would there.
 *
 *   deno task migrate --backend-url <url> --admin-url <url>
 *
 * Without flags the URLs come from BACKEND_DB_URL (or SUPABASE_DB_URL) and ADMIN_DB_URL.
 * The CLI insists on TLS unless the URL says `sslmode=disable` (the local clusters' URLs do).
 * This script never prints a password; `deno task` itself echoes its arguments, so prefer the
 * environment variables for URLs with one.
 */
import postgres from "postgres";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** The Supabase CLI, pinned (npm package `supabase`; deno.json has the same specifier). */
export const SUPABASE_CLI = "npm:supabase@2.117.0";

/** The Backend CLI project: the repository root (`supabase/config.toml`, `supabase/migrations`). */
export const BACKEND_PROJECT = fileURLToPath(new URL("../", import.meta.url)).replace(/\/$/, "");
/** The Admin CLI project: `admin/` (`admin/supabase/config.toml`, `admin/supabase/migrations`). */
export const ADMIN_PROJECT = `${BACKEND_PROJECT}/admin`;
/** Absolute path of the Backend project's migrations. */
export const BACKEND_MIGRATIONS = `${BACKEND_PROJECT}/supabase/migrations`;
/** Absolute path of the Admin project's migrations. */
export const ADMIN_MIGRATIONS = `${ADMIN_PROJECT}/supabase/migrations`;

/** Removes every password of `urls` (raw and percent-decoded) from `text`. */
export function redactor(urls: string[]): (text: string) => string {
  const secrets: string[] = [];
  for (const url of urls) {
    const password = URL.parse(url)?.password;
    if (password) secrets.push(password, decodeURIComponent(password));
  }
  return (text) => secrets.reduce((out, p) => out.replaceAll(p, "***"), text);
}

/** Runs the pinned Supabase CLI with `args` in the repository (so deno.lock pins it). */
export async function supabaseCli(
  args: string[],
  opts: { redact?: (text: string) => string } = {},
): Promise<{ success: boolean; code: number; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", SUPABASE_CLI, ...args],
    cwd: BACKEND_PROJECT,
    env: { NO_COLOR: "1", SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const output = decoder.decode(out.stdout) + decoder.decode(out.stderr);
  return { success: out.success, code: out.code, output: (opts.redact ?? ((s) => s))(output) };
}

async function appliedVersions(url: string): Promise<string[]> {
  const sql = postgres(url, { onnotice: () => {}, max: 1, prepare: false });
  try {
    const [{ exists }] = await sql`select to_regclass('supabase_migrations.schema_migrations')
      is not null as exists`;
    if (!exists) return [];
    const rows = await sql<{ version: string }[]>`
      select version from supabase_migrations.schema_migrations order by version`;
    return rows.map((r) => r.version);
  } finally {
    await sql.end();
  }
}

/** Raised when `supabase db push` fails; the message is the CLI's output, passwords redacted. */
export class MigrationError extends Error {}

/**
 * Pushes the migrations of the CLI project at `workdir` to the database at `url` with
 * `supabase db push`; returns the versions it applied and the ones already there.
 */
export async function migrate(
  url: string,
  workdir: string,
  opts: { log?: (line: string) => void } = {},
): Promise<{ applied: string[]; skipped: string[] }> {
  const redact = redactor([url]);
  const before = await appliedVersions(url);
  const run = await supabaseCli(
    ["db", "push", "--db-url", url, "--workdir", workdir, "--yes"],
    { redact },
  );
  for (const line of run.output.split("\n")) if (line.trim()) opts.log?.(line.trim());
  if (!run.success) {
    throw new MigrationError(
      `supabase db push failed (exit ${run.code}): ${run.output.trim().replaceAll(/\s+/g, " ")}`,
    );
  }
  const after = await appliedVersions(url);
  return {
    applied: after.filter((v) => !before.includes(v)),
    skipped: after.filter((v) => before.includes(v)),
  };
}

if (import.meta.main) {
  let redact = (s: string) => s;
  let label = "migrate";
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: { "backend-url": { type: "string" }, "admin-url": { type: "string" } },
    });
    const env = (name: string) => Deno.env.get(name) || undefined;
    const targets = [
      {
        label: "backend",
        url: values["backend-url"] ?? env("BACKEND_DB_URL") ?? env("SUPABASE_DB_URL"),
        workdir: BACKEND_PROJECT,
      },
      { label: "admin", url: values["admin-url"] ?? env("ADMIN_DB_URL"), workdir: ADMIN_PROJECT },
    ].filter((t): t is typeof t & { url: string } => t.url !== undefined);
    if (targets.length === 0) {
      throw new Error(
        "no database: pass --backend-url/--admin-url or set BACKEND_DB_URL (or SUPABASE_DB_URL)/ADMIN_DB_URL",
      );
    }
    redact = redactor(targets.map((t) => t.url));
    for (const target of targets) {
      label = target.label;
      const { applied } = await migrate(target.url, target.workdir, {
        log: (line) => console.log(redact(`${label}: ${line}`)),
      });
      console.log(`${label}: ${applied.length} migration(s) applied`);
    }
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    console.error(redact(`${label}: error: ${message}`).replaceAll(/\s+/g, " "));
    Deno.exit(1);
  }
}
