/**
 * The pure decisions of `shared/refresh/outcome.ts` (invariant 3): what each refresh failure
 * means, when a refresh token may be sent, and the circuit breaker — over every outcome.
 */
import assert from "node:assert/strict";
import {
  breakerOpen,
  classifyRefreshFailure,
  maySendRefreshToken,
  unknownInARow,
} from "../shared/refresh/outcome.ts";
import type { MpFailure } from "../shared/mercadopago/api.ts";

Deno.test("classifyRefreshFailure: provably unprocessed → retry, may have been processed → unknown, invalid_grant → reauth", () => {
  const expected: Record<MpFailure, string> = {
    not_sent: "retry",
    rate_limited: "retry",
    rejected: "retry",
    invalid_grant: "reauth",
    timeout: "unknown",
    lost: "unknown",
    server_error: "unknown",
    bad_response: "unknown",
  };
  for (const [kind, verdict] of Object.entries(expected)) {
    assert.equal(classifyRefreshFailure(kind as MpFailure), verdict, kind);
  }
});

Deno.test("maySendRefreshToken: unsent → first; sent once → only the last resort within 7 days of expiry; more → never", () => {
  const now = Date.parse("2026-12-06T12:00:00Z");
  const inDays = (d: number) => new Date(now + d * 86_400_000);
  assert.equal(maySendRefreshToken(0, inDays(100), now), "first");
  assert.equal(maySendRefreshToken(0, null, now), "first");
  assert.equal(maySendRefreshToken(1, inDays(8), now), "never");
  assert.equal(maySendRefreshToken(1, inDays(6), now), "last_resort");
  // docs/contract.md "mp-refresh": the last resort when the served token expires within 7 days.
  assert.equal(maySendRefreshToken(1, inDays(7), now), "last_resort");
  assert.equal(maySendRefreshToken(1, new Date(now + 7 * 86_400_000 + 1), now), "never");
  assert.equal(maySendRefreshToken(1, inDays(-1), now), "last_resort", "already expired");
  assert.equal(maySendRefreshToken(1, null, now), "never", "no known expiry: no last resort");
  assert.equal(maySendRefreshToken(2, inDays(1), now), "never", "the last resort is single");
});

Deno.test("circuit breaker: unknown outcomes in a row open it at 3; any answer resets the count", () => {
  // docs/contract.md "mp-refresh": the breaker opens after 3 unknown outcomes in a row.
  let n = 0;
  for (let i = 0; i < 2; i++) n = unknownInARow(n, "unknown");
  assert.equal(n, 2);
  assert.equal(breakerOpen(n), false);
  assert.equal(unknownInARow(n, "tokens"), 0);
  assert.equal(unknownInARow(n, "retry"), 0);
  assert.equal(unknownInARow(n, "reauth"), 0);
  n = unknownInARow(n, "unknown");
  assert.equal(n, 3);
  assert.equal(breakerOpen(n), true);
});
