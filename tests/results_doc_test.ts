/**
 * bench/RESULTS.md is written by code only (no stack needed): every section that holds a table
 * opens with the command that wrote it, that command is a task of deno.json running a file that
 * exists, the sections bench/results.ts writes are exactly what it renders from the stored
 * results, and another generator's tables have the shape its source writes. The renderer and the
 * chaos aggregate compute "met" from the figures.
 */
import assert from "node:assert/strict";
import {
  BENCH_STORE,
  type ChaosLongRun,
  type ChaosRunRecord,
  loadBenchStore,
  loadChaosStore,
  ownSections,
  parseTables,
  renderResults,
  RESULTS_FILE,
  splitSections,
} from "../bench/results.ts";
import { aggregate } from "../bench/chaos_aggregate.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MARKER = /^Written by `deno task ([\w:-]+)[^`]*`(?: \(([\w./-]+)\))?/;

/** The generator file a section's marker names, through deno.json's tasks. */
async function generatorOf(text: string): Promise<string> {
  const first = text.split("\n").slice(1).find((l) => l.trim() !== "") ?? "";
  const m = first.match(MARKER);
  assert.ok(m, `no "Written by \`deno task …\`" marker: ${first.slice(0, 80)}`);
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks;
  const task = tasks[m[1]];
  assert.equal(typeof task, "string", `deno task ${m[1]} is not in deno.json`);
  const file = task.match(/^deno run -A (\S+\.ts)$/)?.[1];
  assert.ok(file, `deno task ${m[1]} does not run one file: ${task}`);
  if (m[2]) assert.equal(m[2], file, "the marker names the task's own file");
  await Deno.stat(`${ROOT}${file}`);
  return file;
}

Deno.test("RESULTS.md: every section with a table names its generator, a task running a file that exists", async () => {
  const doc = await Deno.readTextFile(RESULTS_FILE);
  const sections = splitSections(doc).filter((s) => s.title !== null);
  assert.ok(sections.length >= 4);
  let tables = 0;
  for (const s of sections) {
    if (parseTables(s.text).length === 0) continue;
    tables++;
    await generatorOf(s.text);
  }
  assert.ok(tables >= 4, `${tables} sections with tables`);
  // No table outside a section, none before the first heading.
  assert.equal(parseTables(splitSections(doc)[0].text).length, 0);
});

Deno.test("RESULTS.md: the sections bench/results.ts writes are what it renders from bench/results/", async () => {
  const doc = await Deno.readTextFile(RESULTS_FILE);
  const store = await loadBenchStore();
  const long = await loadChaosStore();
  assert.ok(store.benches.length > 0, `${BENCH_STORE} holds no bench`);
  // Re-rendering changes nothing: no row, verdict or sentence was written by hand.
  assert.equal(renderResults(doc, store, long), doc);
  const byTitle = new Map(splitSections(doc).map((s) => [s.title, s.text]));
  for (const own of ownSections(store, long)) {
    assert.equal(byTitle.get(own.title)?.trimEnd(), own.text.trimEnd(), own.title!);
    const file = await generatorOf(own.text);
    assert.ok(["bench/run.ts", "bench/chaos_aggregate.ts"].includes(file), file);
  }
  // Every stored row is in the document, its verdict as stored.
  const figures = parseTables(byTitle.get("Figures")!).flatMap((t) => t.rows);
  const stored = store.benches.flatMap((e) => e.rows);
  assert.equal(figures.length, stored.length);
  for (const [i, row] of stored.entries()) {
    assert.equal(figures[i][0], row.bench);
    assert.equal(figures[i][6], row.met === null ? "" : row.met ? "yes" : "NO");
  }
});

Deno.test("RESULTS.md: another generator's tables have the shape its source writes", async () => {
  const doc = await Deno.readTextFile(RESULTS_FILE);
  const own = new Set(ownSections({ benches: [] }, null).map((s) => s.title));
  const others = splitSections(doc).filter((s) => s.title !== null && !own.has(s.title));
  for (const s of others) {
    const source = await Deno.readTextFile(`${ROOT}${await generatorOf(s.text)}`);
    for (const t of parseTables(s.text)) {
      const header = `| ${t.header.join(" | ")} |`;
      assert.ok(source.includes(header), `${s.title}: ${header} is not written by its generator`);
      for (const row of t.rows) assert.equal(row.length, t.header.length, `${s.title}: ${row}`);
    }
  }
});

Deno.test("renderResults keeps another generator's section and drops hand-written text", () => {
  const previous = [
    "# Benchmark results",
    "",
    "## Figures",
    "",
    "| bench | metric | value | baseline | ratio | target | met |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    "| chaos | steps | 20959 | | | ≥ 20000 | yes, of the system |",
    "",
    "## Notes by hand",
    "",
    "The system broke no invariant.",
    "",
    "## Mutation score",
    "",
    "Written by `deno task mutants` at noon.",
    "",
  ].join("\n");
  const out = renderResults(previous, { benches: [] }, null);
  assert.ok(!out.includes("yes, of the system"));
  assert.ok(!out.includes("Notes by hand"));
  assert.ok(out.includes("## Mutation score\n\nWritten by `deno task mutants` at noon.\n"));
  assert.equal(renderResults(out, { benches: [] }, null), out, "a fixpoint");
  assert.match(out, /none aggregated: not measured at this commit/);
});

const run = (over: Partial<ChaosRunRecord>): ChaosRunRecord => ({
  log: ".local/chaos-0/chaos-1.log",
  stack: ".local/chaos-0",
  commit: "0123456789abcdef",
  commitFrom: "summary",
  seed: 1,
  steps: 1000,
  sequences: 100,
  seconds: 600,
  faults: { sandbox_timeout: 3 },
  faultsCounted: "set",
  violations: 0,
  replays: [],
  ...over,
});

/** The "met" cells of the long run's verdict table. */
function verdicts(long: ChaosLongRun): Record<string, string> {
  const text = ownSections({ benches: [] }, long).find((s) => s.title === "Chaos: the long run")!
    .text;
  const table = parseTables(text).find((t) => t.header[0] === "metric")!;
  return Object.fromEntries(table.rows.map((r) => [r[0], r[3]]));
}

Deno.test("chaos long run: met is computed — 20,000 steps and 0 violations, the run's own count", () => {
  const at = { command: "deno task chaos:aggregate x", date: "2026-12-07T00:00:00Z" };
  assert.deepEqual(
    verdicts({ ...at, runs: [run({ steps: 15_000 }), run({ seed: 2, steps: 5_000 })] }),
    { "steps in all": "yes", "violations in all": "yes" },
  );
  assert.deepEqual(
    verdicts({
      ...at,
      runs: [run({ steps: 19_000, violations: 3, replays: ["--seed 1 --path 26"] })],
    }),
    { "steps in all": "NO", "violations in all": "NO" },
  );
  const text = ownSections({ benches: [] }, {
    ...at,
    runs: [run({}), run({ seed: 1, stack: ".local/chaos-1" })],
  }).find((s) => s.title === "Chaos: the long run")!.text;
  assert.match(text, /2 runs of 1 distinct seeds/);
  assert.match(text, /faults set \(fired or not\)/);
});

Deno.test("chaos:aggregate reads each chaos-summary line, faults fired when told, and never guesses a commit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const summary = (o: Record<string, unknown>) =>
      `chaos-summary ${
        JSON.stringify({ seed: 7, steps: 1250, runs: 150, seconds: 900, faults: { a: 5 }, ...o })
      }`;
    await Deno.writeTextFile(
      `${dir}/chaos-7.log`,
      `step 1\n${summary({ violations: [], commit: "aaaaaaa", faultsFired: { a: 2 } })}\n`,
    );
    await Deno.writeTextFile(
      `${dir}/chaos-8.log`,
      `${summary({ seed: 8, violations: ["inv 2\nreplay: --seed 8 --path 3:1"] })}\n`,
    );
    await Deno.writeTextFile(`${dir}/other.txt`, "not a log");
    await assert.rejects(aggregate([dir]), /names no commit; pass --commit/);
    const runs = await aggregate([dir], "bbbbbbb");
    assert.deepEqual(
      runs.map((r) => [r.seed, r.commit, r.commitFrom, r.faultsCounted, r.faults, r.violations]),
      [
        [7, "aaaaaaa", "summary", "fired", { a: 2 }, 0],
        [8, "bbbbbbb", "--commit", "set", { a: 5 }, 1],
      ],
    );
    assert.deepEqual(runs[1].replays, ["replay: --seed 8 --path 3:1"]);
    await Deno.writeTextFile(`${dir}/chaos-9.log`, "cut short\n");
    await assert.rejects(aggregate([dir], "bbbbbbb"), /no chaos-summary line/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
