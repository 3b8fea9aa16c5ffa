/**
 * The pure parts of the mutation harness (`tests/mutation/run.ts`), unit-tested by
 * `tests/mutation_harness_test.ts` without a stack: which tests judge a mutant (the import
 * graph), applying a mutant (its `from` must occur exactly once), reading deno's JUnit report,
 * the verdict against the baseline, and the score.
 */

/** One realistic bug: where it goes, what it replaces (exactly once), what it breaks. */
export interface Mutant {
  /** Unique, short, says what the bug is. */
  name: string;
  /** The invariants of docs/invariants.md it breaks (1–10). */
  invariants: number[];
  /** Repository-relative path of the file it changes (.ts or .sql). */
  file: string;
  /** Text that must occur exactly once in `file`. */
  from: string;
  /** What replaces it. */
  to: string;
  /**
   * Why the mutant cannot change any observable behaviour (it is then run, reported, and
   * left out of the score). Absent for an ordinary mutant.
   */
  equivalent?: string;
}

// ---------------------------------------------------------------------------------------------
// The import graph

/**
 * Relative specifiers a TypeScript source imports or re-exports: `import … from "…"`,
 * `import "…"`, `export … from "…"`, dynamic `import("…")` with a literal. Bare and URL
 * specifiers (npm:, jsr:, the import map) are not files of the repository and are left out.
 * Comments are not stripped: a specifier mentioned in a comment only adds a judge.
 */
export function importSpecifiers(source: string): string[] {
  const out = new Set<string>();
  const patterns = [
    /\bimport\s+(?:type\s+)?[\w*{}\s,$]*?\s*from\s*["']([^"']+)["']/g,
    /\bexport\s+(?:type\s+)?[\w*{}\s,$]*?\s*from\s*["']([^"']+)["']/g,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\s*\(\s*["']([^"']+)["']\s*[,)]/g,
  ];
  for (const re of patterns) {
    for (const m of source.matchAll(re)) {
      if (m[1].startsWith("./") || m[1].startsWith("../")) out.add(m[1]);
    }
  }
  return [...out];
}

/** Joins a relative specifier to the repository-relative path of the file importing it. */
export function resolveSpecifier(fromFile: string, specifier: string): string {
  const parts = fromFile.split("/").slice(0, -1);
  for (const seg of specifier.split("/")) {
    if (seg === "." || seg === "") continue;
    if (seg === "..") parts.pop();
    else parts.push(seg);
  }
  return parts.join("/");
}

/** file → the repository files it depends on. */
type Graph = Map<string, Set<string>>;

/**
 * The import graph of `sources` (repository-relative path → text), plus `runtimeEdges`:
 * dependencies no import statement shows (a module loaded by a computed path, files read at
 * run time), each `file → [files it loads]`.
 */
export function buildGraph(
  sources: Map<string, string>,
  runtimeEdges: Record<string, string[]> = {},
): Graph {
  const graph: Graph = new Map();
  for (const [file, text] of sources) {
    const deps = new Set(importSpecifiers(text).map((s) => resolveSpecifier(file, s)));
    for (const d of runtimeEdges[file] ?? []) deps.add(d);
    graph.set(file, deps);
  }
  for (const [file, deps] of Object.entries(runtimeEdges)) {
    if (!graph.has(file)) graph.set(file, new Set(deps));
  }
  return graph;
}

/**
 * Every file that depends on `target`, directly or through others (`target` included, at 0),
 * with the length of its shortest import chain to it.
 */
export function dependents(graph: Graph, target: string): Map<string, number> {
  const reverse = new Map<string, string[]>();
  for (const [file, deps] of graph) {
    for (const d of deps) {
      if (!reverse.has(d)) reverse.set(d, []);
      reverse.get(d)!.push(file);
    }
  }
  const seen = new Map([[target, 0]]);
  const todo = [target];
  for (let i = 0; i < todo.length; i++) {
    const depth = seen.get(todo[i])!;
    for (const f of reverse.get(todo[i]) ?? []) {
      if (!seen.has(f)) {
        seen.set(f, depth + 1);
        todo.push(f);
      }
    }
  }
  return seen;
}

/** A test file of the suite: `tests/<name>_test.ts` (what `deno test tests/` runs). */
export function isTestFile(path: string): boolean {
  return /^tests\/[^/]+_test\.ts$/.test(path);
}

/** The module of the stack that applies every migration of both projects. */
export const MIGRATOR = "tooling/migrate.ts";

/**
 * Dependencies no import statement shows, as `file → files it loads at run time`, over the
 * repository's `files`: a test that imports `tests/_stack.ts` talks to the stack `deno task
 * test` started (`local/stack.ts`), whose gateway loads every function's entrypoint by path
 * (supabase/config.toml) and whose migrator ({@link MIGRATOR}) pushes every migration. Throws
 * when one of those files is gone (moved without this following, every mutant of a function
 * or a migration would be judged by no test). Pure.
 */
export function runtimeEdges(files: string[]): Record<string, string[]> {
  const functions = files.filter((f) => /^supabase\/functions\/[^/]+\/index\.ts$/.test(f));
  const migrations = files.filter((f) => /^(admin\/)?supabase\/migrations\/[^/]+\.sql$/.test(f));
  const edges = {
    "tests/_stack.ts": ["local/stack.ts"],
    "local/gateway.ts": functions,
    [MIGRATOR]: migrations,
  };
  const gone = Object.keys(edges).filter((f) => !files.includes(f));
  if (gone.length > 0) throw new Error(`mutation harness: runtime edges from missing ${gone}`);
  return edges;
}

/**
 * The test files that judge a mutant of `file`: those depending on it, nearest first (a
 * direct importer before a test reaching it through the stack), then by name — so that with
 * `--fail-fast` the likeliest killers run first.
 */
export function selectTests(graph: Graph, file: string, testFiles: string[]): string[] {
  const deps = dependents(graph, file);
  return testFiles.filter((t) => deps.has(t))
    .sort((a, b) => deps.get(a)! - deps.get(b)! || (a < b ? -1 : a > b ? 1 : 0));
}

// ---------------------------------------------------------------------------------------------
// Applying a mutant

/** How often `needle` occurs in `haystack` (non-overlapping). */
function occurrences(haystack: string, needle: string): number {
  if (needle === "") return Infinity;
  return haystack.split(needle).length - 1;
}

/** The mutated source, or why the mutant cannot be applied (`from` not exactly once, a no-op). */
export function applyMutant(
  source: string,
  m: Pick<Mutant, "from" | "to">,
): { ok: true; text: string } | { ok: false; reason: string } {
  const n = occurrences(source, m.from);
  if (n !== 1) {
    return { ok: false, reason: `\`from\` occurs ${n === Infinity ? "everywhere" : n} times` };
  }
  if (m.from === m.to) return { ok: false, reason: "`to` equals `from`" };
  return { ok: true, text: source.replace(m.from, () => m.to) };
}

// ---------------------------------------------------------------------------------------------
// Reading a run

/** One test's result in a run. */
export type TestStatus = "passed" | "failed" | "skipped";

function unescapeXml(s: string): string {
  return s.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"')
    .replaceAll("&apos;", "'").replaceAll("&#39;", "'").replaceAll("&amp;", "&");
}

function attr(tag: string, name: string): string | undefined {
  const m = new RegExp(`\\s${name}="([^"]*)"`).exec(tag);
  return m ? unescapeXml(m[1]) : undefined;
}

/**
 * Deno's JUnit report as `classname › name` → status. A test case with `<failure>` or
 * `<error>` failed; `<skipped>` skipped. A name seen twice keeps its worst status.
 */
export function parseJunit(xml: string): Map<string, TestStatus> {
  const out = new Map<string, TestStatus>();
  const rank = { passed: 0, skipped: 1, failed: 2 };
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const tag = m[1];
    const body = m[3] ?? "";
    const name = attr(tag, "name") ?? "?";
    const cls = (attr(tag, "classname") ?? "").replace(/^\.\//, "");
    const key = cls ? `${cls} › ${name}` : name;
    const status: TestStatus = /<failure\b|<error\b/.test(body)
      ? "failed"
      : /<skipped\b/.test(body)
      ? "skipped"
      : "passed";
    const prev = out.get(key);
    if (!prev || rank[status] > rank[prev]) out.set(key, status);
  }
  return out;
}

/** Seconds each test file took in a JUnit report (`tests/x_test.ts` → sum of its cases). */
export function junitFileSeconds(xml: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(\/>|>)/g)) {
    const file = (attr(m[1], "classname") ?? "").replace(/^\.\//, "");
    out.set(file, (out.get(file) ?? 0) + Number(attr(m[1], "time") ?? 0));
  }
  return out;
}

/**
 * The one order every run takes its files in — the baseline and each mutant (a mutant's
 * selection is a subsequence of it): the files that do not use the shared stack first (they
 * cannot change what a later test finds in its databases, so leaving some out changes nothing
 * for the rest), then the stack's users quickest first by `seconds` (a JUnit report's times),
 * so that with `--fail-fast` a kill shows early. Ties by name.
 */
export function runOrder(
  tests: string[],
  usesStack: Set<string>,
  seconds: Map<string, number> = new Map(),
): string[] {
  const key = (t: string) => [usesStack.has(t) ? 1 : 0, usesStack.has(t) ? seconds.get(t) ?? 0 : 0];
  return [...new Set(tests)].sort((a, b) => {
    const [ka, kb] = [key(a), key(b)];
    return ka[0] - kb[0] || ka[1] - kb[1] || (a < b ? -1 : a > b ? 1 : 0);
  });
}

/** The harness's leak scan over the run's whole output, as one more check (`harness › leak scan`). */
export const LEAK_SCAN = "harness › leak scan";

/** The leak scan's result from the harness's output, if it got that far. */
function leakScanOf(output: string): TestStatus | undefined {
  const m = /^leak scan: .* \.\.\. (ok|FAILED)$/m.exec(output);
  return m ? (m[1] === "ok" ? "passed" : "failed") : undefined;
}

/** What a run of the harness produced, as the judge reads it. */
export interface RunReport {
  /** Why the run cannot be read (stack not up, harness crash, no report, timeout). */
  error?: string;
  /** Every test's status (JUnit, plus the leak scan). */
  tests: Map<string, TestStatus>;
}

/**
 * Reads one harness run: its output and its JUnit report (undefined when none was written).
 * A run is an error when the stack did not come up, the harness crashed, or no report exists;
 * the exit code is never read.
 */
export function readRun(
  output: string,
  junit: string | undefined,
  timedOut = false,
): RunReport {
  if (timedOut) return { error: "timeout", tests: new Map() };
  const crash = /^test harness: (.*)$/m.exec(output);
  if (crash) return { error: `harness: ${crash[1].slice(0, 200)}`, tests: new Map() };
  if (!/^local test stack up in /m.test(output)) {
    return { error: "the stack did not start", tests: new Map() };
  }
  if (junit === undefined) return { error: "no JUnit report", tests: new Map() };
  const tests = parseJunit(junit);
  if (tests.size === 0) return { error: "empty JUnit report", tests };
  const leak = leakScanOf(output);
  if (leak) tests.set(LEAK_SCAN, leak);
  return { tests };
}

// ---------------------------------------------------------------------------------------------
// Judging

/** A mutant's verdict. */
type Verdict = "killed" | "survived" | "error" | "invalid";

/** What one mutant run came to, and why. */
export interface Judgement {
  verdict: Verdict;
  /** Tests that passed at baseline and failed with the mutant (killed). */
  killers: string[];
  /** Why it is an error or invalid. */
  reason?: string;
}

/**
 * Judges a mutant's run against the baseline's: killed when at least one test that passed at
 * baseline failed; an error when the run cannot be read, or a test that passed at baseline is
 * missing or skipped and none failed; survived otherwise. Tests that did not pass at baseline
 * judge nothing.
 */
export function judge(baseline: RunReport, mutant: RunReport): Judgement {
  if (baseline.error) {
    return { verdict: "error", killers: [], reason: `baseline: ${baseline.error}` };
  }
  if (mutant.error) return { verdict: "error", killers: [], reason: mutant.error };
  const judges = [...baseline.tests].filter(([, s]) => s === "passed").map(([t]) => t);
  if (judges.length === 0) {
    return { verdict: "error", killers: [], reason: "no passing test at baseline" };
  }
  const killers = judges.filter((t) => mutant.tests.get(t) === "failed");
  if (killers.length > 0) return { verdict: "killed", killers };
  const missing = judges.filter((t) => mutant.tests.get(t) !== "passed");
  if (missing.length > 0) {
    return {
      verdict: "error",
      killers: [],
      reason: `${missing.length} baseline test(s) not run: ${missing.slice(0, 3).join("; ")}`,
    };
  }
  return { verdict: "survived", killers: [] };
}

/** Tests that did not pass at baseline (excluded from judging). */
export function baselineFailures(baseline: RunReport): string[] {
  return [...baseline.tests].filter(([, s]) => s !== "passed").map(([t, s]) => `${t} (${s})`);
}

/**
 * Combines several runs of one mutant: the verdict all runs agree on, else a disagreement.
 * Killing tests are the union; `killersDiffer` when runs that agree on a kill name other tests.
 */
export function combineRuns(
  runs: Judgement[],
): Judgement & { disagreement?: string; killersDiffer?: boolean } {
  const verdicts = [...new Set(runs.map((r) => r.verdict))];
  const killers = [...new Set(runs.flatMap((r) => r.killers))].sort();
  if (verdicts.length === 1) {
    const kills = runs.map((r) => r.killers.join("\n"));
    const sameKillers = new Set(kills).size === 1;
    return {
      verdict: verdicts[0],
      killers,
      reason: runs.find((r) => r.reason)?.reason,
      killersDiffer: !sameKillers,
    };
  }
  // Runs disagree: an error in one run does not make a kill in another count twice.
  const nonError = runs.filter((r) => r.verdict !== "error");
  const v = new Set(nonError.map((r) => r.verdict));
  return {
    verdict: v.size === 1 ? [...v][0] : "error",
    killers,
    reason: runs.map((r, i) => `run ${i + 1}: ${r.verdict}${r.reason ? ` (${r.reason})` : ""}`)
      .join("; "),
    disagreement: runs.map((r) => r.verdict).join(" vs "),
  };
}

/**
 * What `--confirm` runs again: each killed mutant with the test files of its killers (a kill by
 * the harness's leak scan alone names none: the mutant's whole selection judges it then). The
 * second run of `--runs 2` at a fraction of its cost; a kill that does not repeat shows as a
 * disagreement once both runs are merged. Pure.
 */
export function confirmSelection(
  results: { name: string; verdict: Verdict; killers: string[] }[],
): Map<string, string[]> {
  return new Map(
    results.filter((r) => r.verdict === "killed").map((r) => [
      r.name,
      [...new Set(r.killers.map((k) => k.split(" › ")[0]))].filter(isTestFile).sort(),
    ]),
  );
}

/** The score: killed / (killed + survived); equivalent, error and invalid mutants excluded. */
export function score(
  results: { verdict: Verdict; equivalent?: boolean }[],
): {
  killed: number;
  survived: number;
  error: number;
  invalid: number;
  equivalent: number;
  score: number | null;
} {
  const counted = results.filter((r) => !r.equivalent);
  const n = (v: Verdict) => counted.filter((r) => r.verdict === v).length;
  const killed = n("killed");
  const survived = n("survived");
  return {
    killed,
    survived,
    error: n("error"),
    invalid: n("invalid"),
    equivalent: results.length - counted.length,
    score: killed + survived === 0 ? null : killed / (killed + survived),
  };
}

/**
 * The exit status of a run: 1 when any mutant survived, could not be judged (error) or is
 * invalid (its text not found exactly once, or it does not type-check) — an invalid mutant
 * fails the run instead of being left out quietly; else 0.
 */
export function runExitCode(s: { survived: number; error: number; invalid: number }): number {
  return s.survived > 0 || s.error > 0 || s.invalid > 0 ? 1 : 0;
}

/** Replaces (or appends) the `## <title>` section of a Markdown document. */
export function replaceSection(doc: string, title: string, body: string): string {
  const heading = `## ${title}`;
  const lines = doc.split("\n");
  const start = lines.findIndex((l) => l.trim() === heading);
  const section = `${heading}\n\n${body.trim()}\n`;
  if (start === -1) return `${doc.trimEnd()}\n\n${section}`;
  let end = lines.findIndex((l, i) => i > start && /^## /.test(l));
  if (end === -1) end = lines.length;
  const before = lines.slice(0, start).join("\n");
  const after = lines.slice(end).join("\n");
  return `${before}${before ? "\n" : ""}${section}${after ? `\n${after}` : ""}`;
}

// ---------------------------------------------------------------------------------------------
// Where the invariants live (each section's "Enforced" line in docs/invariants.md)

/** The files docs/invariants.md names under "Enforced", per invariant, and the names it could not resolve. */
interface EnforcedFiles {
  /** Invariant → repository files (.ts, .sql) its "Enforced" paragraph names. */
  byInvariant: Map<number, string[]>;
  /** Folders named (`shared/sync/`) → the files of the folder they stand for. */
  folders: Map<string, string[]>;
  /** Names that look like files but match none, or more than one. */
  unresolved: string[];
}

/**
 * Reads the "Enforced" paragraph of each `## N.` section of docs/invariants.md and resolves the
 * files it names in backticks against the repository's `files`: a path (`shared/store/clients.ts`),
 * a folder (`shared/sync/`: each .ts file in it), a bare name (`lanes.ts`: the one file of that
 * name under `shared/`), a migration by its ending (`…_mp_refresh.sql`: the Admin one when the
 * paragraph says "Admin migration", else the only one). Docs (.md) and code names (functions,
 * tables) are not files and are left out. Pure.
 */
export function enforcedFiles(doc: string, files: string[]): EnforcedFiles {
  const byInvariant = new Map<number, string[]>();
  const folders = new Map<string, string[]>();
  const unresolved: string[] = [];
  const code = files.filter((f) => /\.(ts|sql)$/.test(f) && !/(^|\/)tests?\//.test(f));
  const sections = doc.split(/^## /m).slice(1);
  for (const section of sections) {
    const n = Number(/^(\d+)\./.exec(section)?.[1]);
    if (!Number.isInteger(n) || n < 1) continue;
    const m = /^- Enforced:([\s\S]*?)(?=^- |^## |(?![\s\S]))/m.exec(section);
    if (!m) {
      unresolved.push(`invariant ${n}: no "- Enforced:" paragraph`);
      continue;
    }
    const paragraph = m[1];
    const out = new Set<string>();
    for (const [, token] of paragraph.matchAll(/`([^`]+)`/g)) {
      let found: string[] | undefined;
      if (/\.md$/.test(token) || !/\.(ts|sql)$|\/$/.test(token) || /\s/.test(token)) continue;
      if (token.endsWith("/")) {
        found = code.filter((f) => f.startsWith(token) && !f.slice(token.length).includes("/"));
        if (found.length) folders.set(token, found);
      } else if (token.startsWith("…")) {
        const tail = token.slice(1);
        const all = code.filter((f) =>
          /supabase\/migrations\/[^/]+\.sql$/.test(f) && f.endsWith(tail)
        );
        const admin = all.filter((f) => f.startsWith("admin/"));
        found = all.length > 1 && /Admin migration/.test(paragraph) ? admin : all;
      } else if (token.includes("/")) {
        found = code.filter((f) => f === token);
      } else {
        found = code.filter((f) => f.startsWith("shared/") && f.split("/").pop() === token);
      }
      if (found.length === 0 || (!token.endsWith("/") && found.length > 1)) {
        unresolved.push(`invariant ${n}: \`${token}\` → ${found.length} files`);
      } else {
        for (const f of found) out.add(f);
      }
    }
    byInvariant.set(n, [...out].sort());
  }
  return { byInvariant, folders, unresolved };
}

/**
 * Why each of `mutants` cannot be applied to the tree `read` gives (its `from` not exactly once
 * in its file, a missing file, a no-op), by name; an empty map when every one applies.
 */
export async function anchorProblems(
  mutants: Mutant[],
  read: (file: string) => Promise<string>,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const texts = new Map<string, string | undefined>();
  for (const m of mutants) {
    if (!texts.has(m.file)) texts.set(m.file, await read(m.file).catch(() => undefined));
    const text = texts.get(m.file);
    if (text === undefined) {
      out.set(m.name, `${m.file} does not exist`);
      continue;
    }
    const applied = applyMutant(text, m);
    if (!applied.ok) out.set(m.name, applied.reason);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The independent full-suite confirmation

/** A seeded pseudo-random generator (mulberry32): the same seed, the same numbers. Pure. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` of `items` (all when fewer) drawn without replacement by `seed`, in drawing order. Pure. */
export function sampleSeeded<T>(items: T[], n: number, seed: number): T[] {
  const pool = [...items];
  const random = seededRandom(seed);
  const out: T[] = [];
  while (out.length < n && pool.length > 0) {
    out.push(pool.splice(Math.floor(random() * pool.length), 1)[0]);
  }
  return out;
}
