/**
 * `deno task lint-db`: `supabase db lint` on both databases of a running local stack, failing
 * on errors (`tooling/lint_db.ts` does the work; the test harness runs it after the whole suite).
 *
 *   deno task lint-db [--env-file .local/dev/stack.env]
 *
 * Without `--env-file` it reads BACKEND_DB_URL and ADMIN_DB_URL (direct, superuser) from the
 * environment.
 */
import { parseArgs } from "node:util";
import { parseEnvFile } from "../tooling/env_file.ts";
import { lintDatabases } from "../tooling/lint_db.ts";

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { "env-file": { type: "string" } } });
  const env = values["env-file"]
    ? parseEnvFile(await Deno.readTextFile(values["env-file"]))
    : Deno.env.toObject();
  let failed = false;
  try {
    for (const r of await lintDatabases(env)) {
      console.log(r.output.split("\n").map((l) => `${r.label}: ${l}`).join("\n"));
      console.log(`${r.label}: supabase db lint ${r.ok ? "ok" : "FAILED"}`);
      failed ||= !r.ok;
    }
  } catch (e) {
    console.error(`lint-db: ${e instanceof Error ? e.message : e}`);
    failed = true;
  }
  Deno.exit(failed ? 1 : 0);
}
