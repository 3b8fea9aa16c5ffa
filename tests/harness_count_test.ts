/** The test harness's count (no stack needed): passes, failures, and skips counted as failures. */
import assert from "node:assert/strict";
import { countJunit } from "./harness/run.ts";

Deno.test("countJunit: an ignored test counts as failed, so nothing skips silently", () => {
  const xml = `<testsuites><testsuite>
    <testcase name="a" time="0.1"/>
    <testcase name="b" time="0.1"><failure message="x"/></testcase>
    <testcase name="c" time="0"><skipped/></testcase>
    <testcase name="d" time="0.2"></testcase>
  </testsuite></testsuites>`;
  assert.deepEqual(countJunit(xml), { passed: 2, failed: 2 });
});

Deno.test("countJunit: in a --filter run the tests left out are not failures", () => {
  const xml = `<testcase name="a"/><testcase name="c"><skipped/></testcase>`;
  assert.deepEqual(countJunit(xml, true), { passed: 1, failed: 0 });
});
