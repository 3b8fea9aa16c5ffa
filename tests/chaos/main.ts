/**
 * `deno task chaos --seed S --steps N [--max-commands M] [--sites SITES] [--path P
 * --replay-path R]`: starts a throwaway local stack of its own (`.local/chaos`, ports from
 * `STACK_PORT_BASE`, default 24000 — below Linux's ephemeral range) with the MercadoPago
 * applications of `--sites` (default `MLA,MLB`: two applications; `single`: the single app),
 * runs the model-based chaos run (tests/chaos/cli.ts) against it, and stops the stack. Several
 * seeds: `--seed 1,2,3`. A replay line without `--sites` (printed before the run had several
 * applications) replays on the single app, as it was found.
 */
import { launchStack, pump } from "../../local/launch.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const STATE_DIR = Deno.env.get("STACK_STATE_DIR") ?? ".local/chaos";
/** The applications a chaos run's stack runs unless `--sites` says otherwise. */
const DEFAULT_SITES = "MLA,MLB";

async function main(): Promise<number> {
  const portBase = Number(Deno.env.get("STACK_PORT_BASE") ?? "24000");
  const args = [...Deno.args];
  const at = args.indexOf("--seed");
  const seeds = at >= 0 ? args.splice(at, 2)[1].split(",") : ["1"];
  const s = args.indexOf("--sites");
  const sites = s >= 0 ? args.splice(s, 2)[1] : args.includes("--path")
    ? "single" // an old replay line: found on the single app
    : DEFAULT_SITES;
  console.log(
    `chaos: starting a local stack (${STATE_DIR}, ports from ${portBase}, applications: ${sites})`,
  );
  const stack = await launchStack({
    stateDir: STATE_DIR,
    portBase,
    env: { STACK_MP_SITES: sites },
  });
  let failed = 0;
  try {
    for (const seed of seeds) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}tests/chaos/cli.ts`, "--seed", seed, "--sites", sites, ...args],
        cwd: ROOT,
        env: { ...stack.env, STACK_LOG: stack.logFile },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = await Deno.open(`${stack.stateDir}/chaos-${seed}.log`, {
        write: true,
        create: true,
        truncate: true,
      });
      await Promise.all([pump(child.stdout, out, true), pump(child.stderr, out, true)]);
      out.close();
      if (!(await child.status).success) failed++;
    }
  } finally {
    await stack.stop();
  }
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
