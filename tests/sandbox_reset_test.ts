/**
 * Every test file starts from a reset sandbox (the `beforeAll` hook tests/_stack.ts registers):
 * a fault, latency or latch one file leaves behind does not reach the next. Proved with two
 * fixture files run by a `deno test` of their own against this stack, as the harness runs the
 * suite: the first leaves all three set (seen here, after it), the second finds none and a real
 * call meets no fault.
 */
import assert from "node:assert/strict";
import { sandbox, withCronPaused } from "./_stack.ts";

const FIXTURES = new URL("./fixtures/sandbox_reset/", import.meta.url);
const LEAVES = new URL("1_leaves_controls_set.ts", FIXTURES).pathname;
const CLEAN = new URL("2_starts_clean.ts", FIXTURES).pathname;

/** `deno test` of `files`, in that order, in one process; each test case with its verdict. */
async function denoTest(files: string[]) {
  const junit = await Deno.makeTempFile({ suffix: ".xml" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", `--junit-path=${junit}`, ...files],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
    const xml = await Deno.readTextFile(junit);
    const cases = [
      ...xml.matchAll(/<testcase name="([^"]*)" classname="([^"]*)"[\s\S]*?(?:\/>|<\/testcase>)/g),
    ]
      .map((m) => ({
        file: m[2].split("/").pop(),
        ok: !/<failure|<error|<skipped/.test(m[0]),
      }));
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { success: out.success, cases, text: text.slice(-2000) };
  } finally {
    await Deno.remove(junit);
  }
}

Deno.test("a fault, latency or latch left by one test file does not reach the next", async () => {
  // No scheduled mp-refresh meets the fault meanwhile (it would mark due accounts at risk).
  await withCronPaused("mp-refresh", async () => {
    try {
      const first = await denoTest([LEAVES]);
      assert.ok(first.success, first.text);
      // Nothing but a reset clears what it left: it is all still set now.
      assert.deepEqual(await sandbox.controls(), {
        fault: { mode: "error_500", count: 1_000_000 },
        latency_ms: 60_000,
        hold: true,
        held: 0,
      });
      const both = await denoTest([LEAVES, CLEAN]);
      assert.ok(both.success, both.text);
      assert.deepEqual(both.cases, [
        { file: "1_leaves_controls_set.ts", ok: true },
        { file: "2_starts_clean.ts", ok: true },
      ]);
    } finally {
      await sandbox.reset();
    }
  });
});
