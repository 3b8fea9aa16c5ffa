/**
 * `deno task mutants [name…]`: measures the suite's strength instead of assuming it. Each
 * mutant is a small, realistic bug put into the invariant-critical code of a scratch copy of
 * HEAD (a detached git worktree); the tests named for it run against their own stack; a
 * mutant whose tests still pass is a survivor. Prints one line per mutant and exits 1 when
 * any survives. Slow (a stack per mutant): run by hand, not in CI.
 */

/** One bug: where it goes, what it replaces (exactly once), and the tests that must catch it. */
export interface Mutant {
  name: string;
  file: string;
  from: string;
  to: string;
  tests: string[];
}

/** The bugs mutation testing once found surviving, each now with a test that kills it. */
export const MUTANTS: Mutant[] = [
  {
    name: "revoke clears the cache only when the master row changed",
    file: "shared/connection/connection.ts",
    from: "  if (clientId) {",
    to: "  if (clientId && revoked.changed) {",
    tests: ["tests/survivors_test.ts"],
  },
  {
    name: "read-repair ignores a newer (revoked) cache row",
    file: "shared/checkout/get_config.ts",
    from: "(repaired.mp_token_version ?? -1) > write.version",
    to: "false && (repaired.mp_token_version ?? -1) > write.version",
    tests: ["tests/survivors_test.ts"],
  },
  {
    name: "the log scrubber loses its APP_USR- pattern",
    file: "shared/platform/log.ts",
    from: "/APP_USR-[A-Za-z0-9-]+/g,",
    to: "/APP_USR-NEVER-[A-Za-z0-9-]+/g,",
    tests: ["tests/log_scrub_test.ts"],
  },
  {
    name: "the log scrubber loses the access_token field name",
    file: "shared/platform/log.ts",
    from: "/^(access_token|refresh_token|",
    to: "/^(refresh_token|",
    tests: ["tests/log_scrub_test.ts"],
  },
  {
    name: "the orphan-cache clear without its version check",
    file: "shared/store/clients.ts",
    from: "       and c.mp_token_version is not distinct from x.version\n",
    to: "",
    tests: ["tests/survivors_test.ts"],
  },
  {
    name: "the single cache write without its version fence",
    file: "shared/store/clients.ts",
    from: "where id = ${clientId} and coalesce(mp_token_version, -1) < ${write.version}",
    to: "where id = ${clientId}",
    tests: ["--filter", "invariant 1 (deterministic)", "tests/core_test.ts"],
  },
  {
    name: "reconcile out of budget saves the page's end as its cursor (skips the drift left)",
    file: "shared/reconcile/reconcile.ts",
    from: "const stopAt = over ? take.at(-1)?.account.id ?? span.after : null;",
    to: "const stopAt = over ? span.until : null;",
    tests: ["tests/reconcile_scale_test.ts"],
  },
  {
    name: "the Backend's drift rule misses a cache one version behind",
    file: "shared/store/clients.ts",
    from: "coalesce(c.mp_token_version, -1) < a.account_version then 'stale'",
    to: "coalesce(c.mp_token_version, -1) < a.account_version - 1 then 'stale'",
    tests: ["tests/drift_sql_test.ts"],
  },
  {
    name: "the account counters ignore deletes",
    file: "admin/supabase/migrations/20261130000500_mp_account_totals.sql",
    from: "  if tg_op in ('UPDATE', 'DELETE') then",
    to: "  if tg_op in ('UPDATE') then",
    tests: ["tests/reconcile_scale_test.ts"],
  },
];

const ROOT = new URL("../../", import.meta.url).pathname;

async function run(cmd: string, args: string[], opts: Deno.CommandOptions = {}) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", ...opts })
    .output();
  return {
    ok: out.success,
    text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
  };
}

/** Applies `m` to a scratch worktree, runs its tests; "killed", "survived" or why not run. */
export async function tryMutant(m: Mutant, portBase: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "mutant-" });
  await Deno.remove(dir);
  const added = await run("git", ["-C", ROOT, "worktree", "add", "--detach", dir, "HEAD"]);
  if (!added.ok) return "not run (git worktree add failed)";
  try {
    const path = `${dir}/${m.file}`;
    const source = await Deno.readTextFile(path);
    if (source.split(m.from).length !== 2) return "not applicable (the code changed)";
    await Deno.writeTextFile(path, source.replace(m.from, m.to));
    const res = await run(Deno.execPath(), ["task", "--quiet", "test", ...m.tests], {
      cwd: dir,
      env: { STACK_PORT_BASE: String(portBase), STACK_STATE_DIR: ".local/mutant" },
    });
    const last = res.text.trim().split("\n").findLast((l) =>
      /^tests: \d+ passed, \d+ failed/.test(l)
    );
    if (!last) return "not run (no test summary)";
    const failed = Number(/(\d+) failed/.exec(last)![1]);
    return failed > 0 ? "killed" : "SURVIVED";
  } finally {
    await run("git", ["-C", ROOT, "worktree", "remove", "--force", dir]);
  }
}

if (import.meta.main) {
  const wanted = Deno.args;
  const mutants = MUTANTS.filter((m) =>
    wanted.length === 0 || wanted.some((w) => m.name.includes(w))
  );
  let survivors = 0;
  for (const m of mutants) {
    const verdict = await tryMutant(m, 26_321);
    if (verdict !== "killed") survivors++;
    console.log(`${verdict.padEnd(10)} ${m.name}`);
  }
  console.log(`mutants: ${mutants.length - survivors} killed, ${survivors} not killed`);
  Deno.exit(survivors > 0 ? 1 : 0);
}
