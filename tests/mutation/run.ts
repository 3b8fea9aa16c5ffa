/**
 * `deno task mutants [--all] [--runs N] [--jobs N] [--timeout MIN] [--list] [--no-write] [name…]`:
 * measures the suite's strength instead of assuming it (issue 21, item 2).
 *
 * 1. Scratch copies: one detached `git worktree` of HEAD per worker under `.local/mutation/`
 *    (commit first: uncommitted changes are not in it), dependencies cached once
 *    (`deno install --frozen`).
 * 2. Selection: each mutant is judged by every test file that depends on its module, read from
 *    the import graph of the repository's .ts files (`lib.ts`), plus the dependencies no import
 *    shows (lib.ts `runtimeEdges`): the stack a test reaches through `tests/_stack.ts` serves
 *    the functions (the gateway loads them by path) and was migrated from the working tree's
 *    SQL. `--all`: the whole suite judges every mutant.
 * 3. Baseline: the unmutated copy runs the union of all selections once, first, in the one
 *    order every run takes (lib.ts `runOrder`: files off the stack first, then the stack's
 *    users quickest first by `--order-from <junit.xml>`'s times, else by name); each mutant's
 *    files are a subsequence of it, so a test's neighbours before it are the baseline's (a test
 *    that passes only after others is not judged against a run where it went first). A test failing at baseline judges nothing (listed);
 *    a baseline that cannot be read stops the run.
 * 4. Each mutant: applied in a worker's copy (`from` exactly once, else `invalid`), a .ts
 *    mutant type-checked (`deno check`; failing → `invalid`), then `deno task test --fail-fast
 *    <selection>` on the worker's own ports (STACK_PORT_BASE 20000, 21000, …: below Linux's
 *    ephemeral range). Read from the JUnit report and the leak-scan line, never the exit code:
 *    killed = a test that passed at baseline failed; a stack that did not start, a harness
 *    crash, no report, a timeout → `error`. The copy is restored after each mutant.
 * 5. `--runs N` runs each mutant N times and reports every disagreement; `--confirm FILE`
 *    runs the kills of an earlier run again, each judged by the files of its killers only
 *    (written to `confirm.json`; merged with `--report --from FILE --again confirm.json`).
 *    `--jobs N`: up to four mutants at once (default 1; the machine has two cores, and the
 *    suite mostly waits). `--tests a,b`: judge by these files instead (development only;
 *    never written to bench/RESULTS.md).
 * Writes `.local/mutation/results.json` as it goes and the "Mutation score" section of
 * bench/RESULTS.md at the end (unless names were given or `--no-write`). Slow: run by hand.
 */
import { parseArgs } from "node:util";
import {
  anchorProblems,
  applyMutant,
  baselineFailures,
  buildGraph,
  combineRuns,
  confirmSelection,
  dependents,
  isTestFile,
  judge,
  type Judgement,
  junitFileSeconds,
  type Mutant,
  readRun,
  replaceSection,
  runExitCode,
  runOrder,
  type RunReport,
  runtimeEdges,
  sampleSeeded,
  score,
  selectTests,
  type TestStatus,
} from "./lib.ts";
import { MUTANTS } from "./mutants.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/**
 * Scratch copies and results (`MUTANTS_DIR`, default `.local/mutation`), and the workers' port
 * bases (`MUTANTS_PORT_BASE`, default 20000; each further worker 1000 above): two runs of the
 * harness side by side need both moved.
 */
const WORK = `${ROOT}${Deno.env.get("MUTANTS_DIR") ?? ".local/mutation"}`;
const FIRST_PORT = Number(Deno.env.get("MUTANTS_PORT_BASE") ?? 20_000);
const PORT_BASES = [0, 1, 2, 3].map((i) => FIRST_PORT + i * 1_000);
const STATE_DIR = ".local/mutant-stack";

async function git(args: string[], cwd = ROOT): Promise<string> {
  const out = await new Deno.Command("git", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`git ${args.join(" ")}: ${text.trim()}`);
  return text;
}

/** The import graph of HEAD (what the scratch copies hold) and its test files. */
async function headGraph(dir: string) {
  const files = (await git(["ls-files"], dir)).split("\n").filter(Boolean);
  const sources = new Map<string, string>();
  for (const f of files.filter((f) => f.endsWith(".ts"))) {
    sources.set(f, await Deno.readTextFile(`${dir}/${f}`));
  }
  return {
    graph: buildGraph(sources, runtimeEdges(files)),
    // The harness's own test reads the mutants' files (each `from` once): a mutant would
    // "fail" it by being applied. It tests the harness, not the code, so it judges nothing.
    tests: files.filter((f) => isTestFile(f) && f !== "tests/mutation_harness_test.ts"),
  };
}

/** A scratch copy of HEAD for worker `i` (or under the name given), made fresh. */
async function makeWorktree(i: number | string): Promise<string> {
  const dir = `${WORK}/${typeof i === "number" ? `w${i}` : i}`;
  await endLeftovers(dir);
  await git(["worktree", "remove", "--force", dir]).catch(() => {});
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await git(["worktree", "prune"]);
  await git(["worktree", "add", "--detach", dir, "HEAD"]);
  return dir;
}

async function removeWorktree(dir: string) {
  await git(["worktree", "remove", "--force", dir]).catch(() => {});
}

async function command(
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
  timeoutMs = 0,
): Promise<{ ok: boolean; output: string; timedOut: boolean }> {
  // setsid: the harness, its stack and the databases form one process group, ended together.
  const child = new Deno.Command("setsid", {
    args: [Deno.execPath(), ...args],
    cwd,
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let timedOut = false;
  const timer = timeoutMs > 0
    ? setTimeout(() => {
      timedOut = true;
      try {
        Deno.kill(-child.pid, "SIGTERM");
      } catch { /* gone */ }
      setTimeout(() => {
        try {
          Deno.kill(-child.pid, "SIGKILL");
        } catch { /* gone */ }
      }, 30_000);
    }, timeoutMs)
    : undefined;
  const out = await child.output();
  clearTimeout(timer);
  return {
    ok: out.success,
    output: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
    timedOut,
  };
}

/**
 * Ends what a run in `dir` left behind (a run killed at its timeout: the databases run in
 * sessions of their own, maybe stopped by a fault test): by process id, only processes whose
 * command line names this copy's stack directory. Continued first (a SIGSTOPped postgres
 * ignores everything else), then asked to stop fast, then killed.
 */
async function endLeftovers(dir: string) {
  const marker = `${dir}/${STATE_DIR}/`;
  const find = async () => {
    const ps = await new Deno.Command("ps", { args: ["-eo", "pid=,args="], stdout: "piped" })
      .output();
    return new TextDecoder().decode(ps.stdout).split("\n")
      .filter((l) => l.includes(marker))
      .map((l) => Number(l.trim().split(/\s+/)[0]))
      .filter((pid) => pid > 1 && pid !== Deno.pid);
  };
  for (const [signal, wait] of [["SIGCONT", 0], ["SIGINT", 5_000], ["SIGKILL", 2_000]] as const) {
    const pids = await find();
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        Deno.kill(pid, signal);
      } catch { /* gone */ }
    }
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** Runs `deno task test` in `dir` on the given tests and reads the run. */
async function runSuite(
  dir: string,
  portBase: number,
  tests: string[],
  opts: { failFast: number; timeoutMs: number },
): Promise<RunReport & { seconds: number; junit?: string }> {
  const junitPath = `${dir}/${STATE_DIR}/junit.xml`;
  await Deno.remove(junitPath).catch(() => {});
  const started = performance.now();
  const res = await command(
    [
      "task",
      "--quiet",
      "test",
      ...(opts.failFast > 0 ? [`--fail-fast=${opts.failFast}`] : []),
      ...tests,
    ],
    dir,
    { STACK_PORT_BASE: String(portBase), STACK_STATE_DIR: STATE_DIR },
    opts.timeoutMs,
  );
  const junit = await Deno.readTextFile(junitPath).catch(() => undefined);
  await endLeftovers(dir);
  await Deno.writeTextFile(`${dir}/${STATE_DIR}/harness.log`, res.output).catch(() => {});
  return {
    ...readRun(res.output, junit, res.timedOut),
    junit,
    seconds: Math.round((performance.now() - started) / 1000),
  };
}

/**
 * `--baseline results.json`: the baseline an earlier run recorded, used again only when
 * nothing but the harness (tests/mutation/) changed since its commit and it covers every
 * selected file — the same code and tests, so the same baseline; else the run stops.
 */
async function reusedBaseline(
  file: string,
  head: string,
  union: string[],
): Promise<RunReport & { seconds: number }> {
  const saved = JSON.parse(await Deno.readTextFile(file)) as {
    head: string;
    baseline: { seconds: number; tests?: Record<string, TestStatus>; order?: string[] };
  };
  if (saved.baseline.order && saved.baseline.order.join() !== union.join()) {
    throw new Error(`${file}'s baseline ran the files in another order`);
  }
  if (!saved.baseline.tests) throw new Error(`${file} holds no baseline tests`);
  const changed = (await git(["diff", "--name-only", saved.head, head])).split("\n")
    .filter((f) => f && !f.startsWith("tests/mutation/"));
  if (changed.length > 0) {
    throw new Error(
      `baseline of ${saved.head.slice(0, 10)} is not HEAD's: ${
        changed.slice(0, 5).join(", ")
      } changed`,
    );
  }
  const tests = new Map(Object.entries(saved.baseline.tests));
  const files = new Set([...tests.keys()].map((t) => t.split(" › ")[0]));
  const missing = union.filter((f) => !files.has(f));
  if (missing.length > 0) throw new Error(`baseline lacks ${missing.join(", ")}`);
  console.log(
    `baseline reused from ${file} (commit ${
      saved.head.slice(0, 10)
    }; only the harness changed since)`,
  );
  return { tests, seconds: saved.baseline.seconds };
}

/**
 * Applies `m` in the copy `dir` and type-checks a .ts mutant (`deno check`): why it is invalid,
 * or undefined once it is applied and checks. The caller restores the copy (`restore`).
 */
async function applyAndCheck(m: Mutant, dir: string): Promise<string | undefined> {
  const path = `${dir}/${m.file}`;
  const source = await Deno.readTextFile(path).catch(() => undefined);
  if (source === undefined) return `${m.file} does not exist`;
  const applied = applyMutant(source, m);
  if (!applied.ok) return applied.reason;
  await Deno.writeTextFile(path, applied.text);
  if (m.file.endsWith(".ts")) {
    const check = await command(["check", "--quiet", m.file], dir, {}, 300_000);
    if (!check.ok) {
      const why = check.output.split("\n").find((l) => /error/i.test(l)) ?? "deno check failed";
      return `type check: ${why.trim()}`;
    }
  }
  return undefined;
}

/** Puts the copy `dir` back to HEAD (after a mutant). */
async function restore(dir: string) {
  const dirty = (await git(["status", "--porcelain", "--untracked-files=no"], dir)).trim();
  if (dirty) await git(["checkout", "--", "."], dir);
}

/** One mutant run in a worker's copy: applied, checked, run, judged, restored. */
async function runMutant(
  m: Mutant,
  dir: string,
  portBase: number,
  tests: string[],
  baseline: RunReport,
  opts: { timeoutMs: number },
): Promise<Judgement & { seconds: number }> {
  if (tests.length === 0) {
    // The leak scan alone would "judge" it: a mutant no test file reaches is an error.
    return { verdict: "error", killers: [], reason: "no test file depends on it", seconds: 0 };
  }
  try {
    const invalid = await applyAndCheck(m, dir);
    if (invalid) return { verdict: "invalid", killers: [], reason: invalid, seconds: 0 };
    // Only the tests that passed at baseline judge; the others are left to run but not read.
    const judged: RunReport = {
      tests: new Map([...baseline.tests].filter(([t]) => inSelection(t, tests))),
    };
    // Stop at the first failure of a judging test: after as many failures as there are tests
    // failing at baseline in this selection, one more (those may fail again, and judge nothing).
    const known = [...judged.tests.values()].filter((st) => st !== "passed").length;
    const run = await runSuite(dir, portBase, tests, { ...opts, failFast: known + 1 });
    return { ...judge(judged, run), seconds: run.seconds };
  } finally {
    await restore(dir);
  }
}

/**
 * `--order-from FILE`: seconds per test file, from a JUnit report, or from a results.json whose
 * baseline recorded them (`baseline.fileSeconds`).
 */
async function fileSeconds(file: string): Promise<Map<string, number>> {
  const text = await Deno.readTextFile(file);
  if (!file.endsWith(".json")) return junitFileSeconds(text);
  const saved = JSON.parse(text) as { baseline?: { fileSeconds?: Record<string, number> } };
  return new Map(Object.entries(saved.baseline?.fileSeconds ?? {}));
}

/** Whether JUnit test `key` (`tests/x_test.ts › name`, or the leak scan) belongs to `tests`. */
function inSelection(key: string, tests: string[]): boolean {
  const file = key.split(" › ")[0];
  return file === "harness" || tests.includes(file);
}

interface Outcome {
  mutant: Mutant;
  tests: string[];
  runs: (Judgement & { seconds: number })[];
}

function line(o: Outcome): string {
  const c = combineRuns(o.runs);
  const verdict = o.mutant.equivalent ? `${c.verdict} (equivalent)` : c.verdict;
  const detail = c.verdict === "killed"
    ? `by ${c.killers.slice(0, 2).join("; ")}${
      c.killers.length > 2 ? ` (+${c.killers.length - 2})` : ""
    }`
    : c.reason ?? "";
  const secs = o.runs.map((r) => `${r.seconds}s`).join("+");
  return `${verdict.padEnd(9)} [inv ${
    o.mutant.invariants.join(",")
  }] ${o.mutant.name} — ${detail} (${o.tests.length} files, ${secs})${
    c.disagreement ? ` DISAGREEMENT: ${c.disagreement}` : ""
  }`;
}

function resultsSection(
  outcomes: Outcome[],
  meta: {
    total: number;
    runs: number;
    all: boolean;
    baselineSeconds: number;
    excluded: string[];
    head: string;
    seconds: number;
    history?: string[];
    /** The second run re-ran each kill by its killers' files only (`--confirm`). */
    confirmed?: boolean;
    /** The independent full-suite confirmation of sampled kills (`--verify`). */
    verification?: Verification;
  },
): string {
  const combined = outcomes.map((o) => ({ o, c: combineRuns(o.runs) }));
  const s = score(
    combined.map(({ o, c }) => ({ verdict: c.verdict, equivalent: !!o.mutant.equivalent })),
  );
  const pct = s.score === null ? "n/a" : `${(s.score * 100).toFixed(1)}%`;
  const list = (
    pred: (x: (typeof combined)[number]) => boolean,
    why: (x: (typeof combined)[number]) => string,
  ) => {
    const xs = combined.filter(pred);
    return xs.length
      ? xs.map((x) => `  - ${x.o.mutant.name} (\`${x.o.mutant.file}\`): ${why(x)}`).join("\n")
      : "  - none";
  };
  const perInv = new Map<number, { k: number; n: number }>();
  for (const { o, c } of combined) {
    if (o.mutant.equivalent || (c.verdict !== "killed" && c.verdict !== "survived")) continue;
    for (const i of o.mutant.invariants) {
      const e = perInv.get(i) ?? { k: 0, n: 0 };
      e.n++;
      if (c.verdict === "killed") e.k++;
      perInv.set(i, e);
    }
  }
  const disagreements = combined.filter(({ c }) => c.disagreement);
  const movedKillers = combined.filter(({ c }) => c.killersDiffer).map(({ o }) => o.mutant.name);
  const twice = combined.filter(({ o }) => o.runs.length >= 2).length;
  const most = Math.max(...combined.map(({ o }) => o.runs.length));
  const runsCell = most > meta.runs ? `${meta.runs}–${most} (${twice} run twice)` : `${meta.runs}`;
  return [
    `Written by \`deno task mutants${meta.all ? " --all" : ""}${
      meta.runs > 1 && !meta.confirmed ? ` --runs ${meta.runs}` : ""
    }\` at ${new Date().toISOString()} on commit ${meta.head} in ${
      Math.round(meta.seconds / 60)
    } min${
      meta.confirmed ? " of worker time" : ""
    } (baseline ${meta.baselineSeconds} s). ${outcomes.length} of ${meta.total} mutants ran${
      outcomes.length < meta.total
        ? ` (the other ${meta.total - outcomes.length} did not run in the runs recorded here)`
        : ""
    }; each judged by ${
      meta.all
        ? "the whole suite"
        : "the test files that import its module, directly or indirectly (the stack counts as importing the functions and the migrations)"
    }, against a baseline run of the unmutated code. A kill is a test that passed at baseline failing with the mutant, read from the JUnit report; a stack that does not start, a harness crash or a timeout is an error, never a kill.`,
    "",
    `| score | killed | survived | error | invalid | equivalent | runs per mutant |`,
    `| --- | --- | --- | --- | --- | --- | --- |`,
    `| **${pct}** (killed / (killed + survived)) | ${s.killed} | ${s.survived} | ${s.error} | ${s.invalid} | ${s.equivalent} | ${runsCell} |`,
    "",
    `Per invariant (killed / judged): ${
      [...perInv].sort((a, b) => a[0] - b[0]).map(([i, e]) => `${i}: ${e.k}/${e.n}`).join(", ")
    }. Invariants with fewer than three judged: ${
      [...Array(10).keys()].map((i) => i + 1).filter((i) => (perInv.get(i)?.n ?? 0) < 3).join(
        ", ",
      ) ||
      "none"
    }.${
      meta.confirmed
        ? ` A second run (\`--confirm\`) ran ${twice} of the ${s.killed} kills again, judged by the test files of its killers only (a kill by the leak scan alone: by its whole selection), the harness otherwise as in the first; the two runs' verdicts are merged below.`
        : ""
    }`,
    "",
    `- Survivors:\n${
      list(({ o, c }) => c.verdict === "survived" && !o.mutant.equivalent, () => "no test fails")
    }`,
    `- Equivalent (excluded):\n${
      list(({ o }) => !!o.mutant.equivalent, ({ o }) => o.mutant.equivalent!)
    }`,
    `- Errors (excluded):\n${list(({ c }) => c.verdict === "error", ({ c }) => c.reason ?? "")}`,
    `- Invalid (each one fails the run — its text is not found exactly once, or it does not type-check):\n${
      list(({ c }) => c.verdict === "invalid", ({ c }) => c.reason ?? "")
    }`,
    `- Survivors of an earlier run, run again once a test was added for them:\n${
      meta.history?.length ? meta.history.map((h) => `  - ${h}`).join("\n") : "  - none"
    }`,
    `- Tests failing at baseline (judged nothing): ${
      meta.excluded.length ? meta.excluded.join("; ") : "none"
    }`,
    `- Runs that disagree: ${
      twice === 0
        ? "not measured (one run per mutant; `--runs 2` or `--confirm` measures it)"
        : meta.runs < 2 && disagreements.length === 0 && twice < combined.length
        ? `none among the ${twice} mutants run twice (the other ${
          combined.length - twice
        } ran once)`
        : disagreements.length
        ? disagreements.map(({ o, c }) => `${o.mutant.name}: ${c.disagreement}`).join("; ")
        : "none"
    }${
      movedKillers.length
        ? ` (killed in every run, by other tests in another run: ${movedKillers.join("; ")})`
        : ""
    }`,
    ...(meta.verification ? ["", verificationParagraph(meta.verification)] : []),
    "",
    "| verdict | inv | mutant | killed by |",
    "| --- | --- | --- | --- |",
    ...combined.map(({ o, c }) =>
      `| ${c.verdict}${o.mutant.equivalent ? " (equivalent)" : ""} | ${
        o.mutant.invariants.join(", ")
      } | ${o.mutant.name.replaceAll("|", "\\|")} | ${
        c.verdict === "killed"
          ? c.killers.slice(0, 2).map((k) => k.replaceAll("|", "\\|")).join("; ") +
            (c.killers.length > 2 ? ` (+${c.killers.length - 2})` : "")
          : (c.reason ?? "").replaceAll("|", "\\|")
      } |`
    ),
  ].join("\n");
}

/**
 * The mutants in running order: one of each invariant in turn (by the first invariant each
 * names), so a run cut short still covers every invariant.
 */
function interleave(ms: Mutant[]): Mutant[] {
  const groups = new Map<number, Mutant[]>();
  for (const m of ms) groups.set(m.invariants[0], [...(groups.get(m.invariants[0]) ?? []), m]);
  const order = [...groups.keys()].sort((a, b) => a - b);
  const out: Mutant[] = [];
  for (let i = 0; out.length < ms.length; i++) {
    for (const g of order) if (groups.get(g)![i]) out.push(groups.get(g)![i]);
  }
  return out;
}

/** `--confirm FILE`: the kills FILE's run recorded, with their killers' files (lib.ts). */
async function killerFiles(file: string): Promise<Map<string, string[]>> {
  const saved = JSON.parse(await Deno.readTextFile(file)) as { outcomes: Outcome[] };
  return confirmSelection(
    saved.outcomes.map((o) => ({ name: o.mutant.name, ...combineRuns(o.runs) })),
  );
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      all: { type: "boolean", default: false },
      tests: { type: "string" },
      runs: { type: "string", default: "1" },
      jobs: { type: "string", default: "1" },
      timeout: { type: "string", default: "40" },
      list: { type: "boolean", default: false },
      "no-write": { type: "boolean", default: false },
      report: { type: "boolean", default: false },
      from: { type: "string", multiple: true },
      again: { type: "string", multiple: true },
      "order-from": { type: "string" },
      baseline: { type: "string" },
      "skip-killed": { type: "string" },
      confirm: { type: "string" },
      check: { type: "boolean", default: false },
      verify: { type: "string", multiple: true },
      verified: { type: "string" },
      sample: { type: "string", default: "10" },
      seed: { type: "string" },
    },
    allowPositionals: true,
  });
  if (values.report) {
    return await reportOnly(
      values.from ?? [`${WORK}/results.json`],
      values.again ?? [],
      values.verified,
    );
  }
  const runs = Math.max(1, Number(values.runs));
  const jobs = Math.min(PORT_BASES.length, Math.max(1, Number(values.jobs)));
  const timeoutMs = Number(values.timeout) * 60_000;
  const names = new Set<string>();
  for (const m of MUTANTS) {
    if (names.has(m.name)) throw new Error(`two mutants named ${m.name}`);
    names.add(m.name);
  }
  const mutants = interleave(
    MUTANTS.filter((m) =>
      positionals.length === 0 || positionals.some((w) => m.name.includes(w) || m.file === w)
    ),
  );
  if (values.verify) {
    return await verifyKills(values.verify, {
      sample: Number(values.sample),
      seed: values.seed === undefined ? undefined : Number(values.seed),
      jobs: Math.min(PORT_BASES.length, Math.max(1, Number(values.jobs))),
      timeoutMs: Number(values.timeout) * 60_000,
      from: values.from,
      orderFrom: values["order-from"],
    });
  }
  if (values.check) return await checkMutants(mutants);
  if (values["skip-killed"]) {
    // Mutants an earlier run killed stay killed when tests are only added: not run again
    // (`--report --from earlier.json --from results.json` merges both).
    const earlier = JSON.parse(await Deno.readTextFile(values["skip-killed"])) as {
      outcomes: Outcome[];
    };
    const killed = new Set(
      earlier.outcomes.filter((o) => combineRuns(o.runs).verdict === "killed").map((o) =>
        o.mutant.name
      ),
    );
    for (let i = mutants.length - 1; i >= 0; i--) {
      if (killed.has(mutants[i].name)) mutants.splice(i, 1);
    }
    console.log(`skipped ${killed.size} mutants killed in ${values["skip-killed"]}`);
  }
  if (mutants.length === 0) {
    console.error("no mutant matches");
    return 2;
  }
  const status = (await git([
    "status",
    "--porcelain",
    "--untracked-files=all",
    "--",
    "shared",
    "tests",
    "supabase",
    "admin",
    "local",
    "client",
  ])).trim();
  if (status) {
    console.log("note: uncommitted changes are not in the scratch copies (HEAD is):\n" + status);
  }

  const started = performance.now();
  await Deno.mkdir(WORK, { recursive: true });
  const dirs: string[] = [];
  try {
    for (let i = 0; i < jobs; i++) dirs.push(await makeWorktree(i));
    const head = (await git(["rev-parse", "HEAD"], dirs[0])).trim();
    const invalidAnchors = await anchorProblems(
      mutants,
      (f) => Deno.readTextFile(`${dirs[0]}/${f}`),
    );
    for (const [name, reason] of invalidAnchors) {
      console.log(`INVALID (fails the run): ${name} — ${reason}`);
    }
    const { graph, tests: allTests } = await headGraph(dirs[0]);
    const only = values.tests?.split(",").filter(Boolean);
    const confirming = values.confirm ? await killerFiles(values.confirm) : undefined;
    if (confirming) {
      for (let i = mutants.length - 1; i >= 0; i--) {
        if (!confirming.has(mutants[i].name)) mutants.splice(i, 1);
      }
      console.log(`confirming the ${mutants.length} kills of ${values.confirm}`);
    }
    const selection = new Map(mutants.map((m) => {
      const files = only ?? (values.all ? allTests : selectTests(graph, m.file, allTests));
      const killers = confirming?.get(m.name)?.filter((f) => files.includes(f));
      return [m.name, killers?.length ? killers : files];
    }));
    for (const m of mutants) {
      const t = selection.get(m.name)!;
      if (values.list) {
        console.log(`${m.name}\n  ${m.file} → ${t.length} test files: ${t.join(" ")}`);
      }
    }
    if (values.list) return 0;

    const inst = await command(["install", "--frozen", "--quiet"], dirs[0], {}, 600_000);
    if (!inst.ok) throw new Error(`deno install --frozen failed: ${inst.output.slice(0, 500)}`);

    // The baseline: every selected file, unmutated, once.
    // One order for every run (lib.ts runOrder): the baseline takes the files exactly as the
    // mutants do, each mutant a subsequence of it.
    const usesStack = new Set([...dependents(graph, "tests/_stack.ts").keys()]);
    const seconds = values["order-from"]
      ? await fileSeconds(values["order-from"])
      : new Map<string, number>();
    const union = runOrder(mutants.flatMap((m) => selection.get(m.name)!), usesStack, seconds);
    const position = new Map(union.map((t, i) => [t, i]));
    for (const [name, t] of selection) {
      selection.set(name, [...t].sort((a, b) => position.get(a)! - position.get(b)!));
    }
    console.log(`baseline: ${union.length} test files, unmutated (HEAD ${head.slice(0, 10)}) …`);
    const baseline = values.baseline
      ? await reusedBaseline(values.baseline, head, union)
      : await runSuite(dirs[0], PORT_BASES[0], union, { failFast: 0, timeoutMs });
    if (baseline.error) {
      console.log(
        `baseline could not be read: ${baseline.error}; stopping (nothing can be judged)`,
      );
      return 2;
    }
    const excluded = baselineFailures(baseline);
    const baselineJunit = (baseline as { junit?: string }).junit;
    const passing = [...baseline.tests.values()].filter((s: TestStatus) => s === "passed").length;
    console.log(`baseline: ${passing} passed, ${excluded.length} did not (${baseline.seconds} s)`);
    for (const e of excluded) {
      console.log(`  excluded from judging (not passing at baseline): ${e}`);
    }

    const outcomes = new Map<string, Outcome>(
      mutants.map((m) => [m.name, { mutant: m, tests: selection.get(m.name)!, runs: [] }]),
    );
    // A mutant whose text is not found exactly once is invalid before anything runs: recorded,
    // named, and the run fails (exit 1) — never quietly left out.
    for (const [name, reason] of invalidAnchors) {
      outcomes.get(name)!.runs.push({ verdict: "invalid", killers: [], reason, seconds: 0 });
    }
    const queue = mutants.filter((m) => !invalidAnchors.has(m.name))
      .flatMap((m) => Array.from({ length: runs }, () => m));
    const total = queue.length;
    const save = () =>
      Deno.writeTextFile(
        `${WORK}/${values.confirm ? "confirm" : "results"}.json`,
        JSON.stringify(
          {
            head,
            runs,
            all: values.all,
            confirm: values.confirm ?? null,
            baseline: {
              seconds: baseline.seconds,
              fileSeconds: baselineJunit
                ? Object.fromEntries(junitFileSeconds(baselineJunit))
                : undefined,
              excluded,
              tests: Object.fromEntries(baseline.tests),
              order: union,
            },
            outcomes: [...outcomes.values()].filter((o) => o.runs.length),
          },
          null,
          1,
        ),
      );
    let done = 0;
    await Promise.all(dirs.map(async (dir, w) => {
      for (let m = queue.shift(); m; m = queue.shift()) {
        const o = outcomes.get(m.name)!;
        let r: Judgement & { seconds: number };
        try {
          r = await runMutant(m, dir, PORT_BASES[w], o.tests, baseline, { timeoutMs });
        } catch (err) {
          r = {
            verdict: "error",
            killers: [],
            reason: `mutation harness: ${(err as Error).message}`,
            seconds: 0,
          };
        }
        o.runs.push(r);
        done++;
        console.log(`[${done}/${total}] ${line({ ...o, runs: [r] })}`);
        await save();
      }
    }));

    const finished = [...outcomes.values()];
    console.log("\n" + finished.map(line).join("\n"));
    const s = score(
      finished.map((o) => ({
        verdict: combineRuns(o.runs).verdict,
        equivalent: !!o.mutant.equivalent,
      })),
    );
    console.log(
      `mutants: ${s.killed} killed, ${s.survived} survived, ${s.error} error, ${s.invalid} invalid, ${s.equivalent} equivalent; score ${
        s.score === null ? "n/a" : `${(s.score * 100).toFixed(1)}%`
      }`,
    );
    if (positionals.length === 0 && !values.tests && !values.confirm && !values["no-write"]) {
      const file = `${ROOT}bench/RESULTS.md`;
      const doc = await Deno.readTextFile(file).catch(() => "# Benchmark results\n");
      await Deno.writeTextFile(
        file,
        replaceSection(
          doc,
          "Mutation score",
          resultsSection(finished, {
            total: MUTANTS.length,
            runs,
            all: values.all,
            baselineSeconds: baseline.seconds,
            excluded,
            head,
            seconds: (performance.now() - started) / 1000,
          }),
        ),
      );
      console.log("written: bench/RESULTS.md (Mutation score)");
    }
    for (const o of finished.filter((o) => combineRuns(o.runs).verdict === "invalid")) {
      console.log(`INVALID (fails the run): ${o.mutant.name} — ${combineRuns(o.runs).reason}`);
    }
    return runExitCode(s);
  } finally {
    for (const d of dirs) await removeWorktree(d);
  }
}

/**
 * `--report [--from results.json…]`: writes the "Mutation score" section from what runs
 * recorded (a run cut short included, and said so) without running anything. Several files:
 * a later one's mutants replace an earlier one's (survivors re-run once tests were added), and
 * the section says which commit judged how many.
 */
async function reportOnly(
  files: string[],
  again: string[] = [],
  verified?: string,
): Promise<number> {
  type Saved = {
    head: string;
    runs: number;
    all: boolean;
    confirm?: string | null;
    baseline: { seconds: number; excluded: string[] };
    outcomes: Outcome[];
  };
  // The mutants as they are defined now (an `equivalent` reason added since counts).
  const now = new Map(MUTANTS.map((m) => [m.name, m]));
  const byName = new Map<string, Outcome & { head: string }>();
  const saved: Saved[] = [];
  const history: string[] = [];
  for (const f of files) {
    const s = JSON.parse(await Deno.readTextFile(f)) as Saved;
    saved.push(s);
    for (const o of s.outcomes) {
      const m = now.get(o.mutant.name);
      const prev = byName.get(o.mutant.name);
      if (prev && combineRuns(prev.runs).verdict === "survived") {
        history.push(
          `${o.mutant.name}: survived at ${prev.head.slice(0, 10)}, ${
            combineRuns(o.runs).verdict
          } at ${s.head.slice(0, 10)}${
            combineRuns(o.runs).verdict === "killed" ? ` by ${combineRuns(o.runs).killers[0]}` : ""
          }`,
        );
      }
      if (!m) console.log(`dropped (no longer defined): ${o.mutant.name}`);
      else byName.set(m.name, { ...o, mutant: m, head: s.head });
    }
  }
  // `--again FILE`: a further run of the same mutants, its runs added to theirs, so that
  // disagreements between the two show (the verdict is then what all runs agree on).
  for (const f of again) {
    const s = JSON.parse(await Deno.readTextFile(f)) as Saved;
    saved.push(s);
    for (const o of s.outcomes) {
      const prev = byName.get(o.mutant.name);
      if (prev) prev.runs = [...prev.runs, ...o.runs];
    }
  }
  const outcomes = [...byName.values()];
  const heads = [...new Set(outcomes.map((o) => o.head))].map((h) =>
    `${h.slice(0, 10)} (${outcomes.filter((o) => o.head === h).length} mutants)`
  ).join(", ");
  const seconds = saved.reduce(
    (t, s) =>
      t + s.baseline.seconds +
      s.outcomes.reduce((u, o) => u + o.runs.reduce((v, r) => v + r.seconds, 0), 0),
    0,
  );
  const file = `${ROOT}bench/RESULTS.md`;
  const doc = await Deno.readTextFile(file).catch(() => "# Benchmark results\n");
  await Deno.writeTextFile(
    file,
    replaceSection(
      doc,
      "Mutation score",
      resultsSection(outcomes, {
        total: MUTANTS.length,
        runs: Math.min(...outcomes.map((o) => o.runs.length)),
        history,
        all: saved.every((s) => s.all || s.confirm),
        confirmed: saved.some((s) => s.confirm),
        verification: verified
          ? JSON.parse(await Deno.readTextFile(verified)) as Verification
          : undefined,
        baselineSeconds: saved[0].baseline.seconds,
        excluded: [...new Set(saved.flatMap((s) => s.baseline.excluded))],
        head: heads,
        seconds,
      }),
    ),
  );
  console.log(`written: bench/RESULTS.md (Mutation score) from ${outcomes.length} mutants`);
  return 0;
}

/** What `--verify` recorded (`.local/mutation/verify.json`). */
interface Verification {
  /** The run whose kills were sampled, and its commit. */
  source: string;
  sourceHead: string;
  /** The commit judged now, the seed, how many kills there were to draw from. */
  head: string;
  seed: number;
  kills: number;
  baseline: { seconds: number; excluded: string[]; files: number };
  results: {
    name: string;
    invariants: number[];
    file: string;
    original: string[];
    verdict: Judgement["verdict"];
    killers: string[];
    reason?: string;
    seconds: number;
  }[];
}

/** The paragraph of the "Mutation score" section that reports `--verify`. */
function verificationParagraph(v: Verification): string {
  const agreed = v.results.filter((r) => r.verdict === "killed").length;
  const first = (ks: string[]) => ks.length ? ks[0].replaceAll("|", "\\|") : "none";
  return [
    `Independent confirmation (\`deno task mutants --verify ${v.source} --seed ${v.seed} --sample ${v.results.length}\`): ${v.results.length} of the ${v.kills} kills of the runs at ${
      v.sourceHead.split(",").map((h) => h.slice(0, 10)).join(", ")
    }, drawn at random with seed ${v.seed}, each judged again by the whole suite (${v.baseline.files} test files, not its killers' files) in a fresh worktree of ${
      v.head.slice(0, 10)
    }, against a fresh baseline of the whole suite (${v.baseline.seconds} s; ${v.baseline.excluded.length} test(s) failing there judged nothing): **${agreed} of ${v.results.length} killed again**.`,
    "",
    ...v.results.map((r) =>
      `- ${r.name} (\`${r.file}\`): ${r.verdict}${
        r.verdict === "killed" ? ` by ${first(r.killers)}` : r.reason ? ` (${r.reason})` : ""
      }; first run: ${first(r.original)}`
    ),
  ].join("\n");
}

/**
 * `--check`: applies each mutant in a scratch copy of HEAD and type-checks it, no stack; every
 * invalid one named, exit 1 if any (seconds per mutant, for use before a long run).
 */
async function checkMutants(mutants: Mutant[]): Promise<number> {
  await Deno.mkdir(WORK, { recursive: true });
  const dir = await makeWorktree("check");
  let invalid = 0;
  try {
    const inst = await command(["install", "--frozen", "--quiet"], dir, {}, 600_000);
    if (!inst.ok) throw new Error(`deno install --frozen failed: ${inst.output.slice(0, 500)}`);
    for (const m of mutants) {
      let why: string | undefined;
      try {
        why = await applyAndCheck(m, dir);
      } finally {
        await restore(dir);
      }
      if (why) invalid++;
      console.log(`${why ? "INVALID" : "ok     "} ${m.name}${why ? ` — ${why}` : ""}`);
    }
  } finally {
    await removeWorktree(dir);
  }
  console.log(`${mutants.length} mutants checked, ${invalid} invalid`);
  return invalid > 0 ? 1 : 0;
}

/**
 * `--verify FILE [--sample N] [--seed S]`: an independent confirmation of FILE's kills. N kills
 * (at least 10 unless fewer exist) drawn at random with seed S (random when absent; printed),
 * each judged by the WHOLE suite — not by the files of its killers — in a worktree of HEAD made
 * fresh for it, against a baseline of the whole suite run first in a fresh worktree of its own.
 * Writes `.local/mutation/verify.json` and the "Mutation score" section (from `--from` files,
 * else FILE, with the confirmation's paragraph); exit 1 unless every sampled kill repeats.
 */
async function verifyKills(
  files: string[],
  opts: {
    sample: number;
    seed?: number;
    jobs: number;
    timeoutMs: number;
    from?: string[];
    orderFrom?: string;
  },
): Promise<number> {
  // Several runs (survivors run again once tests were added): a later file's mutant replaces an
  // earlier's, as `--report --from` merges them.
  const byName = new Map<string, Outcome & { head: string }>();
  for (const f of files) {
    const s = JSON.parse(await Deno.readTextFile(f)) as { head: string; outcomes: Outcome[] };
    for (const o of s.outcomes) byName.set(o.mutant.name, { ...o, head: s.head });
  }
  const heads = [...new Set([...byName.values()].map((o) => o.head))];
  const saved = { head: heads.join(","), outcomes: [...byName.values()] };
  const file = files.join(" --verify ");
  const now = new Map(MUTANTS.map((m) => [m.name, m]));
  const kills = saved.outcomes.filter((o) =>
    now.has(o.mutant.name) && !now.get(o.mutant.name)!.equivalent &&
    combineRuns(o.runs).verdict === "killed"
  );
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const n = Math.max(10, opts.sample);
  const picked = sampleSeeded(kills, n, seed);
  console.log(
    `verify: seed ${seed}: ${picked.length} of the ${kills.length} kills of ${file} (commits ${
      heads.map((h) => h.slice(0, 10)).join(", ")
    }), each judged by the whole suite in a fresh worktree`,
  );
  if (picked.length < 10) console.log(`verify: only ${picked.length} kills to draw from (< 10)`);
  for (const o of picked) console.log(`  ${o.mutant.name}`);
  await Deno.mkdir(WORK, { recursive: true });

  const baseDir = await makeWorktree("verify-base");
  let baseline: RunReport & { seconds: number };
  let head: string;
  let order: string[];
  try {
    head = (await git(["rev-parse", "HEAD"], baseDir)).trim();
    if (!heads.includes(head)) {
      console.log(`verify: HEAD ${head.slice(0, 10)} is none of the runs' (${heads.join(", ")})`);
    }
    const { graph, tests } = await headGraph(baseDir);
    const usesStack = new Set([...dependents(graph, "tests/_stack.ts").keys()]);
    const seconds = opts.orderFrom ? await fileSeconds(opts.orderFrom) : new Map<string, number>();
    order = runOrder(tests, usesStack, seconds);
    const inst = await command(["install", "--frozen", "--quiet"], baseDir, {}, 600_000);
    if (!inst.ok) throw new Error(`deno install --frozen failed: ${inst.output.slice(0, 500)}`);
    console.log(`verify: baseline, the whole suite (${order.length} test files), unmutated …`);
    baseline = await runSuite(baseDir, PORT_BASES[0], order, {
      failFast: 0,
      timeoutMs: opts.timeoutMs * 3,
    });
  } finally {
    await removeWorktree(baseDir);
  }
  if (baseline.error) {
    console.log(`verify: the baseline could not be read: ${baseline.error}`);
    return 2;
  }
  const excluded = baselineFailures(baseline);
  console.log(`verify: baseline ${baseline.seconds} s, ${excluded.length} test(s) not passing`);
  for (const e of excluded) console.log(`  excluded from judging: ${e}`);
  const known = [...baseline.tests.values()].filter((st) => st !== "passed").length;

  const results: Verification["results"] = [];
  const queue = picked.map((o, i) => ({ o, i }));
  await Promise.all(Array.from({ length: Math.min(opts.jobs, queue.length) }, async (_, w) => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      const m = now.get(job.o.mutant.name)!;
      const dir = await makeWorktree(`verify-${w}`);
      let r: Judgement & { seconds: number };
      try {
        const inst = await command(["install", "--frozen", "--quiet"], dir, {}, 600_000);
        const invalid = inst.ok ? await applyAndCheck(m, dir) : "deno install --frozen failed";
        if (invalid) {
          r = { verdict: "invalid", killers: [], reason: invalid, seconds: 0 };
        } else {
          const run = await runSuite(dir, PORT_BASES[w], order, {
            failFast: known + 1,
            timeoutMs: opts.timeoutMs * 3,
          });
          r = { ...judge(baseline, run), seconds: run.seconds };
        }
      } catch (err) {
        r = { verdict: "error", killers: [], reason: (err as Error).message, seconds: 0 };
      } finally {
        await removeWorktree(dir);
      }
      results[job.i] = {
        name: m.name,
        invariants: m.invariants,
        file: m.file,
        original: combineRuns(job.o.runs).killers,
        verdict: r.verdict,
        killers: r.killers,
        reason: r.reason,
        seconds: r.seconds,
      };
      console.log(
        `verify: ${r.verdict === "killed" ? "killed again" : r.verdict} — ${m.name}${
          r.verdict === "killed" ? ` by ${r.killers[0]}` : r.reason ? ` (${r.reason})` : ""
        } (${r.seconds}s)`,
      );
      await Deno.writeTextFile(
        `${WORK}/verify.json`,
        JSON.stringify(
          {
            source: file,
            sourceHead: saved.head,
            head,
            seed,
            kills: kills.length,
            baseline: { seconds: baseline.seconds, excluded, files: order.length },
            results: results.filter(Boolean),
          } satisfies Verification,
          null,
          1,
        ),
      );
    }
  }));
  const agreed = results.filter((r) => r.verdict === "killed").length;
  console.log(`verify: ${agreed} of ${results.length} sampled kills killed again (seed ${seed})`);
  await reportOnly(opts.from ?? files, [], `${WORK}/verify.json`);
  return agreed === results.length ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
