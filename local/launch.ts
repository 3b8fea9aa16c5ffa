/**
 * Starts the local stack (`local/stack.ts --profile test`) as a child process on a chosen
 * port base and state directory, for `deno task test` and `deno task bench`: waits for its
 * `stack.env`, copies its output to a log file, and stops it on request.
 */

import { parseEnvFile } from "../shared/operations/env_file.ts";
import { portEnv } from "./ports.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** Where a launched stack lives. */
export interface LaunchOptions {
  /** State directory, relative to the repository root (e.g. `.local/test`). */
  stateDir: string;
  /** First of the stack's six ports (gateway, Backend DB, Admin DB, sandbox, Backend and Admin poolers). */
  portBase?: number;
  /** File that receives the stack's stdout and stderr (default `<stateDir>/stack.log`). */
  logFile?: string;
  /** How long to wait for the stack to come up, in ms (default 120 s). */
  timeoutMs?: number;
}

/** A running stack: its environment (`stack.env`) and how to stop it. */
export interface LaunchedStack {
  env: Record<string, string>;
  /** Absolute path of the log file. */
  logFile: string;
  /** Absolute path of the state directory. */
  stateDir: string;
  /** Stops the stack (SIGTERM, then SIGKILL after 20 s), flushes its log, and answers its exit status. Idempotent. */
  stop(): Promise<Deno.CommandStatus>;
}

/** Parses `KEY=value` lines (kept here for the stack's callers). */
export { parseEnvFile };

/** Copies a child's output stream into `file`, optionally echoing it to stdout. */
export async function pump(stream: ReadableStream<Uint8Array>, file: Deno.FsFile, echo: boolean) {
  for await (const chunk of stream) {
    await file.write(chunk);
    if (echo) await Deno.stdout.write(chunk);
  }
}

async function stopChild(child: Deno.ChildProcess) {
  try {
    child.kill("SIGTERM");
  } catch {
    return;
  }
  const done = await Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 20_000)),
  ]);
  if (!done) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
}

/** Starts the stack and resolves once its `stack.env` is written; throws if it never is. */
export async function launchStack(opts: LaunchOptions): Promise<LaunchedStack> {
  const stateDir = `${ROOT}${opts.stateDir}`;
  const envFile = `${stateDir}/stack.env`;
  const logFile = opts.logFile ?? `${stateDir}/stack.log`;
  await Deno.mkdir(stateDir, { recursive: true });
  await Deno.remove(envFile).catch(() => {});
  const log = await Deno.open(logFile, { write: true, create: true, truncate: true });
  const childEnv: Record<string, string> = {
    STACK_STATE_DIR: opts.stateDir,
    ...(opts.portBase === undefined ? {} : portEnv(opts.portBase)),
  };
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}local/stack.ts`, "--profile", "test"],
    env: childEnv,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const pumps = Promise.all([pump(child.stdout, log, false), pump(child.stderr, log, false)]);
  let stopped: Promise<Deno.CommandStatus> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      await stopChild(child);
      await pumps.catch(() => {});
      log.close();
      return await child.status;
    })();

  let exited = false;
  child.status.then(() => (exited = true));
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  while (Date.now() < deadline && !exited) {
    try {
      const env = parseEnvFile(await Deno.readTextFile(envFile));
      return { env, logFile, stateDir, stop };
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const { code } = await stop();
  const shown = logFile.startsWith(ROOT) ? logFile.slice(ROOT.length) : logFile;
  // Its last lines say why (a missing package, a held port); the keys live only in stack.env.
  const tail = (await Deno.readTextFile(logFile)).trim().split("\n").slice(-5).join(" | ");
  throw new Error(`the local stack did not come up (exit ${code}): ${tail}; see ${shown}`);
}
