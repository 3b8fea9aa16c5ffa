/**
 * The pure decision "may this run start a MercadoPago call now" (no stack needed): the
 * runtime's shutdown, the run budget, the isolate's wall clock and the lease, in that order.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../shared/platform/config.ts";
import { finishNeededMs, leaseNeededMs, mayStartCall } from "../shared/refresh/may_start_call.ts";

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
  const reserve = finishNeededMs(config) + 3 * config.dbTimeoutMs;
  const last = bootedAt + config.wallClockMs - reserve;
  const late = { ...fresh, budgetEnd: bootedAt + 10 * config.wallClockMs };
  assert.equal(mayStartCall(config, { ...late, now: last - 1 }), undefined);
  assert.equal(mayStartCall(config, { ...late, now: last }), "wall_clock");
  // With no wall clock (a self-hosted `deno serve`) only the budget and the lease count.
  const unbounded = { ...config, wallClockMs: 0 };
  assert.equal(mayStartCall(unbounded, { ...late, now: last + 60_000 }), undefined);
});

Deno.test("mayStartCall: a lease too short for the call and its save stops it", () => {
  const now = fresh.now;
  const needed = leaseNeededMs(config);
  assert.equal(mayStartCall(config, { ...fresh, leaseEnd: now + needed }), undefined);
  assert.equal(mayStartCall(config, { ...fresh, leaseEnd: now + needed - 1 }), "lease_too_short");
});

Deno.test("loadConfig: EDGE_WALL_CLOCK_MS defaults to the free plan's 150 s and is validated", () => {
  assert.equal(loadConfig({}).wallClockMs, 150_000);
  assert.equal(loadConfig({ EDGE_WALL_CLOCK_MS: "400000" }).wallClockMs, 400_000);
  const bad = loadConfig({ EDGE_WALL_CLOCK_MS: "soon" });
  assert.ok(bad.problems.has("EDGE_WALL_CLOCK_MS"));
});
