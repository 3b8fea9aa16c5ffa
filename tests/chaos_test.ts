/**
 * The CI-sized chaos run (tests/chaos/): fixed seeds, 50 counted steps each, of the model-based
 * run against the suite's stack. Fails on any violation of invariants 1–10 (checked after every
 * step by a checker that only reads: both databases, the sandbox's ledger, the receiver, the
 * log), with the seed, path, shrunk command list and the command that replays it. The run
 * pauses the pg_cron jobs and restores them, and undoes every fault it injects after each
 * command sequence.
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
      `chaos seed ${seed}: ${summary.steps} steps in ${summary.runs} sequences ` +
        `(${summary.noop_steps} no-op), ${total(summary.faultsFired)} faults fired (${
          Object.keys(summary.faultsFired).sort().join(", ")
        }), ${summary.violations.length} violations, ${summary.seconds} s; observed ${
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
    // The budget is met with steps that did something (no-op and shrinking steps apart).
    if (summary.steps < STEPS_PER_SEED) {
      throw new Error(
        `chaos seed ${seed}: ${summary.steps} steps counted, ${STEPS_PER_SEED} asked`,
      );
    }
  });
}
