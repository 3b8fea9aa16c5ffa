/**
 * Both projects' migrations through the real Supabase CLI (used by the local stack, the tests
 * and the operator command `scripts/migrate.ts`, which is `deno task migrate`): applies them
 * (`supabase db push --db-url … --workdir …`, the version pinned below and in deno.lock), as
 * a deploy does. The CLI records them in `supabase_migrations.schema_migrations(version, name,
 * statements)` itself; a second push is a no-op. Connect as `postgres` (not a superuser on
 * Supabase): a migration that needs a superuser fails here as it would there.
 * The CLI insists on TLS unless the URL says `sslmode=disable` (the local clusters' URLs do).
 * Passwords are redacted from everything it reports.
 */
import postgres from "postgres";
import { fileURLToPath } from "node:url";

/** The Supabase CLI, pinned (npm package `supabase`; deno.json has the same specifier). */
const SUPABASE_CLI = "npm:supabase@2.117.0";

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
