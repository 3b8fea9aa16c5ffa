/**
 * The long chaos run (issue 21, item 1) for `deno task bench`: the model-based run of
 * tests/chaos/ (tests/chaos/cli.ts, a process of its own with the bench stack's environment)
 * over several seeds, reporting per seed the steps run, the faults injected and the
 * violations (target: 0), and the steps per minute overall. Nothing here asserts a time.
 *
 * Size: `BENCH_CHAOS_SEEDS` (comma-separated, default `1,2,3,4`) × `BENCH_CHAOS_STEPS` steps
 * per seed (default 5000: 20,000 in all). Measured on the 2-core dev box at about 95 steps a
 * minute (database stops and hangs dominate), so the default takes about 3.5 hours; set
 * `BENCH_CHAOS_STEPS` lower for a shorter bench. `--quick` runs 25 steps per seed.
 */
import type { Bench, BenchRow } from "./types.ts";

const ROOT = new URL("../", import.meta.url).pathname;

interface Summary {
  seed: number;
  steps: number;
  runs: number;
  seconds: number;
  faults: Record<string, number>;
  violations: string[];
}

const row = (metric: string, value: string, target = "", met: boolean | null = null): BenchRow => ({
  bench: "chaos",
  metric,
  value,
  baseline: "",
  ratio: "",
  target,
  met,
});

export const chaosBench: Bench = async (env) => {
  const quick = env.BENCH_QUICK === "1";
  const seeds = (env.BENCH_CHAOS_SEEDS ?? Deno.env.get("BENCH_CHAOS_SEEDS") ?? "1,2,3,4")
    .split(",").map((s) => s.trim()).filter(Boolean);
  const steps = quick
    ? 25
    : Number(env.BENCH_CHAOS_STEPS ?? Deno.env.get("BENCH_CHAOS_STEPS") ?? 5000);
  const stackLog = `${ROOT}${env.BENCH_LOG_DIR ?? ".local/bench"}/stack.log`;
  const rows: BenchRow[] = [];
  let allSteps = 0, allSeconds = 0, allFaults = 0, allViolations = 0;
  for (const seed of seeds) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}tests/chaos/cli.ts`,
        "--seed",
        seed,
        "--steps",
        String(steps),
        "--quiet",
      ],
      cwd: ROOT,
      env: { ...env, STACK_LOG: stackLog },
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const line = text.split("\n").find((l) => l.startsWith("chaos-summary "));
    if (!line) throw new Error(`chaos seed ${seed} printed no summary`);
    const s = JSON.parse(line.slice("chaos-summary ".length)) as Summary;
    const faults = Object.values(s.faults).reduce((a, b) => a + b, 0);
    allSteps += s.steps;
    allSeconds += s.seconds;
    allFaults += faults;
    allViolations += s.violations.length;
    rows.push(row(`seed ${seed}: steps`, String(s.steps)));
    rows.push(row(`seed ${seed}: faults injected`, String(faults)));
    rows.push(
      row(`seed ${seed}: violations`, String(s.violations.length), "0", s.violations.length === 0),
    );
    for (const v of s.violations) console.error(`chaos seed ${seed} VIOLATION:\n${v}`);
  }
  rows.push(
    row(
      "steps in all",
      String(allSteps),
      quick ? "" : "≥ 20000",
      quick ? null : allSteps >= 20_000,
    ),
  );
  rows.push(row("faults injected in all", String(allFaults)));
  rows.push(row("violations in all", String(allViolations), "0", allViolations === 0));
  rows.push(row("steps per minute", (allSteps / Math.max(1, allSeconds) * 60).toFixed(0)));
  return rows;
};
