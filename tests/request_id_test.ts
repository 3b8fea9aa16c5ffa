/**
 * Invariant 8 at the request id (no stack needed): an incoming `x-request-id` is used — in
 * logs, audit rows and the echoed header — only when it is at most 128 characters of
 * `[A-Za-z0-9._-]`; anything else is replaced by a fresh UUID, so a caller cannot store longer
 * text through it. (Mutants of `REQUEST_ID` in tests/mutation/mutants.ts.)
 */
import assert from "node:assert/strict";
import { requestIdOf } from "../shared/platform/http.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function withId(id: string): Request {
  return new Request("http://localhost/", { headers: { "x-request-id": id } });
}

Deno.test("requestIdOf keeps a well-formed id of 1 to 128 characters", () => {
  for (const id of ["a", "req-1.2_3", "x".repeat(128)]) assert.equal(requestIdOf(withId(id)), id);
});

Deno.test("requestIdOf replaces an id over 128 characters, or with other characters, by a fresh UUID", () => {
  for (const id of ["x".repeat(129), "x".repeat(5000), "ok then a space", "ok;drop", "ümlaut"]) {
    const used = requestIdOf(withId(id));
    assert.notEqual(used, id);
    assert.match(used, UUID);
  }
  assert.match(requestIdOf(new Request("http://localhost/")), UUID);
});
