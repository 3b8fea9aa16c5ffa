/**
 * The leak scan `deno task test` ends with (docs/invariants.md, invariant 5): proof that it would catch
 * a secret, and that the secrets it looks for include what the sandbox issued to the tests.
 * Nothing here prints a secret: the run's own scan would fail if it did.
 */
import assert from "node:assert/strict";
import { findLeaks, knownSecrets } from "../local/leaks.ts";
import { sandbox, stackLog } from "./_stack.ts";

Deno.test("findLeaks catches a token in a log sample and passes a clean one", () => {
  const token = `APP_USR-${crypto.randomUUID()}-1234567890`;
  const key = "k3y/with+base64=chars-that-are-long";
  const other = `TG-${crypto.randomUUID()}`;
  const secrets = [token, key, other, "short"];
  const clean = [
    '{"level":"info","msg":"Step 7.1: MP credentials synced to Backend DB","account_id":"a"}',
    '{"level":"warn","msg":"Fast-path miss","access_token":"[redacted]"}',
  ].join("\n");
  assert.deepEqual(findLeaks(clean, secrets), []);

  const leaky = `${clean}\n{"level":"error","msg":"Unhandled error","error":"bad ${token}"}`;
  assert.equal(findLeaks(leaky, secrets).length, 1);
  assert.ok(findLeaks(leaky, secrets)[0] === token, "the token is the one reported");

  const encoded = `GET /cb?key=${encodeURIComponent(key)}`;
  assert.equal(findLeaks(encoded, secrets).length, 1, "a URL-encoded secret is caught");
  assert.ok(findLeaks(encoded, secrets)[0] === key);

  assert.deepEqual(findLeaks("short short short", secrets), [], "short strings are not looked for");
});

Deno.test("knownSecrets covers the sandbox's tokens and the stack's keys; this run's log has none", async () => {
  const env = Deno.env.toObject();
  const [grant] = await sandbox.grants(1);
  const secrets = await knownSecrets(env);
  for (
    const [what, s] of [
      ["an issued access token", grant.access_token],
      ["an issued refresh token", grant.refresh_token],
      ["the secret key", env.SECRET_KEY],
      ["the service role key", env.SERVICE_ROLE_KEY],
      ["the MP client secret", env.MP_CLIENT_SECRET],
      ["the webhook secret", env.MP_WEBHOOK_SECRET],
      ["the token key", env.MP_TOKEN_KEYS.split(",")[0].split(":")[1]],
    ]
  ) {
    assert.ok(secrets.includes(s), `the scan looks for ${what}`);
  }
  const log = await stackLog();
  assert.equal(findLeaks(log, secrets).length, 0, "the stack log so far leaks nothing");
  const withLeak = `${log}\n{"level":"error","msg":"oops","detail":"${grant.refresh_token}"}\n`;
  assert.equal(findLeaks(withLeak, secrets).length, 1, "a refresh token in the log is caught");
});
