/** The isolate-wide 429 pause: when the next MercadoPago call may start (no stack needed). */
import assert from "node:assert/strict";
import {
  mpPausedUntil,
  nextCallStart,
  pauseAfterRateLimit,
} from "../shared/refresh/rate_limit_pause.ts";

Deno.test("nextCallStart: a 429 pauses calls for its Retry-After", () => {
  assert.equal(nextCallStart(0, 1_000, 30_000), 31_000);
});

Deno.test("nextCallStart: without Retry-After the pause is one second", () => {
  assert.equal(nextCallStart(0, 1_000), 2_000);
});

Deno.test("nextCallStart: a shorter later 429 never shortens a longer pause", () => {
  assert.equal(nextCallStart(50_000, 2_000, 1_000), 50_000);
  assert.equal(nextCallStart(50_000, 2_000, 60_000), 62_000);
});

Deno.test("pauseAfterRateLimit: the isolate's pause only grows", () => {
  const now = Date.now() + 10_000_000;
  pauseAfterRateLimit(now, 5_000);
  assert.equal(mpPausedUntil(), now + 5_000);
  pauseAfterRateLimit(now, 1_000);
  assert.equal(mpPausedUntil(), now + 5_000);
});
