/**
 * `deno task test` (the test harness): starts the local stack on its own ports (`--profile test`, so it runs
 * beside `deno task dev`), runs every test against it, lints both databases with
 * `supabase db lint` (whole suite only), scans all the output for leaked secrets, stops the stack, and ends with the line `tests: N passed, N failed`.
 * `STACK_PORT_BASE` and `STACK_STATE_DIR` move it, so several runs can share a machine.
 */
import { type LaunchedStack, launchStack, pump } from "../../local/launch.ts";
import { findLeaks, knownSecrets } from "../../local/leaks.ts";
import { lintDatabases } from "../../tooling/lint_db.ts";
import { connect } from "../../shared/platform/db.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const STATE_DIR = Deno.env.get("STACK_STATE_DIR") ?? ".local/test";
const STATE = `${ROOT}${STATE_DIR}`;
const STACK_LOG = `${STATE}/stack.log`;
const TEST_LOG = `${STATE}/tests.log`;
const JUNIT = `${STATE}/junit.xml`;

/**
 * Counts test cases and failures in deno's JUnit report. Nothing may skip silently: an
 * ignored test counts as failed, unless `filtered` (a `--filter` run leaves the rest out).
 */
export function countJunit(xml: string, filtered = false): { passed: number; failed: number } {
  const cases = xml.match(/<testcase\b[^>]*?(\/>|>[\s\S]*?<\/testcase>)/g) ?? [];
  const failed = cases.filter((c) => /<failure\b|<error\b/.test(c)).length;
  const skipped = cases.filter((c) => /<skipped\b/.test(c)).length;
  if (skipped > 0 && !filtered) console.log(`${skipped} tests were skipped: counted as failed`);
  return { passed: cases.length - failed - skipped, failed: failed + (filtered ? 0 : skipped) };
}

/**
 * Pauses the test stack's every-minute mp-reconcile and mp-probe jobs: a run landing between a
 * test's setup and its check would repair drift (or verify tokens) the test put there on purpose. The tests of mp-reconcile
 * call it themselves, and its schedule is tested by running the job's command.
 */
async function pauseReconcileSchedule(url: string) {
  const sql = connect(url, { max: 1 });
  try {
    await sql`update cron.job set active = false where jobname in ('mp-reconcile', 'mp-probe', 'mp-deliver-events')`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function main(): Promise<number> {
  const portBase = Deno.env.get("STACK_PORT_BASE");
  let stack: LaunchedStack | undefined;
  let exitCode = 1;
  let counts = { passed: 0, failed: 1 };
  try {
    const started = performance.now();
    stack = await launchStack({
      stateDir: STATE_DIR,
      portBase: portBase ? Number(portBase) : undefined,
      logFile: STACK_LOG,
    });
    const env = stack.env;
    await pauseReconcileSchedule(env.BACKEND_DB_URL);
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
      counts = countJunit(
        await Deno.readTextFile(JUNIT),
        Deno.args.some((a) => a.startsWith("--filter")),
      );
    } catch {
      counts = { passed: 0, failed: 1 };
    }
    if (!status.success && counts.failed === 0) counts.failed = 1;

    // The whole suite also lints both databases (plpgsql_check through the CLI), as CI must.
    if (Deno.args.length === 0) {
      const lint = await lintDatabases(env).catch((err: Error) => [
        { label: "both", ok: false, output: err.message },
      ]);
      for (const r of lint) {
        counts[r.ok ? "passed" : "failed"]++;
        console.log(`supabase db lint (${r.label}) ... ${r.ok ? "ok" : "FAILED"}`);
        if (!r.ok) console.log(r.output);
      }
    }

    const secrets = await knownSecrets(env);
    await stack.stop();
    const output = (await Deno.readTextFile(STACK_LOG)) + (await Deno.readTextFile(TEST_LOG));
    const leaked = findLeaks(output, secrets);
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
    await stack?.stop();
  }
  console.log(`tests: ${counts.passed} passed, ${counts.failed} failed`);
  return exitCode;
}

if (import.meta.main) Deno.exit(await main());
