// deno-lint-ignore-file no-explicit-any
/**
 * mp-oauth-start and mp-oauth-callback with PKCE off (`MP_OAUTH_PKCE=false`, an application
 * whose MercadoPago setting has no PKCE): each runs alone under `deno serve` with that
 * environment. The authorization URL carries no `code_challenge`, no verifier is stored, and
 * the callback still connects (MercadoPago checks PKCE only when a challenge was sent).
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  closeDbs,
  functionEnv,
  newAccount,
  newClient,
  stack,
} from "./_stack.ts";
import { serveFunction } from "./_serve.ts";

Deno.test("mp-oauth-start with PKCE off: no code_challenge in the URL, and the callback still connects", async () => {
  const env = functionEnv({ MP_OAUTH_PKCE: "false" });
  const [start, callback] = await Promise.all([
    serveFunction("mp-oauth-start", 40, env),
    serveFunction("mp-oauth-callback", 41, env),
  ]);
  try {
    const clientId = await newClient();
    const accountId = await newAccount({ clientId });
    const res = await fetch(start.url, {
      method: "POST",
      headers: { apikey: stack.secretKey, "content-type": "application/json" },
      body: JSON.stringify({ account_id: accountId }),
    });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    const url = new URL(body.url);
    const q = url.searchParams;
    assert.equal(url.origin + url.pathname, `${stack.env("MP_AUTH_URL")}/authorization`);
    assert.deepEqual([...q.keys()].sort(), [
      "client_id",
      "platform_id",
      "redirect_uri",
      "response_type",
      "state",
    ], "no code_challenge, no code_challenge_method");
    assert.equal(q.get("client_id"), stack.env("MP_CLIENT_ID"));
    assert.equal(q.get("response_type"), "code");
    assert.equal(q.get("platform_id"), "mp");
    assert.equal(q.get("redirect_uri"), stack.env("MP_REDIRECT_URI"));
    const [state] = await adminDb()`select code_verifier_encrypted from mp_oauth_states
      where account_id = ${accountId}`;
    assert.equal(state.code_verifier_encrypted, null, "no verifier is stored");

    // The sandbox authorizes (no challenge was sent, so it checks none) and redirects back.
    const authorized = await fetch(url, { redirect: "manual" });
    await authorized.body?.cancel();
    assert.equal(authorized.status, 302);
    const back = new URL(authorized.headers.get("location")!);
    assert.ok(back.searchParams.get("code"), back.search.replace(/code=[^&]*/, "code=…"));
    const landed = await fetch(`${callback.url}/${back.search}`, { redirect: "manual" });
    await landed.body?.cancel();
    assert.equal(landed.status, 302);
    const location = new URL(landed.headers.get("location")!);
    assert.equal(location.origin + location.pathname, stack.appReturnUrl);
    assert.equal(location.searchParams.get("mp"), "connected", location.search);
    assert.equal(location.searchParams.get("account_id"), accountId);

    const [row]: any[] = await adminDb()`select mp_connected, mp_token_version,
      mp_access_token_encrypted is not null as has_token from nv_accounts where id = ${accountId}`;
    assert.deepEqual({ ...row }, { mp_connected: true, mp_token_version: 1, has_token: true });
    const [cache]: any[] = await backendDb()`select mp_token_version,
      mp_access_token is not null as has_token from clients where id = ${clientId}`;
    assert.deepEqual({ ...cache }, { mp_token_version: 1, has_token: true }, "synced to the cache");
  } finally {
    await Promise.all([start.stop(), callback.stop()]);
    await closeDbs();
  }
});
