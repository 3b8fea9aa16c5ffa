/**
 * The CI-sized chaos run (tests/chaos/): fixed seeds, 50 counted steps each, of the model-based
 * run against a stack of its own with two MercadoPago applications (`MP_APPS`: MLA and MLB),
 * launched beside the suite's stack (ports `testPort(71)`–78, one such stack at a time, as
 * `useMultiAppStack`'s) and stopped after the last seed. Each seed is one `tests/chaos/cli.ts`
 * process with that stack's environment. Fails on any violation of invariants 1–10 or a
 * cross-application call (the sandbox's `cross_app_calls` is checked after every step: it must
 * stay 0), with the seed, path, shrunk command list and the command that replays it. The run
 * pauses the pg_cron jobs and restores them, and undoes every fault it injects after each
 * command sequence. Afterwards: both sites had accounts, and none of the stack's secrets is in
 * its log.
 */
import assert from "node:assert/strict";
import { stack, testPort } from "./_stack.ts";
import { launchStack } from "../local/launch.ts";
import { findLeaks, knownSecrets } from "../local/leaks.ts";

const SEEDS = [101, 202, 303, 404];
const STEPS_PER_SEED = 50;
const SITES = ["MLA", "MLB"];

let launched: Awaited<ReturnType<typeof launchStack>> | undefined;

Deno.test.beforeAll(async () => {
  const base = testPort(71);
  const folder = stack.env("STACK_LOG").replace(/\/[^/]*$/, "");
  launched = await launchStack({
    stateDir: `${folder}-chaos`,
    portBase: base,
    env: {
      STACK_MP_SITES: SITES.join(","),
      // Its own receiver port: the suite stack's would get this stack's events.
      PLATFORM_WEBHOOK_URL: `http://127.0.0.1:${base + 7}/platform/events`,
    },
  });
});

Deno.test.afterAll(async () => {
  if (!launched) return;
  const log = await Deno.readTextFile(launched.logFile);
  const secrets = await knownSecrets(launched.env);
  await launched.stop();
  const leaks = findLeaks(log, secrets);
  if (leaks.length > 0) {
    throw new Error(`${leaks.length} secrets of the chaos stack appear in its log`);
  }
});

/** What a `chaos-summary` line holds that this test reads. */
interface Summary {
  apps: string[];
  multi_app: boolean;
  steps: number;
  runs: number;
  noop_steps: number;
  seconds: number;
  faultsFired: Record<string, number>;
  faultsFiredPerApp: Record<string, Record<string, number>>;
  accounts_per_app: Record<string, number>;
  commands: Record<string, number>;
  violations: string[];
}

/** The environment a child process needs besides the stack's (its PATH and Deno's cache). */
function baseEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

for (const seed of SEEDS) {
  Deno.test(`chaos on two applications (MLA, MLB): seed ${seed}, ${STEPS_PER_SEED} steps, invariants 1–10 and cross_app_calls 0 after every step`, async () => {
    const s = launched!;
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./chaos/cli.ts", import.meta.url).pathname,
        "--seed",
        String(seed),
        "--steps",
        String(STEPS_PER_SEED),
        "--max-commands",
        "20",
        "--sites",
        SITES.join(","),
        "--shrink-minutes",
        "3",
        "--quiet",
      ],
      clearEnv: true,
      env: { ...baseEnv(), ...s.env, STACK_LOG: s.logFile },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    const line = out.split("\n").find((l) => l.startsWith("chaos-summary "));
    if (!line) {
      const tail = new TextDecoder().decode(run.stderr).trim().split("\n").slice(-10).join("\n");
      throw new Error(`chaos seed ${seed} printed no summary (exit ${run.code}):\n${tail}`);
    }
    const summary = JSON.parse(line.slice("chaos-summary ".length)) as Summary;
    const fired = Object.values(summary.faultsFired).reduce((a, b) => a + b, 0);
    console.log(
      `chaos seed ${seed} (${
        summary.apps.join(", ")
      }): ${summary.steps} steps in ${summary.runs} sequences ` +
        `(${summary.noop_steps} no-op), accounts ${JSON.stringify(summary.accounts_per_app)}, ` +
        `${fired} faults fired (${
          Object.keys(summary.faultsFired).sort().join(", ")
        }; per application ${
          JSON.stringify(summary.faultsFiredPerApp)
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
    assert.equal(run.code, 0, `chaos seed ${seed} exited ${run.code}`);
    assert.deepEqual(summary.apps, ["MLA", "MLB"]);
    assert.equal(summary.multi_app, true);
    // The budget is met with steps that did something (no-op and shrinking steps apart).
    assert.ok(
      summary.steps >= STEPS_PER_SEED,
      `chaos seed ${seed}: ${summary.steps} steps counted, ${STEPS_PER_SEED} asked`,
    );
  });
}

Deno.test("chaos on two applications: after every seed, the stack's sandbox counted 0 cross-application calls and both applications were used", async () => {
  const s = launched!;
  const stats = await (await fetch(`${s.env.SANDBOX_URL}/__sandbox/stats`)).json();
  assert.equal(stats.cross_app_calls, 0);
  const sites = Object.values(
    stats.apps as Record<string, { site_id: string; cross_app_calls: number; token_calls: number }>,
  );
  assert.deepEqual(sites.map((a) => a.site_id).sort(), ["MLA", "MLB"]);
  for (const app of sites) {
    assert.equal(app.cross_app_calls, 0, app.site_id);
    assert.ok(app.token_calls > 0, `${app.site_id}: its application was called`);
  }
});
