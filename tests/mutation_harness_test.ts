/** The mutation harness's pure parts (tests/mutation/lib.ts), no stack needed. */
import assert from "node:assert/strict";
import {
  anchorProblems,
  applyMutant,
  buildGraph,
  combineRuns,
  confirmSelection,
  enforcedFiles,
  importSpecifiers,
  isTestFile,
  judge,
  junitFileSeconds,
  LEAK_SCAN,
  MIGRATOR,
  parseJunit,
  readRun,
  replaceSection,
  resolveSpecifier,
  runExitCode,
  runOrder,
  runtimeEdges,
  sampleSeeded,
  score,
  seededRandom,
  selectTests,
} from "./mutation/lib.ts";
import { MUTANTS, WITHOUT_MUTANT } from "./mutation/mutants.ts";

/** The repository's tracked files (what the harness's scratch copies hold). */
async function trackedFiles(): Promise<string[]> {
  const out = await new Deno.Command("git", { args: ["ls-files"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean);
}

Deno.test("importSpecifiers: static, multi-line, type-only, side-effect, re-export and dynamic imports", () => {
  const src = `import assert from "node:assert/strict";
import {
  a,
  type B,
} from "../shared/a.ts";
import type { C } from './c.ts';
import "./side.ts";
export { d } from "../shared/d.ts";
export * from "./e.ts";
const m = await import("./dyn.ts");
const n = await import(path);
import { x } from "npm:postgres";
import { y } from "postgres";`;
  assert.deepEqual(importSpecifiers(src).sort(), [
    "../shared/a.ts",
    "../shared/d.ts",
    "./c.ts",
    "./dyn.ts",
    "./e.ts",
    "./side.ts",
  ]);
});

Deno.test("resolveSpecifier joins relative paths inside the repository", () => {
  assert.equal(resolveSpecifier("tests/core_test.ts", "../shared/a.ts"), "shared/a.ts");
  assert.equal(resolveSpecifier("shared/refresh/run.ts", "./save.ts"), "shared/refresh/save.ts");
  assert.equal(
    resolveSpecifier("supabase/functions/x/index.ts", "../../../shared/p/h.ts"),
    "shared/p/h.ts",
  );
});

Deno.test("selectTests: every test importing the module directly or indirectly, nearest first; none by name", () => {
  const sources = new Map([
    ["shared/store/clients.ts", `import { x } from "../platform/db.ts";`],
    ["shared/platform/db.ts", ``],
    ["shared/sync/sync.ts", `import { writeCache } from "../store/clients.ts";`],
    ["shared/checkout/get_config.ts", `import { s } from "../sync/sync.ts";`],
    [
      "supabase/functions/get-mp-config/index.ts",
      `import "../../../shared/checkout/get_config.ts";`,
    ],
    ["tests/_stack.ts", `import { connect } from "../shared/platform/db.ts";`],
    [
      "local/stack.ts",
      `import { createGateway } from "./gateway.ts";\nimport { m } from "./migrate.ts";`,
    ],
    ["local/gateway.ts", ``],
    ["local/migrate.ts", ``],
    ["tests/clients_test.ts", `import { writeCache } from "../shared/store/clients.ts";`],
    ["tests/sync_test.ts", `const s = await import("../shared/sync/sync.ts");`],
    ["tests/over_http_test.ts", `import { env } from "./_stack.ts";`],
    ["tests/unrelated_test.ts", `import { y } from "../shared/platform/db.ts";`],
    // Named for the module, imports nothing of it: not selected.
    ["tests/get_config_test.ts", `import assert from "node:assert/strict";`],
  ]);
  const graph = buildGraph(sources, {
    "tests/_stack.ts": ["local/stack.ts"],
    "local/gateway.ts": ["supabase/functions/get-mp-config/index.ts"],
    "local/migrate.ts": ["admin/supabase/migrations/1_x.sql"],
  });
  const tests = [...sources.keys()].filter((f) => f.endsWith("_test.ts"));
  assert.deepEqual(selectTests(graph, "shared/store/clients.ts", tests), [
    "tests/clients_test.ts",
    "tests/sync_test.ts",
    "tests/over_http_test.ts",
  ]);
  assert.deepEqual(selectTests(graph, "shared/checkout/get_config.ts", tests), [
    "tests/over_http_test.ts",
  ]);
  // A migration: every test that starts the stack.
  assert.deepEqual(selectTests(graph, "admin/supabase/migrations/1_x.sql", tests), [
    "tests/over_http_test.ts",
  ]);
  assert.deepEqual(selectTests(graph, "shared/platform/db.ts", tests).sort(), [
    "tests/clients_test.ts",
    "tests/over_http_test.ts",
    "tests/sync_test.ts",
    "tests/unrelated_test.ts",
  ]);
});

Deno.test("applyMutant: `from` must occur exactly once, and change something", () => {
  assert.deepEqual(applyMutant("a < b", { from: "<", to: "<=" }), { ok: true, text: "a <= b" });
  const twice = applyMutant("a < b < c", { from: "<", to: "<=" });
  assert.equal(twice.ok, false);
  assert.match((twice as { reason: string }).reason, /2 times/);
  const none = applyMutant("a < b", { from: ">", to: ">=" });
  assert.match((none as { reason: string }).reason, /0 times/);
  assert.equal(applyMutant("a", { from: "", to: "b" }).ok, false);
  assert.equal(applyMutant("a < b", { from: "<", to: "<" }).ok, false);
  // `$&` and friends in `to` are taken literally (no replacement patterns).
  assert.deepEqual(applyMutant("x = ${v}", { from: "${v}", to: "$&${v}" }), {
    ok: true,
    text: "x = $&${v}",
  });
});

Deno.test("every mutant of the harness: unique name, invariants 1–10, `from` exactly once in its file", async () => {
  const names = new Set<string>();
  const perInvariant = new Map<number, number>();
  for (const m of MUTANTS) {
    assert.ok(!names.has(m.name), `duplicate name ${m.name}`);
    names.add(m.name);
    assert.ok(m.invariants.length > 0 && m.invariants.every((i) => i >= 1 && i <= 10), m.name);
    for (const i of m.invariants) perInvariant.set(i, (perInvariant.get(i) ?? 0) + 1);
  }
  // Every anchor found exactly once in the tree as it is now: a refactor that moves a mutant's
  // text fails here, at once, not hours into a run.
  const problems = await anchorProblems(
    MUTANTS,
    (f) => Deno.readTextFile(new URL(`../${f}`, import.meta.url)),
  );
  assert.deepEqual(
    [...problems].map(([name, why]) => `${name}: ${why}`),
    [],
    "mutants whose text is not found exactly once (fix the mutant or the code)",
  );
  assert.ok(MUTANTS.length >= 40);
  for (let i = 1; i <= 10; i++) {
    assert.ok((perInvariant.get(i) ?? 0) >= 3, `invariant ${i}: ${perInvariant.get(i) ?? 0}`);
  }
});

Deno.test("mutants in every file docs/invariants.md names under Enforced, at least three per invariant, one in its own files", async () => {
  const files = await trackedFiles();
  const doc = await Deno.readTextFile(new URL("../docs/invariants.md", import.meta.url));
  const enforced = enforcedFiles(doc, files);
  assert.deepEqual(enforced.unresolved, [], "names under Enforced that match no file, or several");
  assert.deepEqual([...enforced.byInvariant.keys()].sort((a, b) => a - b), [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
  ]);
  const mutated = new Set(MUTANTS.map((m) => m.file));
  const named = new Set([...enforced.byInvariant.values()].flat());
  const viaFolder = new Set([...enforced.folders.values()].flat());
  const missing = [...named].filter((f) => !mutated.has(f) && !(f in WITHOUT_MUTANT)).sort();
  assert.deepEqual(missing, [], "files under Enforced without a mutant");
  for (const [file, why] of Object.entries(WITHOUT_MUTANT)) {
    // An exemption only for a file named through its folder, with a reason, and still true.
    assert.ok(viaFolder.has(file), `${file} is exempt but not named through a folder`);
    assert.ok(why.length > 20, file);
    assert.ok(!mutated.has(file), `${file} is exempt and has a mutant: drop the exemption`);
  }
  for (const [inv, own] of enforced.byInvariant) {
    const tagged = MUTANTS.filter((m) => m.invariants.includes(inv));
    assert.ok(tagged.length >= 3, `invariant ${inv}: ${tagged.length} mutants`);
    assert.ok(
      tagged.some((m) => own.includes(m.file)),
      `invariant ${inv}: no mutant in a file its Enforced paragraph names (${own.join(", ")})`,
    );
  }
  // What the paragraphs name today, at least (a paragraph losing its files fails here).
  for (
    const f of [
      "shared/mercadopago/signature.ts",
      "shared/events/cursor.ts",
      "shared/refresh/may_start_call.ts",
      "shared/store/connections.ts",
      "shared/probe/probe.ts",
      "shared/checkout/report.ts",
      "shared/sync/sync.ts",
      "shared/sync/sync_batch.ts",
      "admin/supabase/migrations/20261130000300_mp_retention_cron.sql",
    ]
  ) {
    assert.ok(named.has(f), `${f} named under Enforced`);
  }
});

Deno.test("enforcedFiles: paths, folders, bare names and migrations by their ending; docs and code names left out", () => {
  const files = [
    "shared/store/clients.ts",
    "shared/sync/sync.ts",
    "shared/sync/sync_batch.ts",
    "shared/events/lanes.ts",
    "admin/supabase/migrations/1_mp_public_edges.sql",
    "supabase/migrations/2_mp_public_edges.sql",
    "admin/supabase/migrations/3_mp_retention_cron.sql",
    "tests/sync_test.ts",
  ];
  const doc = `# The invariants

## 1. One

- Enforced: \`writeCache\` in \`shared/store/clients.ts\`; \`shared/sync/\` and
  \`lanes.ts\` (see \`docs/atomic-state.md\`); \`where a < b\`.
- Tested: \`tests/sync_test.ts\`.

## 2. Two

- Enforced: Admin migration \`…_mp_public_edges.sql\`, retention (\`…_mp_retention_cron.sql\`).

## 3. Three

- Enforced: \`…_mp_public_edges.sql\`, \`shared/gone.ts\`, \`gone.ts\`.
`;
  const r = enforcedFiles(doc, files);
  assert.deepEqual(r.byInvariant.get(1), [
    "shared/events/lanes.ts",
    "shared/store/clients.ts",
    "shared/sync/sync.ts",
    "shared/sync/sync_batch.ts",
  ]);
  assert.deepEqual([...r.folders], [["shared/sync/", [
    "shared/sync/sync.ts",
    "shared/sync/sync_batch.ts",
  ]]]);
  assert.deepEqual(r.byInvariant.get(2), [
    "admin/supabase/migrations/1_mp_public_edges.sql",
    "admin/supabase/migrations/3_mp_retention_cron.sql",
  ]);
  // Two migrations of that name and no "Admin migration" to choose: unresolved, as is a file gone.
  assert.deepEqual(r.unresolved, [
    "invariant 3: `…_mp_public_edges.sql` → 2 files",
    "invariant 3: `shared/gone.ts` → 0 files",
    "invariant 3: `gone.ts` → 0 files",
  ]);
});

Deno.test("anchorProblems: a text found twice or not at all, and a missing file, are named", async () => {
  const tree: Record<string, string> = { "a.ts": "x < y; z < w", "b.sql": "where a = b" };
  const read = (f: string) =>
    f in tree ? Promise.resolve(tree[f]) : Promise.reject(new Error("no such file"));
  const m = (name: string, file: string, from: string) => ({
    name,
    invariants: [1],
    file,
    from,
    to: "!",
  });
  const problems = await anchorProblems([
    m("ok", "b.sql", "a = b"),
    m("twice", "a.ts", " < "),
    m("none", "a.ts", "<="),
    m("gone", "c.ts", "x"),
  ], read);
  assert.deepEqual([...problems], [
    ["twice", "`from` occurs 2 times"],
    ["none", "`from` occurs 0 times"],
    ["gone", "c.ts does not exist"],
  ]);
});

Deno.test("runExitCode: an invalid mutant fails the run, as a survivor or an error does", () => {
  assert.equal(runExitCode({ survived: 0, error: 0, invalid: 0 }), 0);
  assert.equal(runExitCode({ survived: 0, error: 0, invalid: 1 }), 1);
  assert.equal(runExitCode({ survived: 1, error: 0, invalid: 0 }), 1);
  assert.equal(runExitCode({ survived: 0, error: 1, invalid: 0 }), 1);
});

Deno.test("sampleSeeded: the same seed draws the same kills, without repeats; another seed others", () => {
  const items = Array.from({ length: 50 }, (_, i) => `m${i}`);
  const a = sampleSeeded(items, 10, 42);
  assert.deepEqual(a, sampleSeeded(items, 10, 42));
  assert.equal(a.length, 10);
  assert.equal(new Set(a).size, 10);
  assert.ok(a.every((x) => items.includes(x)));
  assert.notDeepEqual(a, sampleSeeded(items, 10, 43));
  assert.deepEqual(sampleSeeded(items.slice(0, 3), 10, 1).sort(), ["m0", "m1", "m2"]);
  const r = seededRandom(7);
  const xs = Array.from({ length: 1000 }, r);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  assert.ok(new Set(xs).size > 990);
});

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="deno test" tests="3" failures="1" errors="0" time="1.3">
  <testsuite name="./tests/a_test.ts" tests="3" disabled="0" errors="0" failures="1">
    <testcase name="fence &lt; holds &amp; reports" classname="./tests/a_test.ts" time="0.3" line="5" col="6">
    </testcase>
    <testcase name="revoke is final" classname="./tests/a_test.ts" time="0.2" line="9" col="6">
      <failure message="Uncaught error">AssertionError</failure>
    </testcase>
    <testcase name="ignored" classname="./tests/a_test.ts" time="0" line="12" col="6"><skipped/></testcase>
    <testcase name="self-closing" classname="./tests/b_test.ts" time="0.1"/>
  </testsuite>
</testsuites>`;

const UP = "local test stack up in 4.2s\n";

Deno.test("parseJunit: each test case by file and name, failed, skipped or passed", () => {
  assert.deepEqual(
    [...parseJunit(JUNIT)],
    [
      ["tests/a_test.ts › fence < holds & reports", "passed"],
      ["tests/a_test.ts › revoke is final", "failed"],
      ["tests/a_test.ts › ignored", "skipped"],
      ["tests/b_test.ts › self-closing", "passed"],
    ],
  );
});

Deno.test("readRun: no stack, a harness crash, no report or a timeout is an error, whatever the exit", () => {
  assert.equal(
    readRun("test harness: stack.env never written\ntests: 0 passed, 1 failed", undefined).error,
    "harness: stack.env never written",
  );
  assert.equal(readRun("tests: 0 passed, 1 failed", JUNIT).error, "the stack did not start");
  assert.equal(readRun(UP + "tests: 0 passed, 1 failed", undefined).error, "no JUnit report");
  assert.equal(readRun(UP, "<testsuites></testsuites>").error, "empty JUnit report");
  assert.equal(readRun(UP, JUNIT, true).error, "timeout");
  const ok = readRun(UP + "leak scan: 41 secrets, none in the logs ... ok\n", JUNIT);
  assert.equal(ok.error, undefined);
  assert.equal(ok.tests.get(LEAK_SCAN), "passed");
  const leaked = readRun(UP + "leak scan: 1 of 41 secrets appear in the logs ... FAILED\n", JUNIT);
  assert.equal(leaked.tests.get(LEAK_SCAN), "failed");
});

Deno.test("judge: a kill is a test that passed at baseline failing; anything unreadable is an error", () => {
  const base = readRun(UP, JUNIT); // a: passes; revoke: fails at baseline; b: passes
  const same = readRun(UP, JUNIT);
  // The test failing at baseline judges nothing: the same report is a survivor.
  assert.deepEqual(judge(base, same), { verdict: "survived", killers: [] });
  const killed = readRun(
    UP,
    JUNIT.replace(`time="0.1"/>`, `time="0.1"><error message="x"/></testcase>`),
  );
  assert.deepEqual(judge(base, killed), {
    verdict: "killed",
    killers: ["tests/b_test.ts › self-closing"],
  });
  // The harness's leak scan judges too.
  const leak = readRun(UP + "leak scan: 1 of 41 secrets appear in the logs ... FAILED\n", JUNIT);
  const baseScan = readRun(UP + "leak scan: 41 secrets, none in the logs ... ok\n", JUNIT);
  assert.deepEqual(judge(baseScan, leak).killers, [LEAK_SCAN]);
  // A stack that did not start is an error, never a kill — though the exit code says failed.
  assert.equal(judge(base, readRun("tests: 0 passed, 1 failed", undefined)).verdict, "error");
  assert.equal(judge(base, readRun(UP, JUNIT, true)).verdict, "error");
  // A baseline test missing from the mutant's report, none failing: an error, not a survivor.
  const missing = readRun(UP, JUNIT.replace(/<testcase name="self-closing"[^>]*\/>/, ""));
  assert.equal(judge(base, missing).verdict, "error");
  // A baseline that cannot be read judges nothing.
  assert.equal(judge(readRun("", undefined), same).verdict, "error");
});

Deno.test("combineRuns and score: runs that disagree are reported; errors and invalid are left out", () => {
  const k = { verdict: "killed" as const, killers: ["t1"] };
  const s = { verdict: "survived" as const, killers: [] };
  const e = { verdict: "error" as const, killers: [], reason: "timeout" };
  assert.equal(combineRuns([k, k]).disagreement, undefined);
  assert.equal(combineRuns([k, s]).verdict, "error");
  assert.equal(combineRuns([k, s]).disagreement, "killed vs survived");
  assert.equal(combineRuns([k, e]).verdict, "killed");
  assert.equal(combineRuns([k, e]).disagreement, "killed vs error");
  // Killed in both runs, by other tests: an agreement, its killers noted.
  const moved = combineRuns([k, { verdict: "killed", killers: ["t2"] }]);
  assert.equal(moved.disagreement, undefined);
  assert.equal(moved.killersDiffer, true);
  assert.equal(combineRuns([k, k]).killersDiffer, false);
  assert.deepEqual(
    score([
      { verdict: "killed" },
      { verdict: "killed" },
      { verdict: "killed" },
      { verdict: "survived" },
      { verdict: "survived", equivalent: true },
      { verdict: "error" },
      { verdict: "invalid" },
    ]),
    { killed: 3, survived: 1, error: 1, invalid: 1, equivalent: 1, score: 0.75 },
  );
});

Deno.test("replaceSection: replaces the named section only, or appends it", () => {
  const doc = "# R\n\n## A\n\nold a\n\n## Mutation score\n\nold\n\n## C\n\nc\n";
  assert.equal(
    replaceSection(doc, "Mutation score", "new"),
    "# R\n\n## A\n\nold a\n\n## Mutation score\n\nnew\n\n## C\n\nc\n",
  );
  assert.equal(replaceSection("# R\n", "Mutation score", "x"), "# R\n\n## Mutation score\n\nx\n");
});

Deno.test("runOrder: one order for every run — files off the stack first, then the stack's users quickest first", () => {
  const secs = junitFileSeconds(JUNIT);
  assert.deepEqual([...secs], [["tests/a_test.ts", 0.5], ["tests/b_test.ts", 0.1]]);
  const usesStack = new Set(["tests/a_test.ts", "tests/b_test.ts"]);
  const all = runOrder(
    ["tests/a_test.ts", "tests/z_test.ts", "tests/b_test.ts", "tests/c_test.ts"],
    usesStack,
    secs,
  );
  assert.deepEqual(all, [
    "tests/c_test.ts",
    "tests/z_test.ts",
    "tests/b_test.ts",
    "tests/a_test.ts",
  ]);
  // A mutant's selection, ordered the same way, is a subsequence of the baseline's order.
  const some = runOrder(["tests/a_test.ts", "tests/z_test.ts", "tests/b_test.ts"], usesStack, secs);
  assert.deepEqual(some, all.filter((t) => some.includes(t)));
});

Deno.test("confirmSelection: a kill is run again by its killers' files; survivors and errors are not", () => {
  const picked = confirmSelection([
    {
      name: "a",
      verdict: "killed",
      killers: ["tests/b_test.ts › one", "tests/a_test.ts › two", "tests/b_test.ts › three"],
    },
    { name: "leak", verdict: "killed", killers: ["harness › leak scan"] },
    { name: "s", verdict: "survived", killers: [] },
    { name: "e", verdict: "error", killers: [] },
  ]);
  assert.deepEqual([...picked], [["a", ["tests/a_test.ts", "tests/b_test.ts"]], ["leak", []]]);
});

Deno.test("runtimeEdges: in this repository every migration and every function is judged by the stack's tests", async () => {
  const out = await new Deno.Command("git", { args: ["ls-files"], stdout: "piped" }).output();
  const files = new TextDecoder().decode(out.stdout).split("\n").filter(Boolean);
  const sources = new Map<string, string>();
  for (const f of files.filter((f) => f.endsWith(".ts"))) {
    sources.set(f, await Deno.readTextFile(f));
  }
  const graph = buildGraph(sources, runtimeEdges(files));
  const tests = files.filter(isTestFile);
  for (
    const f of [
      "admin/supabase/migrations/20261206000200_mp_event_outbox.sql",
      "supabase/migrations/20261206000300_mp_schedules.sql",
      "supabase/functions/mp-deliver-events/index.ts",
    ]
  ) {
    assert.ok(files.includes(f), f);
    assert.ok(selectTests(graph, f, tests).includes("tests/events_test.ts"), `${f} is judged`);
  }
  assert.throws(
    () => runtimeEdges(files.filter((f) => f !== MIGRATOR)),
    /runtime edges from missing tooling\/migrate.ts/,
  );
});
