/**
 * The chaos run against a stack that is already up, its environment given (tests/chaos/main.ts
 * and bench/chaos.ts run it so): `deno run -A tests/chaos/cli.ts --seed S --steps N
 * [--max-commands M] [--sites SITES] [--path P --replay-path R] [--shrink-minutes K] [--quiet]`.
 * The run uses the stack's applications; `--sites` (`MLA,MLB`, or `single` for the single app),
 * when given, must name them (a replay on the stack it was found on). Prints each step, the
 * faults that fired (in all and per application) and the violations with the command that
 * replays the first (`replay: …`), then one line `chaos-summary {json}` (`ChaosSummary` of
 * tests/chaos/run.ts, plus `commit`); exits 1 on a violation, 2 on a stack of other sites.
 */
import { parseArgs } from "node:util";
import { runChaos, total } from "./run.ts";
import { stackApps } from "./world.ts";

/** The checked-out commit, with `+dirty` when the work tree differs from it (null outside git). */
async function commit(): Promise<string | null> {
  const git = (...args: string[]) =>
    new Deno.Command("git", { args, stdout: "piped", stderr: "null" }).output()
      .then((o) => (o.success ? new TextDecoder().decode(o.stdout).trim() : null))
      .catch(() => null);
  const head = await git("rev-parse", "HEAD");
  if (head === null) return null;
  const dirty = await git("status", "--porcelain", "--untracked-files=no");
  return dirty ? `${head}+dirty` : head;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seed: { type: "string", default: "1" },
      steps: { type: "string", default: "200" },
      "max-commands": { type: "string", default: "25" },
      path: { type: "string" },
      "replay-path": { type: "string" },
      sites: { type: "string" },
      "shrink-minutes": { type: "string" },
      quiet: { type: "boolean", default: false },
    },
  });
  const apps = stackApps();
  const stackSites = apps.multi ? apps.list.map((a) => a.site).join(",") : "single";
  if (values.sites !== undefined && values.sites !== stackSites) {
    console.error(`chaos: --sites ${values.sites}, but the stack runs ${stackSites}`);
    Deno.exit(2);
  }
  const summary = await runChaos({
    seed: Number(values.seed),
    steps: Number(values.steps),
    maxCommands: Number(values["max-commands"]),
    path: values.path,
    replayPath: values["replay-path"],
    ...(values["shrink-minutes"] ? { shrinkMinutes: Number(values["shrink-minutes"]) } : {}),
    log: values.quiet ? undefined : (line) => console.log(line),
  });
  const fired = total(summary.faultsFired);
  console.log(
    `chaos: seed ${summary.seed} (applications: ${
      summary.multi_app ? summary.apps.join(", ") : `the single app, ${summary.apps[0]}`
    }): ${summary.steps} steps in ${summary.runs} sequences ` +
      `(besides: ${summary.noop_steps} no-op steps; ${summary.shrink_steps} steps in ` +
      `${summary.shrink_runs} sequences shrinking), ${summary.seconds} s (${
        (summary.steps / Math.max(1, summary.seconds) * 60).toFixed(0)
      } steps/min); ${fired} faults fired (${
        total(summary.faults) - fired
      } set and never taken, not counted); ${summary.violations.length} violation(s)`,
  );
  for (const [k, v] of Object.entries(summary.faultsFired).sort()) {
    console.log(`  fault ${k}: ${v}`);
  }
  for (const [site, kinds] of Object.entries(summary.faultsFiredPerApp).sort()) {
    console.log(
      `  faults of ${site}'s application alone: ${total(kinds)} (${
        Object.entries(kinds).sort().map(([k, v]) => `${k} ${v}`).join(", ")
      })`,
    );
  }
  for (const v of summary.violations) console.log(`VIOLATION (seed ${summary.seed})\n${v}`);
  console.log(`chaos-summary ${JSON.stringify({ ...summary, commit: await commit() })}`);
  Deno.exit(summary.violations.length === 0 ? 0 : 1);
}
