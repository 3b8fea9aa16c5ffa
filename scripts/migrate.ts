/**
 * `deno task migrate`: pushes both projects' migrations with the pinned Supabase CLI
 * (`tooling/migrate.ts` does the work; a second push is a no-op).
 *
 *   deno task migrate --backend-url <url> --admin-url <url>
 *
 * Without flags the URLs come from BACKEND_DB_URL (or SUPABASE_DB_URL) and ADMIN_DB_URL.
 * This script never prints a password; `deno task` itself echoes its arguments, so prefer the
 * environment variables for URLs with one.
 */
import { parseArgs } from "node:util";
import { ADMIN_PROJECT, BACKEND_PROJECT, migrate, redactor } from "../tooling/migrate.ts";

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
