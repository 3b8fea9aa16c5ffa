/**
 * The chaos run against a stack that is already up, its environment given (tests/chaos/main.ts
 * and bench/chaos.ts run it so): `deno run -A tests/chaos/cli.ts --seed S --steps N
 * [--max-commands M] [--path P --replay-path R] [--quiet]`. Prints each step, the faults
 * injected and the violations, then one line `chaos-summary {json}`; exits 1 on a violation.
 */
import { parseArgs } from "node:util";
import { runChaos, total } from "./run.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seed: { type: "string", default: "1" },
      steps: { type: "string", default: "200" },
      "max-commands": { type: "string", default: "25" },
      path: { type: "string" },
      "replay-path": { type: "string" },
      quiet: { type: "boolean", default: false },
    },
  });
  const summary = await runChaos({
    seed: Number(values.seed),
    steps: Number(values.steps),
    maxCommands: Number(values["max-commands"]),
    path: values.path,
    replayPath: values["replay-path"],
    log: values.quiet ? undefined : (line) => console.log(line),
  });
  console.log(
    `chaos: seed ${summary.seed}: ${summary.steps} steps in ${summary.runs} sequences, ` +
      `${summary.seconds} s (${
        (summary.steps / Math.max(1, summary.seconds) * 60).toFixed(0)
      } steps/min); ` +
      `${total(summary.faults)} faults injected; ${summary.violations.length} violation(s)`,
  );
  for (const [k, v] of Object.entries(summary.faults).sort()) console.log(`  fault ${k}: ${v}`);
  for (const v of summary.violations) console.log(`VIOLATION (seed ${summary.seed})\n${v}`);
  console.log(`chaos-summary ${JSON.stringify(summary)}`);
  Deno.exit(summary.violations.length === 0 ? 0 : 1);
}
