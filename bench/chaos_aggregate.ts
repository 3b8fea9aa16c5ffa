/**
 * `deno task chaos:aggregate [--commit SHA] LOG_OR_DIR…`: a long chaos run spread over several
 * stacks (e.g. `deno task chaos --seed 1,2,3 --steps 5000` on each, or `BENCH_CHAOS_STACKS=4
 * deno task bench`) aggregated from its logs: every `chaos-summary` line of the logs given (a
 * directory: its `chaos-*.log` files) is one run — stack (the log's directory), commit, seed,
 * steps, sequences, the applications it ran with (sites; `single` for the single app or a line
 * printed before runs had several), faults (fired, when the run tells them from set; and those
 * of one application alone, per site), violations and their replay lines. Stores them in bench/results/chaos_long_run.json (the logs given are the whole
 * long run: it replaces the one stored) and re-renders bench/RESULTS.md ("Chaos: the long
 * run"), where the totals and whether they meet ≥ 20,000 steps and 0 violations are computed.
 * A run whose summary names no commit takes `--commit` (said so in the table); without it the
 * aggregate stops rather than guess.
 */
import { parseArgs } from "node:util";
import { appsOf, faultsOf, faultsPerAppOf, replayOf, summariesOf } from "./chaos_summary.ts";
import {
  CHAOS_STORE,
  type ChaosLongRun,
  type ChaosRunRecord,
  writeJson,
  writeResults,
} from "./results.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** The log files `path` names: itself, or a directory's `chaos-*.log`, sorted. */
async function logsOf(path: string): Promise<string[]> {
  const info = await Deno.stat(path);
  if (!info.isDirectory) return [path];
  const out: string[] = [];
  for await (const e of Deno.readDir(path)) {
    if (e.isFile && /^chaos-.*\.log$/.test(e.name)) {
      out.push(`${path.replace(/\/$/, "")}/${e.name}`);
    }
  }
  return out.sort();
}

/** Repository-relative when inside it, else as given. */
const relative = (path: string) => {
  const abs = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  return abs.startsWith(ROOT) ? abs.slice(ROOT.length) : abs;
};

/** The runs the logs report, one record per `chaos-summary` line. */
export async function aggregate(paths: string[], commit?: string): Promise<ChaosRunRecord[]> {
  const runs: ChaosRunRecord[] = [];
  for (const path of paths) {
    for (const log of await logsOf(path)) {
      const summaries = summariesOf(await Deno.readTextFile(log));
      if (summaries.length === 0) {
        throw new Error(`${log}: no chaos-summary line (a run cut short?)`);
      }
      for (const s of summaries) {
        const named = s.commit ?? commit;
        if (!named) {
          throw new Error(`${log}: the summary names no commit; pass --commit <sha> for it`);
        }
        const { faults, counted } = faultsOf(s);
        const rel = relative(log);
        runs.push({
          log: rel,
          stack: rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : ".",
          commit: named,
          commitFrom: s.commit ? "summary" : "--commit",
          seed: s.seed,
          steps: s.steps,
          sequences: s.runs,
          seconds: s.seconds,
          faults,
          faultsCounted: counted,
          apps: appsOf(s),
          faultsPerApp: faultsPerAppOf(s),
          violations: s.violations.length,
          replays: s.violations.map(replayOf),
        });
      }
    }
  }
  return runs;
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { commit: { type: "string" } },
    allowPositionals: true,
  });
  if (positionals.length === 0) {
    console.error("usage: deno task chaos:aggregate [--commit SHA] LOG_OR_DIR…");
    return 2;
  }
  const runs = await aggregate(positionals, values.commit);
  const long: ChaosLongRun = {
    command: ["deno task chaos:aggregate", ...Deno.args].join(" "),
    date: new Date().toISOString(),
    runs,
  };
  await writeJson(CHAOS_STORE, long);
  await writeResults(undefined, undefined, long);
  const steps = runs.reduce((a, r) => a + r.steps, 0);
  const violations = runs.reduce((a, r) => a + r.violations, 0);
  console.log(
    `chaos:aggregate: ${runs.length} runs, ${steps} steps, ${violations} violations; stored ${
      CHAOS_STORE.slice(ROOT.length)
    }, wrote bench/RESULTS.md`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
