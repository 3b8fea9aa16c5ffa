/** `driftOf`: how a cache row differs from its account, by version and presence (no stack needed). */
import assert from "node:assert/strict";
import { type AccountState, driftOf } from "../shared/reconcile/drift.ts";
import type { CacheState } from "../shared/store/clients.ts";

const account = (connected: boolean, version: number): AccountState => ({
  id: "a",
  backend_client_id: "c",
  connected,
  mp_token_version: version,
});
const cache = (version: number | null, token: boolean, publicKey = token): CacheState => ({
  id: "c",
  mp_token_version: version,
  has_token: token,
  has_public_key: publicKey,
});

Deno.test("driftOf: a missing client row is client_missing", () => {
  assert.equal(driftOf(account(true, 3), undefined), "client_missing");
  assert.equal(driftOf(account(false, 3), undefined), "client_missing");
});

Deno.test("driftOf: a connected account's cache at its version is in sync", () => {
  assert.equal(driftOf(account(true, 3), cache(3, true)), null);
});

Deno.test("driftOf: a connected account's cache older, newer or empty", () => {
  assert.equal(driftOf(account(true, 3), cache(2, true)), "stale");
  assert.equal(driftOf(account(true, 3), cache(null, true)), "stale");
  assert.equal(driftOf(account(true, 3), cache(4, true)), "ahead");
  assert.equal(driftOf(account(true, 3), cache(3, false)), "empty");
  assert.equal(driftOf(account(true, 3), cache(9, false)), "empty");
});

Deno.test("driftOf: a revoked account must have nothing cached", () => {
  assert.equal(driftOf(account(false, 5), cache(5, false)), null);
  assert.equal(driftOf(account(false, 5), cache(null, false)), null);
  assert.equal(driftOf(account(false, 5), cache(5, true)), "revoked_cached");
  assert.equal(driftOf(account(false, 5), cache(5, false, true)), "revoked_cached");
});
