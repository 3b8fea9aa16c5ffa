/** `syncResultOf`: the one mapping from a fenced cache write to what a sync reports. */
import assert from "node:assert/strict";
import { syncResultOf } from "../shared/sync/sync.ts";

Deno.test("syncResultOf: a missing client wins; a connected account reports the write; else mp_not_connected", () => {
  assert.equal(syncResultOf("client_not_found", true), "client_not_found");
  assert.equal(syncResultOf("client_not_found", false), "client_not_found");
  assert.equal(syncResultOf("synced", true), "synced");
  assert.equal(syncResultOf("already_current", true), "already_current");
  assert.equal(syncResultOf("synced", false), "mp_not_connected");
  assert.equal(syncResultOf("already_current", false), "mp_not_connected");
});
