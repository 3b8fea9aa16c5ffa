/**
 * `deno task test`: starts the local stack on its own ports (`--profile test`, so it runs
 * beside `deno task dev`), runs every test against it, scans all the output for leaked
 * secrets, stops the stack, and ends with the line `tests: N passed, N failed`.
 * `STACK_PORT_BASE` and `STACK_STATE_DIR` move it, so several runs can share a machine.
 */
const ROOT = new URL("../", import.meta.url).pathname;
const STATE = `${ROOT}${Deno.env.get("STACK_STATE_DIR") ?? ".local/test"}`;
const ENV_FILE = `${STATE}/stack.env`;
const STACK_LOG = `${STATE}/stack.log`;
const TEST_LOG = `${STATE}/tests.log`;
const JUNIT = `${STATE}/junit.xml`;

/** Parses `KEY=value` lines. */
export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0 && !line.startsWith("#")) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

async function pump(stream: ReadableStream<Uint8Array>, file: Deno.FsFile, echo: boolean) {
  for await (const chunk of stream) {
    await file.write(chunk);
    if (echo) await Deno.stdout.write(chunk);
  }
}

async function waitForStack(stack: Deno.ChildProcess): Promise<Record<string, string>> {
  let exited = false;
  stack.status.then(() => (exited = true));
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && !exited) {
    try {
      return parseEnvFile(await Deno.readTextFile(ENV_FILE));
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error("the local stack did not come up; see .local/test/stack.log");
}

async function stopStack(stack: Deno.ChildProcess) {
  try {
    stack.kill("SIGTERM");
  } catch {
    return;
  }
  const done = await Promise.race([
    stack.status.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 20_000)),
  ]);
  if (!done) stack.kill("SIGKILL");
}

/** Counts test cases and failures in deno's JUnit report. */
function countJunit(xml: string): { passed: number; failed: number } {
  const cases = xml.match(/<testcase\b[^>]*?(\/>|>[\s\S]*?<\/testcase>)/g) ?? [];
  const failed = cases.filter((c) => /<failure\b|<error\b/.test(c)).length;
  const skipped = cases.filter((c) => /<skipped\b/.test(c)).length;
  return { passed: cases.length - failed - skipped, failed };
}

/** Every secret the run created (sandbox tokens and codes, the stack's keys), for the scan. */
async function knownSecrets(env: Record<string, string>): Promise<string[]> {
  const secrets = [
    env.SECRET_KEY,
    env.SERVICE_ROLE_KEY,
    env.MP_CLIENT_SECRET,
    env.MP_WEBHOOK_SECRET,
    ...env.MP_TOKEN_KEYS.split(",").map((k) => k.slice(k.indexOf(":") + 1)),
  ];
  try {
    const res = await fetch(`${env.SANDBOX_URL}/__sandbox/secrets`);
    if (res.ok) secrets.push(...((await res.json()).secrets as string[]));
  } catch { /* sandbox already gone: scan the stack's own keys only */ }
  return secrets.filter((s) => s && s.length >= 8);
}

async function main(): Promise<number> {
  await Deno.mkdir(STATE, { recursive: true });
  await Deno.remove(ENV_FILE).catch(() => {});
  const stackLog = await Deno.open(STACK_LOG, { write: true, create: true, truncate: true });
  const stack = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}local/stack.ts`, "--profile", "test"],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const stackPumps = [pump(stack.stdout, stackLog, false), pump(stack.stderr, stackLog, false)];
  let exitCode = 1;
  let counts = { passed: 0, failed: 1 };
  try {
    const started = performance.now();
    const env = await waitForStack(stack);
    console.log(`local test stack up in ${((performance.now() - started) / 1000).toFixed(1)}s`);
    const testLog = await Deno.open(TEST_LOG, { write: true, create: true, truncate: true });
    await Deno.remove(JUNIT).catch(() => {});
    const tests = new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", `--junit-path=${JUNIT}`, ...(Deno.args.length ? Deno.args : ["tests/"])],
      cwd: ROOT,
      env: { ...env, STACK_LOG, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    await Promise.all([pump(tests.stdout, testLog, true), pump(tests.stderr, testLog, true)]);
    const status = await tests.status;
    testLog.close();
    try {
      counts = countJunit(await Deno.readTextFile(JUNIT));
    } catch {
      counts = { passed: 0, failed: 1 };
    }
    if (!status.success && counts.failed === 0) counts.failed = 1;

    const secrets = await knownSecrets(env);
    await stopStack(stack);
    await Promise.all(stackPumps);
    const output = (await Deno.readTextFile(STACK_LOG)) + (await Deno.readTextFile(TEST_LOG));
    const leaked = secrets.filter((s) => output.includes(s));
    if (leaked.length === 0) {
      counts.passed++;
      console.log(`leak scan: ${secrets.length} secrets, none in the logs ... ok`);
    } else {
      counts.failed++;
      console.log(
        `leak scan: ${leaked.length} of ${secrets.length} secrets appear in the logs ... FAILED`,
      );
    }
    exitCode = counts.failed === 0 ? 0 : 1;
  } catch (err) {
    console.error(`test harness: ${(err as Error).message}`);
    const tail = (await Deno.readTextFile(STACK_LOG).catch(() => "")).split("\n").slice(-30);
    console.error(tail.join("\n"));
  } finally {
    await stopStack(stack);
  }
  console.log(`tests: ${counts.passed} passed, ${counts.failed} failed`);
  return exitCode;
}

if (import.meta.main) Deno.exit(await main());
