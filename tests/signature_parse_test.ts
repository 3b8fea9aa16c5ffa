/** Strict parsing of MercadoPago's `x-signature` header (no stack needed; docs/contract.md). */
import assert from "node:assert/strict";
import { parseSignature, signedAtMs } from "../shared/mercadopago/signature.ts";

const HEX = "a".repeat(32) + "0123456789abcdef".repeat(2);

Deno.test("parseSignature: ts=<digits>,v1=<64 lowercase hex> in either order", () => {
  assert.deepEqual(parseSignature(`ts=1700000000,v1=${HEX}`), { ts: "1700000000", v1: HEX });
  assert.deepEqual(parseSignature(`v1=${HEX},ts=1700000000`), { ts: "1700000000", v1: HEX });
});

Deno.test("parseSignature: every variation of the strict shape is refused", () => {
  const refused = [
    null,
    "",
    `ts=1700000000`,
    `v1=${HEX}`,
    `ts=1700000000,v1=${HEX.toUpperCase()}`,
    `ts=1700000000,v1=${HEX.slice(1)}`,
    `ts=1700000000,v1=${HEX}0`,
    `ts=17000000x0,v1=${HEX}`,
    `ts=,v1=${HEX}`,
    `ts=1700000000, v1=${HEX}`,
    `ts=1700000000,v1=${HEX},`,
    `ts=1700000000,v1=${HEX},v2=${HEX}`,
    `ts=1,ts=2`,
    `v1=${HEX},v1=${HEX}`,
    `ts=1700000000;v1=${HEX}`,
    `TS=1700000000,v1=${HEX}`,
    `ts=12345678901234567,v1=${HEX}`,
    `ts=1700000000,v1=${HEX}` + " ".repeat(40),
  ];
  for (const header of refused) assert.equal(parseSignature(header), undefined, String(header));
});

Deno.test("signedAtMs: seconds and milliseconds both read as epoch milliseconds", () => {
  assert.equal(signedAtMs("1700000000"), 1_700_000_000_000);
  assert.equal(signedAtMs("1700000000123"), 1_700_000_000_123);
  assert.equal(signedAtMs("17x"), undefined);
});
