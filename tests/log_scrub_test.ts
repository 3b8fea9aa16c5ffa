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
      nested: { code_verifier: "abc", account_id: "a1" },
    });
  } finally {
    console.log = original;
  }
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]);
  assert.equal(line.access_token, "[redacted]");
  assert.equal(line.Refresh_Token, "[redacted]");
  assert.equal(line.nested.code_verifier, "[redacted]");
  assert.equal(line.nested.account_id, "a1");
  assert.equal(line.level, "info");
  assert.equal(line.function, "t");
});

Deno.test("logger: secrets go by their known names and patterns; ordinary codes and keys of other kinds stay", () => {
  const lines: string[] = [];
  const original = console.log;
  console.log = (line: string) => lines.push(line);
  try {
    createLogger().info("refused", {
      code: "invalid_grant",
      error_code: "mp_not_connected",
      client_secret: "plain",
      apikey: "plain",
      authorization_code: "plain",
      webhook_secret: "plain",
      mp_access_token: "plain",
      key_id: "k1",
      reason: "a code TG-65f1e2d3c4b5a6-123456 came back",
      oauth: { code: "TG-65f1e2d3c4b5a6-999999" },
    });
  } finally {
    console.log = original;
  }
  const line = JSON.parse(lines[0]);
  for (
    const name of [
      "client_secret",
      "apikey",
      "authorization_code",
      "webhook_secret",
      "mp_access_token",
    ]
  ) {
    assert.equal(line[name], "[redacted]", name);
  }
  assert.equal(line.code, "invalid_grant", "an ordinary code is kept");
  assert.equal(line.error_code, "mp_not_connected");
  assert.equal(line.key_id, "k1");
  assert.equal(line.reason, "a code [redacted] came back");
  assert.equal(line.oauth.code, "[redacted]", "a code's value is caught by its pattern");
  assert.doesNotMatch(lines[0], /TG-65f1/);
});

Deno.test("logger: an error keeps its SQLSTATE and its cause, scrubbed", () => {
  const lines: string[] = [];
  const original = console.error;
  console.error = (line: string) => lines.push(line);
  try {
    const pg = Object.assign(new Error("terminating connection due to administrator command"), {
      code: "57P01",
    });
    const err = new Error("save failed for postgres://u:pw@db:6543/x", { cause: pg });
    createLogger().error("Could not save", { error: err });
  } finally {
    console.error = original;
  }
  const line = JSON.parse(lines[0]);
  assert.equal(line.error.message, "save failed for [redacted]");
  assert.equal(line.error.cause.sqlstate, "57P01");
  assert.equal(line.error.cause.message, "terminating connection due to administrator command");
  assert.doesNotMatch(lines[0], /pw@/);
});
