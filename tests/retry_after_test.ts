/** The MercadoPago client's reading of a 429's `Retry-After` header (no stack needed). */
import assert from "node:assert/strict";
import { retryAfterMs } from "../shared/mercadopago/api.ts";

Deno.test("retryAfterMs: seconds become milliseconds", () => {
  assert.equal(retryAfterMs("30"), 30_000);
  assert.equal(retryAfterMs("0"), 0);
  assert.equal(retryAfterMs("1.5"), 1_500);
});

Deno.test("retryAfterMs: an HTTP date is counted from now, never negative", () => {
  const now = Date.parse("Mon, 30 Nov 2026 02:00:00 GMT");
  assert.equal(retryAfterMs("Mon, 30 Nov 2026 02:00:45 GMT", now), 45_000);
  assert.equal(retryAfterMs("Mon, 30 Nov 2026 01:59:00 GMT", now), 0);
  assert.equal(retryAfterMs("-5", now), 0);
});

Deno.test("retryAfterMs: absent or unreadable headers give no wait", () => {
  assert.equal(retryAfterMs(null), undefined);
  assert.equal(retryAfterMs(""), undefined);
  assert.equal(retryAfterMs("soon"), undefined);
});
