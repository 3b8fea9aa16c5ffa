/** The log scrubber and the JSON logger's redaction of secret field names (no stack needed). */
import assert from "node:assert/strict";
import { createLogger, scrub } from "../shared/platform/log.ts";

Deno.test("scrub: MercadoPago APP_USR- tokens are redacted, the text around them kept", () => {
  const out = scrub("token APP_USR-1234567890-abcdef-XYZ was refused");
  assert.equal(out, "token [redacted] was refused");
});

Deno.test("scrub: refresh tokens, secret keys, ciphertexts, JWTs and database URLs go", () => {
  const samples = [
    "TG-65f1e2d3c4b5a6-123456",
    "sb_secret_abcDEF123_-xyz",
    "v1:k1:QUJDREVGR0hJSktMTU5PUFFSU1RVVg==",
    "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZSJ9.c2lnbmF0dXJl",
    "postgres://postgres:pw@db.example:6543/postgres?sslmode=require",
    "TEST-1234567890123456-abcdef",
  ];
  for (const secret of samples) {
    const out = scrub(`before ${secret} after`);
    assert.equal(out.includes(secret), false, secret);
    assert.match(out, /^before \[redacted\] after$/);
  }
});

Deno.test("scrub: ordinary text and ids are left alone", () => {
  const text = "account 3f1c2a9e-1111-4222-8333-944455556666 synced, version 7";
  assert.equal(scrub(text), text);
});

Deno.test("logger: a field named access_token (any case) is redacted whatever its value", () => {
  const lines: string[] = [];
  const original = console.log;
  console.log = (line: string) => lines.push(line);
  try {
    createLogger({ function: "t" }).info("hello", {
      access_token: "plain-looking-value",
      Refresh_Token: "another",
      nested: { code: "abc", account_id: "a1" },
    });
  } finally {
    console.log = original;
  }
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]);
  assert.equal(line.access_token, "[redacted]");
  assert.equal(line.Refresh_Token, "[redacted]");
  assert.equal(line.nested.code, "[redacted]");
  assert.equal(line.nested.account_id, "a1");
  assert.equal(line.level, "info");
  assert.equal(line.function, "t");
});
