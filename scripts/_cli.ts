/**
 * What the operator scripts share: the configuration read once from the environment (the
 * same `shared/platform/config.ts` the functions use), topped up from the local stack's env file,
 * flag parsing, one-line errors, and a progress bar on a TTY.
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
import { parseEnvFile, stackEnvFile } from "../tooling/env_file.ts";

const ROOT = new URL("../", import.meta.url).pathname;

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

/** The variables a script runs with, and where the ones the environment lacked came from. */
interface ScriptEnv {
  env: Record<string, string>;
  /** The env file looked in, as the person names it (relative to the repository root). */
  file: string;
  /** Whether that file exists (and was read). */
  found: boolean;
  /** Variables taken from the file (the environment held them empty or not at all). */
  fromFile: string[];
}

/**
 * The environment's variables topped up from the local stack's env file (`STACK_ENV_FILE`, else
 * `stack.env` of the `dev` stack that `STACK_STATE_DIR` or `STACK_PORT_BASE` name, else
 * `.local/dev/stack.env`): a non-empty value in the environment always wins. `read` answers a
 * file's text, or undefined when there is none.
 */
export function scriptEnv(
  environment: Record<string, string>,
  read: (path: string) => string | undefined,
): ScriptEnv {
  const file = stackEnvFile((name) => environment[name]);
  const text = read(file.startsWith("/") ? file : `${ROOT}${file}`);
  const env = { ...environment };
  const fromFile: string[] = [];
  for (const [name, value] of Object.entries(text === undefined ? {} : parseEnvFile(text))) {
    if (env[name]) continue;
    env[name] = value;
    fromFile.push(name);
  }
  return { env, file, found: text !== undefined, fromFile };
}

/**
 * The one line a script prints for an unmet need: what is wrong with the variable (never its
 * value) and where it looked — the environment, then the env file when `from` says it did.
 */
export function misconfiguredLine(err: MisconfiguredError, from?: ScriptEnv): string {
  const { variable, reason } = err;
  if (!from || from.env[variable]?.trim()) {
    const source = from?.fromFile.includes(variable) ? from.file : "the environment";
    return `${variable}: ${reason} (in ${source})`;
  }
  const where = from.found
    ? `nor in ${from.file}: set it`
    : `nor in ${from.file}, which does not exist: start the stack with \`deno task dev\`, or set it`;
  return `${variable} is ${reason} (not in the environment, ${where})`;
}

/** The first unmet need of `config` as a `MisconfiguredError`, or undefined when all are met. */
function unmet(config: ReturnType<typeof loadConfig>, needs: Need[]) {
  try {
    requireConfig(config, needs);
  } catch (err) {
    if (err instanceof MisconfiguredError) return err;
    throw err;
  }
}

/**
 * A context over the environment's configuration; when the environment lacks a variable a need
 * requires, the local stack's env file fills every variable it lacks (said on stderr). Exits with
 * one line when a need is still unmet.
 */
export function scriptContext(
  script: string,
  needs: Need[],
): Context & { close(): Promise<void> } {
  // A scan of a million rows can take seconds: the scripts' default bound per database call is
  // 30 s (`DB_TIMEOUT_MS` overrides it), not the functions' 5 s.
  const load = (env: Record<string, string>) => loadConfig({ DB_TIMEOUT_MS: "30000", ...env });
  const environment = Deno.env.toObject();
  let config = load(environment);
  let problem = unmet(config, needs);
  let from: ScriptEnv | undefined;
  if (problem && !environment[problem.variable]?.trim()) {
    from = scriptEnv(environment, (path) => {
      try {
        return Deno.readTextFileSync(path);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return undefined;
        fail(script, `cannot read ${path}: ${(err as Error).message}`);
      }
    });
    config = load(from.env);
    problem = unmet(config, needs);
  }
  if (problem) fail(script, misconfiguredLine(problem, from));
  if (from && from.fromFile.length > 0) {
    console.error(`${script}: variables not in the environment read from ${from.file}`);
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
