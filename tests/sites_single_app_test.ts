// deno-lint-ignore-file no-explicit-any
/**
 * Applications and sites on the single-app test stack (docs/contract.md, "Applications and
 * sites"): the single app serves site MLA (`MP_SITE_ID` unset); a connect writes the site in
 * both databases and its event; mp-oauth-start refuses a site without an application here;
 * mp-webhook refuses an `app` it has no application for, storing nothing; an account connected
 * before sites is served by the default application and then given its site by mp-refresh;
 * mp-health's `sites`; and a malformed `MP_APPS` is 500 `misconfigured` naming the site and the
 * field, never the secret.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  eventually,
  functionEnv,
  newAccount,
  newClient,
  pauseJobsDuringFile,
  sandbox,
  stack,
} from "./_stack.ts";
import { serveFunction } from "./_serve.ts";
import { signatureManifest, signManifest } from "../shared/mercadopago/signature.ts";

pauseJobsDuringFile();

/** mp-oauth-start → the sandbox's authorization → mp-oauth-callback; the browser's last stop. */
async function connect(accountId: string, body: Record<string, unknown> = {}): Promise<URL> {
  const started = await call("mp-oauth-start", { account_id: accountId, ...body });
  assert.equal(started.status, 200, JSON.stringify(started.body));
  const auth = await fetch(started.body.url, { redirect: "manual" });
  await auth.body?.cancel();
  assert.equal(auth.status, 302);
  const back = await fetch(auth.headers.get("location")!, { redirect: "manual" });
  await back.body?.cancel();
  assert.equal(back.status, 302);
  return new URL(back.headers.get("location")!);
}

Deno.test("the single app is site MLA: a connect writes the site in the master, the cache, get-mp-config and the event", async () => {
  const clientId = await newClient();
  const accountId = await newAccount({ clientId });
  const back = await connect(accountId);
  assert.equal(back.searchParams.get("mp"), "connected", back.href);
  const [state] =
    await adminDb()`select site_id from mp_oauth_states where account_id = ${accountId}`;
  assert.equal(state.site_id, "MLA", "the state remembers the site");
  const [row] = await adminDb()`select mp_site_id from nv_accounts where id = ${accountId}`;
  assert.equal(row.mp_site_id, "MLA");
  const [cache] = await backendDb()`select mp_site_id from clients where id = ${clientId}`;
  assert.equal(cache.mp_site_id, "MLA");
  const config = await call("get-mp-config", { client_id: clientId });
  assert.equal(config.status, 200);
  assert.equal(config.body.source, "fast_path");
  assert.equal(config.body.site_id, "MLA");
  const [event] = await adminDb()`select payload from mp_event_outbox
    where account_id = ${accountId} and type = 'mp.connection.connected'`;
  assert.equal(event.payload.data.site_id, "MLA");
  // The fallback answers the site too (the cache emptied, read from the master).
  await backendDb()`update clients set mp_access_token = null where id = ${clientId}`;
  const fallback = await call("get-mp-config", { client_id: clientId });
  assert.equal(fallback.body.source, "fallback");
  assert.equal(fallback.body.site_id, "MLA");
});

Deno.test("mp-oauth-start: a site without an application here is 400, an unknown one too; MLA is the single app", async () => {
  const accountId = await newAccount();
  for (const site of ["MLB", "MPE"]) {
    const res = await call("mp-oauth-start", { account_id: accountId, site });
    assert.equal(res.status, 400, site);
    assert.equal(res.body.error.code, "invalid_request");
    assert.match(res.body.error.message, /^site:/);
  }
  for (const site of ["mla", "XYZ", 1, null]) {
    const res = await call("mp-oauth-start", { account_id: accountId, site });
    assert.equal(res.status, 400, String(site));
    assert.equal(res.body.error.code, "invalid_request");
  }
  const states = await adminDb()`select 1 from mp_oauth_states where account_id = ${accountId}`;
  assert.equal(states.length, 0, "a refused start stores no state");
  const ok = await call("mp-oauth-start", { account_id: accountId, site: "MLA" });
  assert.equal(ok.status, 200);
  assert.equal(new URL(ok.body.url).searchParams.get("client_id"), stack.env("MP_CLIENT_ID"));
  // An unknown account is still 404, with or without a site.
  for (const body of [{}, { site: "MLA" }]) {
    const none = await call("mp-oauth-start", { account_id: crypto.randomUUID(), ...body });
    assert.equal(none.status, 404);
    assert.equal(none.body.error.code, "account_not_found");
  }
});

/** A signed deauthorization of `userId`, sent with `query` (the stack's webhook secret). */
async function deauthorize(userId: number, query: string) {
  const requestId = crypto.randomUUID();
  const ts = String(Math.floor(Date.now() / 1000));
  const dataId = String(userId);
  const v1 = await signManifest(
    stack.webhookSecret,
    signatureManifest({ dataId, requestId, ts }),
  );
  const res = await call("mp-webhook", {
    action: "application.deauthorized",
    type: "mp-connect",
    data: { id: dataId },
    user_id: userId,
  }, {
    key: null,
    headers: { "x-request-id": requestId, "x-signature": `ts=${ts},v1=${v1}` },
    query: `${query}&data.id=${dataId}&type=mp-connect`,
  });
  return { res, requestId };
}

Deno.test("mp-webhook?app=: an application this configuration lacks is 401 and stores nothing; ?app=MLA is the single app", async () => {
  const seller = 700_000_000 + Math.floor(Math.random() * 200_000_000);
  const [grant] = (await sandbox.post("grants", { count: 1, user_id: seller })).grants;
  const accountId = await newAccount({ grant });
  for (const query of ["?app=MLB", "?app=mla", "?app=MLA&app=MLA"]) {
    const { res, requestId } = await deauthorize(seller, query);
    assert.equal(res.status, 401, query);
    assert.equal(res.body.error.code, "unauthorized");
    const rows = await adminDb()`select 1 from mp_webhook_deliveries
      where request_id = ${requestId}`;
    assert.equal(rows.length, 0, `${query}: nothing stored`);
  }
  const [row] = await adminDb()`select mp_connected from nv_accounts where id = ${accountId}`;
  assert.equal(row.mp_connected, true);
  // The token still works at MercadoPago: the claim is not confirmed, through the MLA app.
  const { res } = await deauthorize(seller, "?app=MLA");
  assert.equal(res.status, 200);
  assert.equal(res.body.unconfirmed, 1);
  assert.equal(res.body.revoked, 0);
});

Deno.test("an account connected before sites is served by the default application, then mp-refresh gives it its site", async () => {
  const [grant] = (await sandbox.post("grants", { count: 1 })).grants;
  const clientId = await newClient();
  const accountId = await newAccount({ grant, clientId, expiresInDays: 10 });
  const [before] = await adminDb()`select mp_site_id from nv_accounts where id = ${accountId}`;
  assert.equal(before.mp_site_id, null);
  const res = await call("mp-refresh", { account_id: accountId });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.results, [{ account_id: accountId, status: "refreshed" }]);
  const synced = await call("get-mp-config", { client_id: clientId });
  assert.equal(synced.body.site_id, "MLA", "no site yet: the default one");
  // Each run gives up to 1,000 accounts without a site the default site: as many runs as that takes.
  await eventually(async () => {
    const [row] = await adminDb()`select mp_site_id from nv_accounts where id = ${accountId}`;
    if (row.mp_site_id) return row.mp_site_id === "MLA";
    await call("mp-refresh", { limit: 1, account_id: crypto.randomUUID() });
    return false;
  }, 120_000);
});

Deno.test("mp-health: the single app's site holds every account; the sites add up to the whole", async () => {
  const h = await call("mp-health");
  assert.ok(h.status === 200 || h.status === 503);
  assert.ok("MLA" in h.body.sites, JSON.stringify(Object.keys(h.body.sites)));
  const sum = (k: string) =>
    Object.values(h.body.sites as Record<string, any>).reduce((a, s) => a + s[k], 0);
  for (const k of ["accounts", "connected", "needs_reauth", "at_risk", "expiring_7d"]) {
    assert.equal(sum(k), h.body[k], k);
  }
  // Another site shows only when accounts are in it (the single app configures MLA alone).
  for (const [site, s] of Object.entries(h.body.sites as Record<string, any>)) {
    if (site !== "MLA") assert.ok(s.accounts > 0, site);
  }
});

Deno.test("a malformed MP_APPS: 500 misconfigured naming MP_APPS, the log names the site and field, never the secret", async () => {
  const secret = `sec-${crypto.randomUUID()}`;
  const apps = JSON.stringify({
    MLA: { client_id: "1", client_secret: secret, webhook_secrets: ["w"] },
    MLB: { client_id: "2", client_secret: "", webhook_secrets: [secret] },
  });
  const served = await serveFunction("mp-refresh", 70, functionEnv({ MP_APPS: apps }));
  let output = "";
  try {
    const res = await fetch(served.url, {
      method: "POST",
      headers: { apikey: stack.secretKey, "content-type": "application/json" },
      body: "{}",
    });
    const text = await res.text();
    assert.equal(res.status, 500);
    assert.equal(JSON.parse(text).error.code, "misconfigured");
    assert.match(JSON.parse(text).error.message, /MP_APPS/);
    assert.ok(!text.includes(secret));
  } finally {
    output = await served.stop();
  }
  const line = output.split("\n").find((l) => l.includes("Function misconfigured"));
  assert.ok(line, output.slice(-500));
  const parsed = JSON.parse(line);
  assert.equal(parsed.variable, "MP_APPS");
  assert.equal(parsed.reason, "MLB.client_secret is not a non-empty string");
  assert.ok(!output.includes(secret), "the secret is in no log line");
});
