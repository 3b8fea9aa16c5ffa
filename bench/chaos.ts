/**
 * The long chaos run (issue 21, item 1) for `deno task bench`: the model-based run of
 * tests/chaos/ (tests/chaos/cli.ts, a process of its own with the bench stack's environment)
 * over several seeds, on two MercadoPago applications (MLA and MLB: bench/run.ts gives this bench
 * a stack of its own with them, and `deno task chaos` starts its stacks so), reporting per seed
 * the applications, the steps run, the faults (those that fired when the run tells them from
 * those set: bench/chaos_summary.ts; and those of one application alone, per site) and the
 * violations (target: 0; the sandbox's cross_app_calls is judged 0 after every step), the runs
 * and distinct seeds, and the steps per minute overall. Nothing here asserts a time. A long
 * run made of separate `deno task chaos` runs is aggregated from their logs by
 * `deno task chaos:aggregate` (bench/chaos_aggregate.ts).
 *
 * Size: `BENCH_CHAOS_SEEDS` (comma-separated, default `1,2,3,4`) × `BENCH_CHAOS_STEPS` steps
 * per seed (default 5000: 20,000 in all). Measured on the 2-core dev box at about 95 steps a
 * minute (database stops and hangs dominate), so the default takes about 3.5 hours against the
 * bench's stack; `BENCH_CHAOS_STACKS=4` deals the seeds over four stacks of their own side by
 * side (about an hour); set `BENCH_CHAOS_STEPS` lower for a shorter bench. `--quick` runs 25
 * steps per seed.
 */
import type { Bench, BenchRow } from "./types.ts";
import {
  appsOf,
  type ChaosSummary as Summary,
  faultsOf,
  faultsPerAppOf,
  summariesOf,
} from "./chaos_summary.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** The environment of the stack this bench runs on (bench/run.ts launches it): two applications. */
export const CHAOS_STACK_ENV = { STACK_MP_SITES: "MLA,MLB" };

const row = (metric: string, value: string, target = "", met: boolean | null = null): BenchRow => ({
  bench: "chaos",
  metric,
  value,
  baseline: "",
  ratio: "",
  target,
  met,
});

/** The summary line a chaos run (tests/chaos/cli.ts) printed last, parsed. */
function summaryOf(seed: string, text: string): Summary {
  const [summary] = summariesOf(text);
  if (!summary) throw new Error(`chaos seed ${seed} printed no summary`);
  return summary;
}

/** `tests/chaos/<script> --seed <seeds> --steps <steps> --quiet` run to its end. */
function chaosProcess(
  script: "cli.ts" | "main.ts",
  seeds: string,
  steps: number,
  env: Record<string, string>,
  stdout: "piped" | "null",
) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}tests/chaos/${script}`,
      "--seed",
      seeds,
      "--steps",
      `${steps}`,
      "--quiet",
    ],
    cwd: ROOT,
    env,
    stdout,
    stderr: "inherit",
  }).output();
}

/** Each seed in turn against the bench's own stack. */
async function onBenchStack(env: Record<string, string>, seeds: string[], steps: number) {
  const stackLog = `${ROOT}${env.BENCH_LOG_DIR ?? ".local/bench"}/stack.log`;
  const out: Summary[] = [];
  for (const seed of seeds) {
    const run = await chaosProcess("cli.ts", seed, steps, { ...env, STACK_LOG: stackLog }, "piped");
    out.push(summaryOf(seed, new TextDecoder().decode(run.stdout)));
  }
  return out;
}

/**
 * The seeds dealt over `stacks` stacks of their own side by side (`deno task chaos` each, ports
 * 200 apart above the bench's, state under `.local/bench/chaos-K`): the run mostly waits on
 * stopped and hung databases, so four stacks on two cores go about four times as fast.
 */
async function onOwnStacks(seeds: string[], steps: number, stacks: number) {
  const base = Number(Deno.env.get("STACK_PORT_BASE") || 30321);
  const groups = Array.from({ length: stacks }, (_, k) => seeds.filter((_, i) => i % stacks === k))
    .filter((g) => g.length > 0);
  await Promise.all(groups.map(async (group, k) => {
    const run = await chaosProcess("main.ts", group.join(","), steps, {
      STACK_PORT_BASE: String(base + 200 * (k + 1)),
      STACK_STATE_DIR: `.local/bench/chaos-${k}`,
    }, "null");
    if (!run.success) {
      console.error(
        `chaos seeds ${group}: a violation or a failed run (see .local/bench/chaos-${k})`,
      );
    }
  }));
  const summaries = await Promise.all(
    groups.flatMap((group, k) =>
      group.map(async (seed) =>
        summaryOf(
          seed,
          await Deno.readTextFile(`${ROOT}.local/bench/chaos-${k}/chaos-${seed}.log`).catch(() =>
            ""
          ),
        )
      )
    ),
  );
  return summaries.sort((a, b) => seeds.indexOf(`${a.seed}`) - seeds.indexOf(`${b.seed}`));
}

export const chaosBench: Bench = async (env) => {
  const quick = env.BENCH_QUICK === "1";
  const setting = (name: string) => env[name] ?? Deno.env.get(name);
  const seeds = (setting("BENCH_CHAOS_SEEDS") ?? "1,2,3,4").split(",").map((s) => s.trim())
    .filter(Boolean);
  const steps = quick ? 25 : Number(setting("BENCH_CHAOS_STEPS") ?? 5000);
  const stacks = quick ? 1 : Math.max(1, Number(setting("BENCH_CHAOS_STACKS") ?? 1));
  const summaries = stacks > 1
    ? await onOwnStacks(seeds, steps, stacks)
    : await onBenchStack(env, seeds, steps);
  const rows: BenchRow[] = [];
  let allSteps = 0, allSeconds = 0, allFaults = 0, allViolations = 0;
  const counted = new Set<string>();
  for (const s of summaries) {
    const { faults: byKind, counted: how } = faultsOf(s);
    const faults = Object.values(byKind).reduce((a, b) => a + b, 0);
    counted.add(how);
    allSteps += s.steps;
    allSeconds += s.seconds;
    allFaults += faults;
    allViolations += s.violations.length;
    rows.push(row(`seed ${s.seed}: applications`, appsOf(s).join(", ")));
    rows.push(row(`seed ${s.seed}: steps`, String(s.steps)));
    rows.push(
      row(
        `seed ${s.seed}: faults ${how === "fired" ? "fired" : "set (fired or not)"}`,
        String(faults),
      ),
    );
    const perApp = Object.entries(faultsPerAppOf(s)).map(([site, n]) => `${site} ${n}`);
    if (perApp.length > 0) {
      rows.push(row(`seed ${s.seed}: faults fired of one application alone`, perApp.join(", ")));
    }
    rows.push(
      row(
        `seed ${s.seed}: violations`,
        String(s.violations.length),
        "0",
        s.violations.length === 0,
      ),
    );
    for (const v of s.violations) console.error(`chaos seed ${s.seed} VIOLATION:\n${v}`);
  }
  const seedCount = new Set(summaries.map((s) => s.seed)).size;
  rows.push(row("runs (distinct seeds)", `${summaries.length} (${seedCount})`));
  rows.push(
    row(
      "steps in all",
      String(allSteps),
      quick ? "" : "≥ 20000",
      quick ? null : allSteps >= 20_000,
    ),
  );
  rows.push(
    row(
      counted.size === 1 && counted.has("fired")
        ? "faults fired in all"
        : "faults set in all (fired or not)",
      String(allFaults),
    ),
  );
  rows.push(row("violations in all", String(allViolations), "0", allViolations === 0));
  // Steps per minute of one run (a stack each side by side multiplies it).
  rows.push(row("steps per minute per run", (allSteps / Math.max(1, allSeconds) * 60).toFixed(0)));
  if (stacks > 1) rows.push(row("stacks side by side", String(stacks)));
  return rows;
};
