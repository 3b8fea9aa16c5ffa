import postgres from "postgres";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** Absolute path of the Backend project's migrations (`supabase/migrations`). */
export const BACKEND_MIGRATIONS = fileURLToPath(new URL("../supabase/migrations", import.meta.url));
/** Absolute path of the Admin project's migrations (`supabase/admin/migrations`). */
export const ADMIN_MIGRATIONS = fileURLToPath(
  new URL("../supabase/admin/migrations", import.meta.url),
);

const FILE_NAME = /^(\d{14})_(.+)\.sql$/;
const LOCK_KEY = 7_310_559_024_117; // pg_advisory_xact_lock key shared by every runner

/** Applies every not-yet-applied migration file in `dir` to the database at `url`; returns file names. */
export async function migrate(
  url: string,
  dir: string,
  opts: { log?: (line: string) => void } = {},
): Promise<{ applied: string[]; skipped: string[] }> {
  const log = opts.log ?? (() => {});
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".sql")) continue;
    if (FILE_NAME.test(entry.name)) files.push(entry.name);
    else log(`ignored ${entry.name} (name must be <14-digit version>_<name>.sql)`);
  }
  files.sort();
  const twin = files.find((f, i) => i > 0 && f.slice(0, 14) === files[i - 1].slice(0, 14));
  if (twin) throw new Error(`${dir}: two migrations share version ${twin.slice(0, 14)}`);
  const result = { applied: [] as string[], skipped: [] as string[] };
  const sql = postgres(url, { onnotice: () => {}, max: 1 });
  try {
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
      await tx`create schema if not exists supabase_migrations`;
      await tx`create table if not exists supabase_migrations.schema_migrations
        (version text not null primary key)`;
      await tx`alter table supabase_migrations.schema_migrations
        add column if not exists statements text[], add column if not exists name text`;
    });
    for (const file of files) {
      const [, version, name] = FILE_NAME.exec(file)!;
      const statements = splitStatements(await Deno.readTextFile(`${dir}/${file}`));
      const applied = await sql.begin(async (tx) => {
        await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
        const done = await tx`select 1 from supabase_migrations.schema_migrations
          where version = ${version}`;
        if (done.length > 0) return false;
        for (const [i, statement] of statements.entries()) {
          await tx.unsafe(statement).catch((e: Error) => {
            throw new Error(`${file}, statement ${i + 1}: ${e.message}`, { cause: e });
          });
        }
        await tx`insert into supabase_migrations.schema_migrations (version, name, statements)
          values (${version}, ${name}, ${statements}::text[])`;
        return true;
      });
      result[applied ? "applied" : "skipped"].push(file);
      log(`${applied ? "applied" : "skipped"} ${file}`);
    }
  } finally {
    await sql.end();
  }
  return result;
}

/** Splits SQL into statements as the Supabase CLI records them: trimmed, without the `;`. */
function splitStatements(text: string): string[] {
  const statements: string[] = [];
  const dollarTag = /\$([A-Za-z_][A-Za-z0-9_]*)?\$/y;
  let start = 0;
  let hasCode = false; // the current statement has more than comments and blanks
  const end = (at: number) => {
    if (hasCode) statements.push(text.slice(start, at).trim());
    start = at + 1;
    hasCode = false;
  };
  for (let i = 0; i < text.length;) {
    const c = text[i];
    if (c === "-" && text[i + 1] === "-") {
      const eol = text.indexOf("\n", i);
      i = eol < 0 ? text.length : eol + 1;
    } else if (c === "/" && text[i + 1] === "*") {
      let depth = 0; // block comments nest
      do {
        const step = text.startsWith("/*", i) ? 1 : text.startsWith("*/", i) ? -1 : 0;
        depth += step;
        i += step ? 2 : 1;
      } while (depth > 0 && i < text.length);
    } else if (c === ";") {
      end(i++);
    } else if (c === "'" || c === '"') {
      // E'…' strings escape with a backslash; a doubled quote simply reopens the literal.
      const escapes = c === "'" && /[eE]/.test(text[i - 1] ?? "") && !/\w/.test(text[i - 2] ?? "");
      hasCode = true;
      for (i++; i < text.length && text[i] !== c; i++) if (escapes && text[i] === "\\") i++;
      i++;
    } else {
      dollarTag.lastIndex = i;
      const tag = c === "$" && !/[\w$]/.test(text[i - 1] ?? "") ? dollarTag.exec(text) : null;
      if (tag) {
        const close = text.indexOf(tag[0], i + tag[0].length);
        i = close < 0 ? text.length : close + tag[0].length;
      } else i++;
      if (!/\s/.test(c)) hasCode = true;
    }
  }
  end(text.length);
  return statements;
}

if (import.meta.main) {
  const secrets: string[] = [];
  const redact = (s: string) => secrets.reduce((out, p) => out.replaceAll(p, "***"), s);
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
        dir: BACKEND_MIGRATIONS,
      },
      { label: "admin", url: values["admin-url"] ?? env("ADMIN_DB_URL"), dir: ADMIN_MIGRATIONS },
    ].filter((t): t is typeof t & { url: string } => t.url !== undefined);
    if (targets.length === 0) {
      throw new Error(
        "no database: pass --backend-url/--admin-url or set BACKEND_DB_URL (or SUPABASE_DB_URL)/ADMIN_DB_URL",
      );
    }
    for (const { url } of targets) {
      const password = URL.parse(url)?.password;
      if (password) secrets.push(password, decodeURIComponent(password));
    }
    for (const target of targets) {
      label = target.label;
      await migrate(target.url, target.dir, {
        log: (line) => console.log(redact(`${label}: ${line}`)),
      });
    }
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    console.error(redact(`${label}: error: ${message}`).replaceAll(/\s+/g, " "));
    Deno.exit(1);
  }
}
