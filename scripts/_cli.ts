/**
 * What the operator scripts share: the configuration read once from the environment (the
 * same `shared/platform/config.ts` the functions use), flag parsing, one-line errors, and a
 * progress bar on a TTY.
 */
import cliProgress from "cli-progress";
import process from "node:process";
import { parseArgs, type ParseArgsConfig } from "node:util";
import {
  loadConfig,
  MisconfiguredError,
  type Need,
  requireConfig,
} from "../shared/platform/config.ts";
import { type Context, createContext } from "../shared/platform/context.ts";

/** Prints `<script>: <message>` on stderr and exits with `code`. */
export function fail(script: string, message: string, code = 2): never {
  console.error(`${script}: ${message}`);
  Deno.exit(code);
}

/** The script's command-line flags (node's `parseArgs`); an unknown or ill-typed flag exits with one line. */
export function parseFlags<const O extends NonNullable<ParseArgsConfig["options"]>>(
  script: string,
  options: O,
) {
  try {
    return parseArgs({ args: Deno.args, options }).values;
  } catch (err) {
    fail(script, (err as Error).message);
  }
}

/** `--batch` as an integer from 1 to 20000; anything else exits with one line. */
export function batchFlag(script: string, text: string): number {
  const size = Number(text);
  if (!Number.isInteger(size) || size < 1 || size > 20_000) {
    fail(script, "--batch must be an integer from 1 to 20000");
  }
  return size;
}

/** A context over the environment's configuration; exits with one line when a need is unmet. */
export function scriptContext(
  script: string,
  needs: Need[],
): Context & { close(): Promise<void> } {
  // A scan of a million rows can take seconds: the scripts' default bound per database call is
  // 30 s (`DB_TIMEOUT_MS` overrides it), not the functions' 5 s.
  const config = loadConfig({ DB_TIMEOUT_MS: "30000", ...Deno.env.toObject() });
  try {
    requireConfig(config, needs);
  } catch (err) {
    if (err instanceof MisconfiguredError) {
      fail(script, `${err.variable} is ${err.reason} (set it in the environment)`);
    }
    throw err;
  }
  return createContext(config);
}

/** A progress bar on stderr when it is a terminal; a no-op otherwise. */
export function progressBar(label: string): {
  update(done: number, total: number): void;
  stop(): void;
} {
  if (!Deno.stderr.isTerminal()) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {percentage}% | {value}/{total} | {eta_formatted} left`,
    stream: process.stderr,
    hideCursor: true,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update(done, total) {
      if (!started) bar.start(total, 0);
      started = true;
      bar.setTotal(total);
      bar.update(done);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
