/**
 * Starts the local stack (`local/stack.ts --profile test`) as a child process on a chosen
 * port base and state directory, for `deno task test` and `deno task bench`: waits for its
 * `stack.env`, copies its output to a log file, and stops it on request.
 */

import { parseEnvFile, stackStateDir } from "../tooling/env_file.ts";
import { portEnv } from "./ports.ts";
import { assertStateDirFree } from "./state_lock.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** Where a launched stack lives. */
interface LaunchOptions {
  /**
   * State directory, relative to the repository root (e.g. `.local/test`); unset, the stack picks
   * its own from the port base (`.local/test` at 25321, `.local/test-<base>` at another).
   */
  stateDir?: string;
  /** First of the stack's six ports (gateway, Backend DB, Admin DB, sandbox, Backend and Admin poolers). */
  portBase?: number;
  /** File that receives the stack's stdout and stderr (default `<stateDir>/stack.log`). */
  logFile?: string;
  /** How long to wait for the stack to come up, in ms (default 120 s). */
  timeoutMs?: number;
  /**
   * Variables for the stack's process on top of the caller's environment (e.g. `STACK_MP_SITES`
   * for a stack of several MercadoPago applications); the port base and state folder win.
   */
  env?: Record<string, string>;
}

/** A running stack: its environment (`stack.env`) and how to stop it. */
export interface LaunchedStack {
  env: Record<string, string>;
  /** Absolute path of the log file. */
  logFile: string;
  /** Absolute path of the state directory. */
  stateDir: string;
  /** The state directory as the stack names it (relative to the repository root). */
  folder: string;
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

/**
 * Starts the stack and resolves once it has written its `stack.env`; throws if it never does, or
 * at once (touching nothing) when a live stack holds the state directory.
 */
export async function launchStack(opts: LaunchOptions): Promise<LaunchedStack> {
  // An empty STACK_STATE_DIR lets the stack pick its folder from the base (not the parent's).
  const childEnv: Record<string, string> = {
    ...opts.env,
    STACK_STATE_DIR: opts.stateDir ?? "",
    ...(opts.portBase === undefined ? {} : portEnv(opts.portBase)),
  };
  const folder = stackStateDir("test", (n) => n in childEnv ? childEnv[n] : Deno.env.get(n));
  const stateDir = folder.startsWith("/") ? folder : `${ROOT}${folder}`;
  const envFile = `${stateDir}/stack.env`;
  const logFile = opts.logFile ?? `${stateDir}/stack.log`;
  // Refused before the log is truncated: that stack's log and stack.env stay as they are.
  await assertStateDirFree(stateDir, folder);
  await Deno.mkdir(stateDir, { recursive: true });
  const log = await Deno.open(logFile, { write: true, create: true, truncate: true });
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
    // The file a stack before it left (killed, never removed) names another STACK_PID.
    const env = parseEnvFile(await Deno.readTextFile(envFile).catch(() => ""));
    if (env.STACK_PID === String(child.pid)) return { env, logFile, stateDir, folder, stop };
    await new Promise((r) => setTimeout(r, 200));
  }
  const { code } = await stop();
  const shown = logFile.startsWith(ROOT) ? logFile.slice(ROOT.length) : logFile;
  // Its last lines say why (a missing package, a held port); the keys live only in stack.env.
  const tail = (await Deno.readTextFile(logFile)).trim().split("\n").slice(-5).join(" | ");
  throw new Error(`the local stack did not come up (exit ${code}): ${tail}; see ${shown}`);
}
