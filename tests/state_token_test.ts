/**
 * The OAuth state and PKCE values (shared/oauth/state_token.ts; no stack needed;
 * docs/contract.md, mp-oauth-start): a state is 256 random bits, stored only as its SHA-256, and
 * the PKCE challenge is S256 (RFC 7636) — a state cannot be guessed (invariant 8: a request
 * without a live state writes at most one bounded row).
 */
import assert from "node:assert/strict";
import {
  hashState,
  isWellFormedState,
  pkceChallenge,
  randomToken,
} from "../shared/oauth/state_token.ts";

function base64urlBytes(text: string): number {
  const b64 = text.replaceAll("-", "+").replaceAll("_", "/");
  return atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)).length;
}

Deno.test("randomToken: 256 random bits (32 bytes, 43 base64url characters), never the same twice", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const t = randomToken();
    assert.match(t, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(base64urlBytes(t), 32);
    assert.ok(isWellFormedState(t));
    seen.add(t);
  }
  assert.equal(seen.size, 200);
});

Deno.test("hashState: the hex SHA-256 of the state; pkceChallenge: RFC 7636's S256 example", async () => {
  assert.equal(
    await hashState("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    await pkceChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
  );
});
