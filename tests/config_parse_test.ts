/** `loadConfig`: parsing and validation of the functions' environment (no stack needed). */
import assert from "node:assert/strict";
import {
  loadConfig,
  MIN_KEY_LENGTH,
  MisconfiguredError,
  requireConfig,
} from "../shared/platform/config.ts";

Deno.test("loadConfig: a 1-character SUPABASE_SERVICE_ROLE_KEY is a problem, not a key", () => {
  const config = loadConfig({ SUPABASE_SERVICE_ROLE_KEY: "x" });
  assert.match(config.problems.get("SUPABASE_SERVICE_ROLE_KEY") ?? "", /shorter than 16/);
  assert.equal(config.serverKeys, undefined);
});

Deno.test("loadConfig: a long enough service-role key and secret keys are all accepted", () => {
  const role = "r".repeat(MIN_KEY_LENGTH);
  const secret = "sb_secret_" + "s".repeat(MIN_KEY_LENGTH);
  const config = loadConfig({
    SUPABASE_SERVICE_ROLE_KEY: role,
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: secret }),
  });
  assert.equal(config.problems.size, 0);
  assert.deepEqual(config.serverKeys, [role, secret]);
});

Deno.test("loadConfig: SUPABASE_SECRET_KEYS must be a JSON object of long keys", () => {
  for (const bad of ["[]", "null", "{", JSON.stringify({ a: "short" }), '{"a":1}']) {
    const config = loadConfig({ SUPABASE_SECRET_KEYS: bad });
    assert.ok(config.problems.has("SUPABASE_SECRET_KEYS"), bad);
  }
});

Deno.test("loadConfig: EDGE_WALL_CLOCK_MS defaults to 150 s, takes 0 and refuses junk", () => {
  assert.equal(loadConfig({}).wallClockMs, 150_000);
  assert.equal(loadConfig({ EDGE_WALL_CLOCK_MS: "400000" }).wallClockMs, 400_000);
  assert.equal(loadConfig({ EDGE_WALL_CLOCK_MS: "0" }).wallClockMs, 0);
  for (const bad of ["-1", "1.5", "abc", "3600001"]) {
    const config = loadConfig({ EDGE_WALL_CLOCK_MS: bad });
    assert.ok(config.problems.has("EDGE_WALL_CLOCK_MS"), bad);
  }
});

Deno.test("loadConfig: defaults and malformed URLs and booleans", () => {
  const config = loadConfig({ ADMIN_DB_URL: "not a url", MP_OAUTH_PKCE: "yes" });
  assert.equal(config.problems.get("ADMIN_DB_URL"), "not a URL");
  assert.ok(config.problems.has("MP_OAUTH_PKCE"));
  assert.equal(config.mpApiUrl, "https://api.mercadopago.com");
  assert.equal(config.refreshConcurrency, 8);
});

Deno.test("loadConfig: the injected SUPABASE_DB_URL stands in for BACKEND_DB_URL", () => {
  const url = "postgres://postgres@127.0.0.1:6543/postgres";
  assert.equal(loadConfig({ SUPABASE_DB_URL: url }).backendDbUrl, url);
});

Deno.test("a misconfiguration reads as plain words, `VARIABLE: reason`, never with the value", () => {
  const short = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const ring = loadConfig({ MP_TOKEN_KEYS: `k1:${btoa("k".repeat(32))},k2:${short}` });
  assert.throws(() => requireConfig(ring, ["tokenKeys"]), (err: Error) => {
    assert.ok(err instanceof MisconfiguredError);
    assert.equal(err.message, "MP_TOKEN_KEYS: key k2 is not 32 bytes");
    assert.ok(!err.message.includes(short));
    return true;
  });
  assert.throws(() => requireConfig(loadConfig({}), ["tokenKeys"]), {
    message: "MP_TOKEN_KEYS: not set",
  });
  assert.throws(() => requireConfig(loadConfig({ MP_OAUTH_PKCE: "maybe" }), ["mpClientId"]), {
    message: "MP_OAUTH_PKCE: neither true nor false",
  });
  const webhook = loadConfig({ PLATFORM_WEBHOOK_URL: "https://platform.example/events" });
  assert.equal(
    webhook.problems.get("PLATFORM_WEBHOOK_SECRETS"),
    "not set, while PLATFORM_WEBHOOK_URL is",
  );
});
