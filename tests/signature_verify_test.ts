/**
 * Verifying MercadoPago's webhook signature (no stack needed; docs/contract.md, mp-webhook):
 * `x-request-id` required, `ts` within 5 minutes either way, every byte of the HMAC compared —
 * so that no variation of a signed delivery, and no delivery signed without its request id,
 * reads as a valid one (docs/invariants.md, invariant 8).
 */
import assert from "node:assert/strict";
import {
  signatureManifest,
  signManifest,
  verifySignature,
} from "../shared/mercadopago/signature.ts";

const SECRET = "webhook-secret-for-tests";
const NOW = 1_800_000_000_000;

async function header(
  parts: { dataId?: string | null; requestId?: string | null; ts: string },
): Promise<string> {
  return `ts=${parts.ts},v1=${await signManifest(SECRET, signatureManifest(parts))}`;
}

/** `hex` with the byte at `index` changed. */
function flipByte(hex: string, index: number): string {
  const byte = parseInt(hex.slice(index * 2, index * 2 + 2), 16) ^ 0x01;
  return hex.slice(0, index * 2) + byte.toString(16).padStart(2, "0") + hex.slice(index * 2 + 2);
}

Deno.test("verifySignature: a delivery signed over data.id, x-request-id and ts is accepted", async () => {
  const ts = String(NOW / 1000);
  const h = await header({ dataId: "123", requestId: "req-1", ts });
  assert.deepEqual(
    await verifySignature(SECRET, { header: h, requestId: "req-1", dataId: "123" }, NOW),
    { ok: true, signedAtMs: NOW },
  );
});

Deno.test("verifySignature: x-request-id is required — a delivery signed and sent without it is refused", async () => {
  const ts = String(NOW / 1000);
  // Signed as MercadoPago would sign a notification without a request id (the part left out).
  const h = await header({ dataId: "123", requestId: null, ts });
  assert.deepEqual(
    await verifySignature(SECRET, { header: h, requestId: null, dataId: "123" }, NOW),
    { ok: false, reason: "malformed" },
  );
  const noData = await header({ dataId: null, requestId: null, ts });
  assert.deepEqual(
    await verifySignature(SECRET, { header: noData, requestId: null, dataId: null }, NOW),
    { ok: false, reason: "malformed" },
  );
});

Deno.test("verifySignature: ts within 5 minutes either way; past or future beyond it is stale", async () => {
  const at = async (offsetMs: number) => {
    const ts = String((NOW + offsetMs) / 1000);
    const h = await header({ dataId: "123", requestId: "req-1", ts });
    return await verifySignature(SECRET, { header: h, requestId: "req-1", dataId: "123" }, NOW);
  };
  const fiveMinutes = 5 * 60 * 1000;
  assert.equal((await at(-fiveMinutes)).ok, true, "5 minutes old");
  assert.equal((await at(fiveMinutes)).ok, true, "5 minutes ahead");
  assert.deepEqual(await at(-fiveMinutes - 1000), { ok: false, reason: "stale" });
  assert.deepEqual(await at(fiveMinutes + 1000), { ok: false, reason: "stale" }, "from the future");
  assert.deepEqual(await at(24 * 60 * 60 * 1000), { ok: false, reason: "stale" }, "a day ahead");
});

Deno.test("verifySignature: a change in any byte of v1 — first, middle or last — is a mismatch", async () => {
  const ts = String(NOW / 1000);
  const v1 = await signManifest(SECRET, signatureManifest({ dataId: "123", requestId: "r", ts }));
  for (const index of [0, 15, 31]) {
    const h = `ts=${ts},v1=${flipByte(v1, index)}`;
    assert.deepEqual(
      await verifySignature(SECRET, { header: h, requestId: "r", dataId: "123" }, NOW),
      { ok: false, reason: "mismatch" },
      `byte ${index}`,
    );
  }
  // Another secret, the same text: a mismatch too.
  const other = `ts=${ts},v1=${await signManifest(
    "another-secret",
    signatureManifest({ dataId: "123", requestId: "r", ts }),
  )}`;
  assert.deepEqual(
    await verifySignature(SECRET, { header: other, requestId: "r", dataId: "123" }, NOW),
    { ok: false, reason: "mismatch" },
  );
});
