/**
 * The pure decisions of the persisted circuit breaker (`shared/refresh/app_breaker.ts`;
 * docs/contract.md, "Applications and sites"): the backoff of the n-th consecutive open (10
 * minutes, doubling, at most 2 hours), the schedule the database indexes, and what a run does
 * with a breaker read as it starts — and mp-health's `breaker_open_until` per site.
 */
import assert from "node:assert/strict";
import {
  breakerBackoffMs,
  breakerBackoffSchedule,
  breakerStance,
} from "../shared/refresh/app_breaker.ts";
import { deferralOf } from "../shared/refresh/outcome.ts";
import { withBreakers } from "../shared/operations/health.ts";
import { connectionTotals } from "../shared/store/account_status.ts";

const MINUTE = 60_000;

Deno.test("breakerBackoffMs: 10 minutes after the first open, doubling with each open in a row, at most 2 hours", () => {
  assert.equal(breakerBackoffMs(1), 10 * MINUTE);
  assert.equal(breakerBackoffMs(2), 20 * MINUTE);
  assert.equal(breakerBackoffMs(3), 40 * MINUTE);
  assert.equal(breakerBackoffMs(4), 80 * MINUTE);
  assert.equal(breakerBackoffMs(5), 120 * MINUTE, "160 minutes capped at 2 hours");
  assert.equal(breakerBackoffMs(6), 120 * MINUTE);
  assert.equal(breakerBackoffMs(50), 120 * MINUTE);
  assert.equal(breakerBackoffMs(0), 10 * MINUTE, "no open yet counts as the first");
});

Deno.test("breakerBackoffSchedule: the backoffs the database indexes by consecutive opens, the last one for every later open", () => {
  assert.deepEqual(breakerBackoffSchedule(), [
    10 * MINUTE,
    20 * MINUTE,
    40 * MINUTE,
    80 * MINUTE,
    120 * MINUTE,
  ]);
});

Deno.test("breakerStance: closed → call; open until later → open; the backoff over → this run may claim the trial", () => {
  const now = new Date("2026-12-08T10:00:00Z");
  assert.equal(breakerStance(null, now), "call");
  assert.equal(breakerStance(new Date("2026-12-08T10:00:01Z"), now), "open");
  assert.equal(breakerStance(new Date("2026-12-08T11:59:00Z"), now), "open");
  assert.equal(breakerStance(new Date("2026-12-08T10:00:00Z"), now), "trial", "at its end");
  assert.equal(breakerStance(new Date("2026-12-08T09:00:00Z"), now), "trial");
});

Deno.test("withBreakers: every site's figures with breaker_open_until (null: closed); an open breaker's site listed even without accounts", () => {
  const mla = connectionTotals({ connected: 2 }, 1);
  const sites = withBreakers({ MLA: mla, MLB: connectionTotals({}, 0) }, [
    { site_id: "MLB", open_until: new Date("2026-12-08T10:20:00Z") },
    { site_id: "MLM", open_until: new Date("2026-12-08T12:00:00Z") },
  ]);
  assert.deepEqual(Object.keys(sites), ["MLA", "MLB", "MLM"]);
  assert.deepEqual(sites.MLA, { ...mla, breaker_open_until: null });
  assert.equal(sites.MLB.breaker_open_until, "2026-12-08T10:20:00.000Z");
  assert.equal(sites.MLM.breaker_open_until, "2026-12-08T12:00:00.000Z");
  assert.equal(sites.MLM.accounts, 0);
  assert.equal(sites.MLA.connected, 2);
});

Deno.test("deferralOf: with several applications an account an open breaker spared waits until the breaker's backoff ends, at least 10 minutes", () => {
  const now = 1_000_000;
  assert.deepEqual(deferralOf("circuit_open", 2, 0, now, now + 40 * MINUTE), {
    error: "circuit_open",
    retryAfterMs: 40 * MINUTE,
  });
  assert.deepEqual(deferralOf("circuit_open", 2, 0, now, now + 20 * MINUTE - 500), {
    error: "circuit_open",
    retryAfterMs: 20 * MINUTE,
  }, "whole seconds");
  assert.deepEqual(deferralOf("circuit_open", 7, 0, now, now + MINUTE), {
    error: "circuit_open",
    retryAfterMs: 10 * MINUTE,
  }, "never less than one refresh interval");
  assert.deepEqual(deferralOf("circuit_open", 2, 0, now, now - MINUTE), {
    error: "circuit_open",
    retryAfterMs: 10 * MINUTE,
  });
  assert.equal(deferralOf("circuit_open", 1, 0, now, now + 40 * MINUTE), undefined, "one app");
});
