/**
 * The CI-sized chaos run (issue 21, item 1; tests/chaos/): fixed seeds, 200 steps in all, of
 * the model-based run against the suite's stack. Fails on any violation of invariants 1–10, with
 * the seed, path and shrunk command list in the message. The run pauses the pg_cron jobs and
 * restores them, and undoes every fault it injects after each command sequence.
 */
import { runChaos, total } from "./chaos/run.ts";

const SEEDS = [101, 202, 303, 404];
const STEPS_PER_SEED = 50;

for (const seed of SEEDS) {
  Deno.test(`chaos: seed ${seed}, ${STEPS_PER_SEED} steps, invariants 1–10 after every step`, async () => {
    const summary = await runChaos({
      seed,
      steps: STEPS_PER_SEED,
      maxCommands: 20,
      shrinkMinutes: 3,
    });
    console.log(
      `chaos seed ${seed}: ${summary.steps} steps, ${summary.runs} sequences, ` +
        `${total(summary.faults)} faults (${Object.keys(summary.faults).sort().join(", ")}), ` +
        `${summary.violations.length} violations, ${summary.seconds} s; observed ${
          JSON.stringify(
            Object.fromEntries(
              Object.entries(summary.commands).filter(([k]) => k.startsWith("observed:")),
            ),
          )
        }`,
    );
    if (summary.violations.length > 0) {
      throw new Error(`chaos seed ${seed}:\n${summary.violations.join("\n")}`);
    }
  });
}
