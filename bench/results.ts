/**
 * bench/RESULTS.md as code writes it: the figures each run stored (bench/results/*.json)
 * rendered into sections, each opening with the command that wrote it ("Written by `deno task
 * …`"), and the sections other generators write (the mutation score) kept as they are. Nothing
 * here measures; `renderResults` is a pure function of what the runs stored.
 */
import type { BenchRow } from "./types.ts";
import { markdownTable } from "./table.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** Where the bench runs store their rows. */
export const BENCH_STORE = `${ROOT}bench/results/bench.json`;
/** Where `deno task chaos:aggregate` stores the long chaos run it aggregated. */
export const CHAOS_STORE = `${ROOT}bench/results/chaos_long_run.json`;
/** The document. */
export const RESULTS_FILE = `${ROOT}bench/RESULTS.md`;

/** One run of `deno task bench` (several benches measured together). */
export interface BenchRunInfo {
  /** The command as run, e.g. `deno task bench --only events`. */
  command: string;
  /** The commit measured (HEAD when the run started). */
  commit: string;
  /** Whether tracked files differed from that commit when the run started (null: not recorded). */
  dirty: boolean | null;
  /** When the run started (ISO 8601). */
  date: string;
  /** How long the whole run took, in seconds. */
  seconds: number;
  /** The benches it ran, in order. */
  benches: string[];
  /** CPU, RAM, OS, Deno and PostgreSQL of the machine it ran on. */
  machine: [string, string][];
  /** Where the record came from when a run did not store it itself. */
  source?: string;
}

/** One bench's rows as its last run measured them. */
export interface BenchEntry {
  /** The bench's name in bench/run.ts (`checkout`, `refresh`, …). */
  name: string;
  run: BenchRunInfo;
  rows: BenchRow[];
}

/** bench/results/bench.json. */
interface BenchStore {
  benches: BenchEntry[];
}

/** One chaos run (one seed on one stack) as its log's `chaos-summary` line reports it. */
export interface ChaosRunRecord {
  /** The log it was read from, relative to the repository. */
  log: string;
  /** The stack it ran on: the log's directory. */
  stack: string;
  commit: string;
  /** `summary` when the log names its commit, `--commit` when the command line gave it. */
  commitFrom: "summary" | "--commit";
  seed: number;
  steps: number;
  /** Command sequences run. */
  sequences: number;
  seconds: number;
  /** Faults by kind: those that fired, when the summary tells them apart; else those set. */
  faults: Record<string, number>;
  faultsCounted: "fired" | "set";
  /** The sites of the MercadoPago applications it ran with (`["single"]`: the single app); absent in older records. */
  apps?: string[];
  /** Faults of one application alone that fired, in all, by site. */
  faultsPerApp?: Record<string, number>;
  violations: number;
  /** The replay line of each violation, as the run printed it. */
  replays: string[];
}

/** bench/results/chaos_long_run.json. */
export interface ChaosLongRun {
  /** The aggregating command as run. */
  command: string;
  /** When it aggregated (ISO 8601). */
  date: string;
  runs: ChaosRunRecord[];
}

/** A `## ` section of the document: its title (null before the first) and its text. */
interface Section {
  title: string | null;
  text: string;
}

/** The document cut at its `## ` headings. */
export function splitSections(doc: string): Section[] {
  const out: Section[] = [];
  let current: Section = { title: null, text: "" };
  for (const line of doc.split("\n")) {
    if (line.startsWith("## ")) {
      out.push(current);
      current = { title: line.slice(3).trim(), text: "" };
    }
    current.text += `${line}\n`;
  }
  out.push(current);
  return out.filter((s) => s.title !== null || s.text.trim() !== "");
}

/** The Markdown tables of `text`: each its header cells and its rows' cells. */
export function parseTables(text: string): { header: string[]; rows: string[][] }[] {
  const cells = (line: string) =>
    line.trim().replace(/^\|/, "").replace(/\|$/, "").split(/(?<!\\)\|/).map((c) =>
      c.trim().replaceAll("\\|", "|")
    );
  const tables: { header: string[]; rows: string[][] }[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].startsWith("|") || !/^\|(\s*:?-+:?\s*\|)+$/.test(lines[i + 1] ?? "")) continue;
    const table = { header: cells(lines[i]), rows: [] as string[][] };
    for (i += 2; i < lines.length && lines[i].startsWith("|"); i++) {
      table.rows.push(cells(lines[i]));
    }
    tables.push(table);
  }
  return tables;
}

const short = (commit: string) => commit.slice(0, 7);
const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
const runKey = (r: BenchRunInfo) => `${r.date} ${r.commit}`;
const dirtyNote = (dirty: boolean | null) =>
  dirty === null ? " (uncommitted changes not recorded)" : dirty ? " with uncommitted changes" : "";

/** The "Figures" section: each bench's rows, under the run that measured them. */
function figuresSection(store: BenchStore): string {
  const parts = [
    "## Figures",
    "",
    "Written by `deno task bench` (bench/run.ts) from bench/results/bench.json: each bench's " +
    "rows as its last run stored them (`deno task bench --only <bench>` re-measures one; " +
    '`deno task bench:render` re-renders this file without measuring). A bench\'s "met" is its ' +
    "own verdict on its figures, computed when it ran. The commit says what was measured: a " +
    "row measured at another commit than the one you read is not a measure of this one.",
  ];
  for (const e of store.benches) {
    parts.push(
      "",
      `### ${e.name}`,
      "",
      `Measured at commit ${short(e.run.commit)}${
        dirtyNote(e.run.dirty)
      } by the run of ${e.run.date} (see "Runs").`,
      "",
      markdownTable(e.rows),
    );
  }
  return parts.join("\n");
}

/** The "Runs" section: when, at which commit and on which machine each run measured. */
function runsSection(store: BenchStore): string {
  const runs = new Map<string, BenchRunInfo>();
  for (const e of store.benches) runs.set(runKey(e.run), e.run);
  const esc = (s: string) => s.replaceAll("|", "\\|");
  const lines = [
    "## Runs",
    "",
    "Written by `deno task bench` (bench/run.ts) from bench/results/bench.json: the runs whose " +
    "rows the figures above are. Every figure is compared with a baseline measured in the same " +
    "run, on the same machine; the ratios are what carry over to other machines.",
    "",
    "| date | commit | command | benches | seconds | machine | source |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of runs.values()) {
    const machine = r.machine.map(([k, v]) => `${k}: ${v}`).join("; ");
    lines.push(
      `| ${
        [
          r.date,
          `${short(r.commit)}${dirtyNote(r.dirty)}`,
          `\`${r.command}\``,
          r.benches.join(", "),
          r.seconds.toFixed(0),
          machine,
          r.source ?? "stored by the run",
        ].map(esc).join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}

/** Whether a long chaos run's totals meet the bars: ≥ 20,000 steps and no violation. */
function chaosVerdicts(runs: ChaosRunRecord[]) {
  const steps = runs.reduce((a, r) => a + r.steps, 0);
  const violations = runs.reduce((a, r) => a + r.violations, 0);
  return {
    steps,
    violations,
    stepsMet: steps >= 20_000,
    violationsMet: violations === 0,
  };
}

/**
 * The applications the chaos runs ran with (runs per set of sites) and the faults of one
 * application alone that fired, per site; null when no run recorded its applications (records
 * older than the runs with several applications).
 */
function appsLine(runs: ChaosRunRecord[]): string | null {
  if (!runs.some((r) => r.apps)) return null;
  const bySet = new Map<string, number>();
  const perApp: Record<string, number> = {};
  for (const r of runs) {
    const set = (r.apps ?? ["not recorded"]).join(", ");
    bySet.set(set, (bySet.get(set) ?? 0) + 1);
    for (const [site, n] of Object.entries(r.faultsPerApp ?? {})) {
      perApp[site] = (perApp[site] ?? 0) + n;
    }
  }
  const sets = [...bySet].map(([set, n]) => `${set} (${n} run${n > 1 ? "s" : ""})`).join("; ");
  const faults = Object.entries(perApp).sort(([a], [b]) => a.localeCompare(b))
    .map(([site, n]) => `${site} ${n}`).join(", ") || "none";
  return `Applications (MercadoPago sites): ${sets}. Faults fired of one application alone: ${faults}.`;
}

/** The "Chaos: the long run" section, from the runs `deno task chaos:aggregate` stored. */
function chaosSection(long: ChaosLongRun | null): string {
  const head = [
    "## Chaos: the long run",
    "",
    "Written by `deno task chaos:aggregate` (bench/chaos_aggregate.ts) from the logs of the runs " +
    "it was given (commit, seed, steps, faults and violations as each run's `chaos-summary` line " +
    "reports them), stored in bench/results/chaos_long_run.json.",
  ];
  if (!long || long.runs.length === 0) {
    return [
      ...head,
      "",
      "| runs | steps | violations | met |",
      "| --- | --- | --- | --- |",
      "| none aggregated: not measured at this commit | | | |",
    ].join("\n");
  }
  const runs = long.runs;
  const v = chaosVerdicts(runs);
  const seeds = new Set(runs.map((r) => r.seed)).size;
  const commits = [...new Set(runs.map((r) => short(r.commit)))];
  const counted = new Set(runs.map((r) => r.faultsCounted));
  const faultsLabel = counted.size === 1 && counted.has("fired")
    ? "faults fired"
    : "faults set (fired or not)";
  const perMin = (steps: number, seconds: number) => (steps / Math.max(1, seconds) * 60).toFixed(0);
  const byKind: Record<string, number> = {};
  for (const r of runs) {
    for (const [k, n] of Object.entries(r.faults)) byKind[k] = (byKind[k] ?? 0) + n;
  }
  const allSteps = runs.reduce((a, r) => a + r.steps, 0);
  const allSeconds = runs.reduce((a, r) => a + r.seconds, 0);
  const lines = [
    ...head,
    "",
    `Aggregated by \`${long.command}\` on ${long.date}: ${runs.length} runs of ${seeds} ` +
    `distinct seeds at commit${commits.length > 1 ? "s" : ""} ${commits.join(", ")}.`,
    "",
    `| stack | commit | seed | steps | sequences | ${faultsLabel} | violations | steps/min |`,
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ...runs.map((r) =>
      `| ${r.stack} | ${short(r.commit)}${
        r.commitFrom === "--commit" ? " (given)" : ""
      } | ${r.seed} | ${r.steps} | ${r.sequences} | ${sum(r.faults)} | ${r.violations} | ${
        perMin(r.steps, r.seconds)
      } |`
    ),
    `| **all** | ${commits.length} commit${
      commits.length > 1 ? "s" : ""
    } | ${runs.length} runs, ${seeds} seeds | **${allSteps}** | ${
      runs.reduce((a, r) => a + r.sequences, 0)
    } | **${sum(byKind)}** | **${v.violations}** | ${perMin(allSteps, allSeconds)} per run |`,
    "",
    "| metric | value | target | met |",
    "| --- | --- | --- | --- |",
    `| steps in all | ${v.steps} | ≥ 20000 | ${v.stepsMet ? "yes" : "NO"} |`,
    `| violations in all | ${v.violations} | 0 | ${v.violationsMet ? "yes" : "NO"} |`,
    "",
    `${faultsLabel[0].toUpperCase()}${faultsLabel.slice(1)} by kind: ${
      Object.entries(byKind).sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k} ${n}`)
        .join(", ") || "none"
    }.`,
  ];
  const apps = appsLine(runs);
  if (apps) lines.push("", apps);
  const replays = runs.flatMap((r) => r.replays.map((line) => `- seed ${r.seed}: ${line}`));
  if (replays.length > 0) lines.push("", "Violations, each with its replay line:", "", ...replays);
  return lines.join("\n");
}

/** The sections written from the stored results, in the order the document keeps them. */
export function ownSections(store: BenchStore, long: ChaosLongRun | null): Section[] {
  return [
    { title: "Figures", text: figuresSection(store) },
    { title: "Runs", text: runsSection(store) },
    { title: "Chaos: the long run", text: chaosSection(long) },
  ].map((s) => ({ ...s, text: `${s.text}\n\n` }));
}

/** The document's head: what it is, and where the narrative lives. */
const HEAD = [
  "# Benchmark results",
  "",
  "Every section below is written by the command its first line names, from what a run stored; " +
  "none is edited by hand (tests/results_doc_test.ts re-renders the stored results and checks " +
  "each section's generator). How each figure is measured, and what past violations were: " +
  "docs/benchmarks.md.",
  "",
  "",
].join("\n");

/**
 * bench/RESULTS.md from the stored results: the head, the sections these results make, then
 * the sections other generators wrote in `previous` (e.g. "Mutation score"), unchanged and in
 * their order. Any other text of `previous` (a hand-written section) is dropped.
 */
export function renderResults(
  previous: string,
  store: BenchStore,
  long: ChaosLongRun | null,
): string {
  const own = ownSections(store, long);
  const mine = new Set([...own.map((s) => s.title), "Machine", "How they are measured"]);
  const others = splitSections(previous).filter((s) =>
    s.title !== null && !mine.has(s.title) && /^Written by `deno task /m.test(s.text)
  );
  const body = [...own, ...others].map((s) => s.text.trimEnd()).join("\n\n");
  return `${HEAD}${body}\n`;
}

/** The stored bench results (none yet: no benches). */
export async function loadBenchStore(file = BENCH_STORE): Promise<BenchStore> {
  try {
    return JSON.parse(await Deno.readTextFile(file)) as BenchStore;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { benches: [] };
    throw err;
  }
}

/** The stored long chaos run, or null when none was aggregated. */
export async function loadChaosStore(file = CHAOS_STORE): Promise<ChaosLongRun | null> {
  try {
    return JSON.parse(await Deno.readTextFile(file)) as ChaosLongRun;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** `store` with `entries` in place of the benches of the same name (new ones appended). */
export function mergeBenches(
  store: BenchStore,
  entries: BenchEntry[],
  order: string[],
): BenchStore {
  const byName = new Map(store.benches.map((e) => [e.name, e]));
  for (const e of entries) byName.set(e.name, e);
  const rank = (n: string) => (order.includes(n) ? order.indexOf(n) : order.length);
  return { benches: [...byName.values()].sort((a, b) => rank(a.name) - rank(b.name)) };
}

/** Writes JSON as the stores keep it (two-space indent, final newline). */
export async function writeJson(file: string, value: unknown): Promise<void> {
  await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** Re-renders bench/RESULTS.md (or `file`) from the stores. */
export async function writeResults(
  file = RESULTS_FILE,
  store?: BenchStore,
  long?: ChaosLongRun | null,
): Promise<void> {
  const previous = await Deno.readTextFile(file).catch(() => "");
  await Deno.writeTextFile(
    file,
    renderResults(
      previous,
      store ?? await loadBenchStore(),
      long === undefined ? await loadChaosStore() : long,
    ),
  );
}
