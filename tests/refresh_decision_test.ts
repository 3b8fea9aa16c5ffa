/**
 * The pure decision "may this run start a MercadoPago call now" (no stack needed): the
 * runtime's shutdown, the run budget, the isolate's wall clock and the lease, in that order.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../shared/platform/config.ts";
import { mayStartCall } from "../shared/refresh/may_start_call.ts";

const config = loadConfig({ MP_HTTP_TIMEOUT_MS: "1000", DB_TIMEOUT_MS: "500" });
const bootedAt = 1_000_000;
const fresh = {
  now: bootedAt + 1_000,
  budgetEnd: bootedAt + 100_000,
  leaseEnd: bootedAt + 300_000,
  bootedAt,
};

Deno.test("mayStartCall: a fresh isolate inside budget and lease may call", () => {
  assert.equal(mayStartCall(config, fresh), undefined);
});

Deno.test("mayStartCall: after beforeunload no new call starts, whatever time is left", () => {
  assert.equal(mayStartCall(config, { ...fresh, unload: "WallClockTime" }), "shutting_down");
});

Deno.test("mayStartCall: a spent run budget stops new calls", () => {
  assert.equal(mayStartCall(config, { ...fresh, now: fresh.budgetEnd }), "time_budget");
});

Deno.test("mayStartCall: no call starts unless it and its save end before the wall clock", () => {
  // The call (1 s), three save and three escrow attempts at 0.5 s with their pauses (0.2 s and
  // 0.8 s each: 2 s), then the run's three closing statements at 0.5 s: 7.5 s before the
  // free plan's 150 s wall clock.
  const last = bootedAt + 150_000 - 7_500;
  const late = { ...fresh, budgetEnd: bootedAt + 10 * config.wallClockMs };
  assert.equal(mayStartCall(config, { ...late, now: last - 1 }), undefined);
  assert.equal(mayStartCall(config, { ...late, now: last }), "wall_clock");
  // With no wall clock (a self-hosted `deno serve`) only the budget and the lease count.
  const unbounded = { ...config, wallClockMs: 0 };
  assert.equal(mayStartCall(unbounded, { ...late, now: last + 60_000 }), undefined);
});

Deno.test("mayStartCall: a lease too short for the call and its save stops it", () => {
  const now = fresh.now;
  // The call and its save or escrow (6 s, as above) and 5 s of slack.
  const needed = 11_000;
  assert.equal(mayStartCall(config, { ...fresh, leaseEnd: now + needed }), undefined);
  assert.equal(mayStartCall(config, { ...fresh, leaseEnd: now + needed - 1 }), "lease_too_short");
});

Deno.test("loadConfig: EDGE_WALL_CLOCK_MS defaults to the free plan's 150 s and is validated", () => {
  assert.equal(loadConfig({}).wallClockMs, 150_000);
  assert.equal(loadConfig({ EDGE_WALL_CLOCK_MS: "400000" }).wallClockMs, 400_000);
  const bad = loadConfig({ EDGE_WALL_CLOCK_MS: "soon" });
  assert.ok(bad.problems.has("EDGE_WALL_CLOCK_MS"));
});
