// deno-lint-ignore-file no-explicit-any
/**
 * Every country MercadoPago serves (docs/contract.md, "Applications and sites"), end to end on a
 * stack of two applications, MLA and MLB (`useMultiAppStack`): connects through each site's
 * application; a Brazilian seller on the Argentine application refused at the callback with
 * nothing of the account changed; refresh, probe, revoke and the deauthorization webhook each
 * through the account's own application; one site's MercadoPago failing while the other site's
 * due accounts are refreshed, its spared accounts waiting instead of taking the next runs'
 * claims; a notification verified with the second of an application's two secrets; 400 for a
 * site without an application. After every test the sandbox has seen no application's
 * credentials presented with another's token (`cross_app_calls` 0).
 */
import assert from "node:assert/strict";
import { eventually, type MultiAppStack, useMultiAppStack } from "./_stack.ts";
import { loadConfig } from "../shared/platform/config.ts";
import { createContext } from "../shared/platform/context.ts";
import { createLogger } from "../shared/platform/log.ts";
import { pgArray } from "../shared/platform/db.ts";
import { runRefresh } from "../shared/refresh/run.ts";
import { signatureManifest, signManifest } from "../shared/mercadopago/signature.ts";

const multi = useMultiAppStack(["MLA", "MLB"]);

/** The log of the runs made in this process. */
const quietLog = createLogger({ test: "sites" });

Deno.test.beforeAll(async () => {
  // Only the tests run this stack's functions: no scheduled run takes their accounts.
  await multi().backendDb()`update cron.job set active = false`;
});

/** Asserts that no request carried one application's credentials for another's token. */
async function noCrossAppCalls(m: MultiAppStack) {
  const stats = await m.sandbox.stats();
  assert.equal(stats.cross_app_calls, 0, "cross_app_calls");
  for (const app of Object.values(stats.apps)) assert.equal(app.cross_app_calls, 0, app.site_id);
}

/** The account's master row. */
async function row(m: MultiAppStack, id: string): Promise<any> {
  const [r] = await m.adminDb()`select * from nv_accounts where id = ${id}`;
  return r;
}

/**
 * mp-oauth-start with `body`, the sandbox's authorization (with `extra` in its query), then the
 * callback as a browser follows them: the authorization URL and where the browser lands.
 */
async function connect(
  m: MultiAppStack,
  accountId: string,
  body: Record<string, unknown> = {},
  extra: Record<string, string> = {},
): Promise<{ url: URL; back: URL }> {
  const started = await m.call("mp-oauth-start", { account_id: accountId, ...body });
  assert.equal(started.status, 200, JSON.stringify(started.body));
  const url = new URL(started.body.url);
  const target = new URL(url);
  for (const [k, v] of Object.entries(extra)) target.searchParams.set(k, v);
  const auth = await fetch(target, { redirect: "manual" });
  await auth.body?.cancel();
  assert.equal(auth.status, 302);
  const callback = await fetch(auth.headers.get("location")!, { redirect: "manual" });
  await callback.body?.cancel();
  assert.equal(callback.status, 302);
  return { url, back: new URL(callback.headers.get("location")!) };
}

/** A due account of `site` (a sandbox grant of that site's application), linked and cached. */
async function dueAccount(m: MultiAppStack, site: string | null, expiresInDays = 20) {
  const [grant] = await m.sandbox.grants(1, { clientId: m.clientId(site ?? "MLA") });
  const clientId = await m.newClient();
  const id = await m.newAccount({
    grant,
    clientId,
    expiresInDays,
    columns: site ? { mp_site_id: site } : {},
  });
  const linked = await m.call("provision-step-7-1", { account_id: id, client_id: clientId });
  assert.equal(linked.body.synced, true);
  return { id, clientId, grant, site };
}

/** Runs mp-refresh until it claims nothing (a clean slate for a test that counts claims). */
async function drain(m: MultiAppStack) {
  for (let i = 0; i < 20; i++) {
    if ((await m.call("mp-refresh", { limit: 500 })).body.claimed === 0) return;
  }
  throw new Error("due accounts never ran out");
}

Deno.test("connects through each site's application: its authorization host, client id and redirect URI; the site stored and answered", async () => {
  const m = multi();
  for (const site of ["MLA", "MLB"]) {
    const clientId = await m.newClient();
    const accountId = await m.newAccount({ clientId });
    const { url, back } = await connect(m, accountId, { site });
    const app = m.apps[site];
    assert.equal(url.origin + url.pathname, `${app.auth_url}/authorization`);
    assert.equal(url.searchParams.get("client_id"), app.client_id, site);
    assert.equal(url.searchParams.get("redirect_uri"), app.redirect_uri);
    assert.equal(url.searchParams.get("code_challenge_method"), "S256");
    assert.equal(back.searchParams.get("mp"), "connected", back.href);
    assert.equal((await row(m, accountId)).mp_site_id, site);
    const config = await m.call("get-mp-config", { client_id: clientId });
    assert.equal(config.status, 200);
    assert.equal(config.body.site_id, site);
    const [event] = await m.adminDb()`select payload from mp_event_outbox
      where account_id = ${accountId} and type = 'mp.connection.connected'`;
    assert.equal(event.payload.data.site_id, site);
    // A later connect without `site` goes through the account's own site's application.
    const again = await m.call("mp-oauth-start", { account_id: accountId });
    assert.equal(new URL(again.body.url).searchParams.get("client_id"), app.client_id);
  }
  const stats = await m.sandbox.stats();
  for (const site of ["MLA", "MLB"]) {
    assert.ok(stats.apps[m.clientId(site)].authorizations >= 1, `${site}: its app authorized`);
  }
  await noCrossAppCalls(m);
});

Deno.test("a site without an application in this configuration is 400; a webhook for it is 401", async () => {
  const m = multi();
  const accountId = await m.newAccount();
  const res = await m.call("mp-oauth-start", { account_id: accountId, site: "MLM" });
  assert.equal(res.status, 400);
  assert.equal(res.body.error.code, "invalid_request");
  const hook = await m.call("mp-webhook", { action: "x", data: { id: "1" } }, {
    key: null,
    query: "?app=MLM&data.id=1",
  });
  assert.equal(hook.status, 401);
  assert.equal(
    (await m.adminDb()`select 1 from mp_oauth_states where account_id = ${accountId}`).length,
    0,
  );
  await noCrossAppCalls(m);
});

Deno.test("a Brazilian seller on the Argentine application is refused at the callback: seller_site_mismatch, nothing of the account changed", async () => {
  const m = multi();
  // An account connected in Argentina, whose person tries a Brazilian seller through MLA's app.
  const clientId = await m.newClient();
  const accountId = await m.newAccount({ clientId });
  assert.equal(
    (await connect(m, accountId, { site: "MLA" })).back.searchParams.get("mp"),
    "connected",
  );
  const before = await row(m, accountId);
  const [{ n: eventsBefore }] = await m.adminDb()`select count(*)::int as n from mp_event_outbox
    where account_id = ${accountId}`;
  const cacheBefore = await m.backendDb()`select * from clients where id = ${clientId}`;
  const { back } = await connect(m, accountId, { site: "MLA", replace_seller: true }, {
    seller_site: "MLB",
  });
  assert.equal(back.searchParams.get("mp"), "error");
  assert.equal(back.searchParams.get("reason"), "seller_site_mismatch");
  assert.deepEqual(await row(m, accountId), before, "nothing of the account changed");
  assert.deepEqual(await m.backendDb()`select * from clients where id = ${clientId}`, cacheBefore);
  const [{ n: eventsAfter }] = await m.adminDb()`select count(*)::int as n from mp_event_outbox
    where account_id = ${accountId}`;
  assert.equal(eventsAfter, eventsBefore, "no event");
  const [audit] = await m.adminDb()`select detail from mp_credential_events
    where account_id = ${accountId} and event = 'connect_rejected' order by id desc limit 1`;
  assert.equal(audit.detail.reason, "seller_site_mismatch");
  assert.equal(audit.detail.site, "MLA");
  assert.equal(audit.detail.seller_site, "MLB");
  // The tokens MercadoPago issued for that seller are nowhere: not in the audit, the rows, the log.
  const issued = await m.sandbox.lastTokens(audit.detail.mp_user_id);
  assert.ok(issued);
  const everywhere = JSON.stringify(audit) + JSON.stringify(await row(m, accountId)) +
    (await m.log());
  assert.ok(!everywhere.includes(issued.access_token));
  assert.ok(!everywhere.includes(issued.refresh_token));
  // A never-connected account stays never connected.
  const fresh = await m.newAccount();
  const first = await connect(m, fresh, { site: "MLA" }, { seller_site: "MLB" });
  assert.equal(first.back.searchParams.get("reason"), "seller_site_mismatch");
  const untouched = await row(m, fresh);
  assert.equal(untouched.mp_connected, false);
  assert.equal(untouched.mp_site_id, null);
  assert.equal(untouched.mp_token_version, 0);
  await noCrossAppCalls(m);
});

Deno.test("refresh, probe, report and revoke each through the account's own application", async () => {
  const m = multi();
  const before = await m.sandbox.stats();
  const accounts = [
    await dueAccount(m, "MLA"),
    await dueAccount(m, "MLB"),
    await dueAccount(m, null), // connected before sites: the default site's (MLA's) application
  ];
  for (const a of accounts) {
    const res = await m.call("mp-refresh", { account_id: a.id });
    assert.deepEqual(res.body.results, [{ account_id: a.id, status: "refreshed" }], a.site ?? "");
    const config = await m.call("get-mp-config", { client_id: a.clientId });
    assert.equal(config.body.site_id, a.site ?? "MLA");
    assert.notEqual(config.body.access_token, a.grant.access_token, "a new token is served");
    const probe = await m.call("mp-probe", { account_id: a.id });
    assert.deepEqual(probe.body.results, [{ account_id: a.id, state: "connected" }]);
    const report = await m.call("get-mp-config", {
      client_id: a.clientId,
      rejected_token_version: config.body.token_version,
    });
    assert.equal(report.status, 200, "MercadoPago still accepts it: answered again");
  }
  const after = await m.sandbox.stats();
  const delta = (site: string, k: string) =>
    (after.apps[m.clientId(site)] as any)[k] - (before.apps[m.clientId(site)] as any)[k];
  assert.equal(delta("MLA", "refreshes"), 2, "MLA's app refreshed its two accounts");
  assert.equal(delta("MLB", "refreshes"), 1, "MLB's app refreshed its one");
  assert.equal(delta("MLA", "users_me_calls"), 4, "probe and report of MLA's two");
  assert.equal(delta("MLB", "users_me_calls"), 2);
  for (const a of accounts) {
    const res = await m.call("mp-revoke", { account_id: a.id });
    assert.equal(res.status, 200);
    assert.equal((await row(m, a.id)).mp_state, "revoked");
  }
  await noCrossAppCalls(m);
});

Deno.test("the deauthorization webhook of each application: ?app=<site>, signed with either of MLB's two secrets; the wrong app's secret is 401", async () => {
  const m = multi();
  const mlb = await dueAccount(m, "MLB", 100);
  const mla = await dueAccount(m, "MLA", 100);
  const seller = mlb.grant.user_id;
  /** A deauthorization notification of `userId`, signed with `secret`, to `?app=`. */
  const notify = async (userId: number, secret: string, app: string) => {
    const requestId = crypto.randomUUID();
    const ts = String(Math.floor(Date.now() / 1000));
    const dataId = String(userId);
    const v1 = await signManifest(secret, signatureManifest({ dataId, requestId, ts }));
    return await m.call("mp-webhook", {
      action: "application.deauthorized",
      type: "mp-connect",
      data: { id: dataId },
      user_id: userId,
    }, {
      key: null,
      headers: { "x-request-id": requestId, "x-signature": `ts=${ts},v1=${v1}` },
      query: `?app=${app}&data.id=${dataId}&type=mp-connect`,
    });
  };
  const [first, second] = m.apps.MLB.webhook_secrets;
  assert.ok(first && second && first !== second, "MLB's application has two webhook secrets");
  // MLB's secret under MLA's application: refused, nothing stored.
  const wrong = await notify(seller, second, "MLA");
  assert.equal(wrong.status, 401);
  // The second of MLB's secrets verifies it; the token still works: not confirmed, not revoked.
  const claim = await notify(seller, second, "MLB");
  assert.equal(claim.status, 200, JSON.stringify(claim.body));
  assert.equal(claim.body.unconfirmed, 1);
  assert.equal((await row(m, mlb.id)).mp_connected, true);
  // The seller removes MLB's application: the sandbox notifies, signed with its first secret.
  const removed = await m.sandbox.deauthorize(seller, {
    notifyUrl: `${m.functionsUrl}/mp-webhook`,
    clientId: m.clientId("MLB"),
  });
  assert.equal(removed.notified, 200);
  const revoked = await row(m, mlb.id);
  assert.equal(revoked.mp_state, "revoked");
  assert.equal(revoked.mp_state_reason, "mp_deauthorized");
  // An Argentine account of another seller is no concern of MLB's notification.
  const stray = await notify(mla.grant.user_id, first, "MLB");
  assert.equal(stray.status, 200);
  assert.equal(stray.body.revoked ?? 0, 0);
  assert.equal(stray.body.unconfirmed ?? 0, 0);
  assert.equal((await row(m, mla.id)).mp_connected, true);
  await noCrossAppCalls(m);
});

/** A run in this process against the multi-app stack, one MercadoPago call at a time per app. */
async function refreshRun(m: MultiAppStack, limit: number) {
  const ctx = createContext(loadConfig({ ...m.env, MP_REFRESH_CONCURRENCY: "1" }));
  try {
    return await runRefresh(ctx, quietLog, { limit });
  } finally {
    await ctx.close();
  }
}

Deno.test("one site's MercadoPago failing: the other site's due accounts are refreshed, in the same run and in the next ones", async () => {
  const m = multi();
  await drain(m);
  // Brazil's accounts are due first (20 days), Argentina's later (40 days).
  const brazil = [];
  for (let i = 0; i < 5; i++) brazil.push(await dueAccount(m, "MLB", 20));
  const argentina = [await dueAccount(m, "MLA", 40), await dueAccount(m, "MLA", 40)];
  const before = await m.sandbox.stats();
  await m.sandbox.faults("error_500", 1_000, m.clientId("MLB"));
  try {
    // The run claims Brazil's five (the earliest due): three unknown outcomes open MLB's
    // breaker, the other two are spared and wait.
    const first = await refreshRun(m, 5);
    const statuses = first.results.map((r) => `${r.status}:${r.error ?? ""}`).sort();
    assert.deepEqual(statuses, [
      "at_risk:server_error",
      "at_risk:server_error",
      "at_risk:server_error",
      "skipped:circuit_open",
      "skipped:circuit_open",
    ]);
    const spared = first.results.filter((r) => r.status === "skipped").map((r) => r.account_id);
    const rows = await m.adminDb()`select id, mp_refresh_last_error, mp_refresh_sends,
        mp_refresh_lease_owner, mp_refresh_next_attempt_at > now() + interval '9 minutes' as waits
      from nv_accounts where id = any(${pgArray(spared)}::uuid[])`;
    for (const r of rows) {
      assert.equal(r.mp_refresh_last_error, "circuit_open");
      assert.equal(r.mp_refresh_sends, 0, "nothing was sent");
      assert.equal(r.mp_refresh_lease_owner, null);
      assert.equal(r.waits, true, "it waits a refresh interval");
    }
    // The next run of two takes Argentina's (Brazil's spared ones wait, its at-risk ones are not
    // due for their last resort yet) and refreshes them while Brazil's MercadoPago still fails.
    const second = await refreshRun(m, 2);
    assert.deepEqual(
      second.results.map((r) => r.account_id).sort(),
      argentina.map((a) => a.id).sort(),
    );
    assert.ok(second.results.every((r) => r.status === "refreshed"), JSON.stringify(second));
    // Same run, both sites due: Argentina refreshed beside Brazil's failures.
    const mixed = [await dueAccount(m, "MLB", 20), await dueAccount(m, "MLA", 40)];
    const third = await refreshRun(m, 10);
    const status = (id: string) => third.results.find((r) => r.account_id === id)?.status;
    assert.equal(status(mixed[1].id), "refreshed");
    // Brazil's breaker, persisted open (10 minutes), spares its account unsent.
    assert.equal(status(mixed[0].id), "skipped");
  } finally {
    await m.sandbox.faults("none", 0, m.clientId("MLB"));
    await m.adminDb()`delete from mp_app_breakers`;
  }
  const after = await m.sandbox.stats();
  const calls = (site: string) =>
    after.apps[m.clientId(site)].token_calls - before.apps[m.clientId(site)].token_calls;
  assert.equal(calls("MLB"), 3, "three, then the breaker, persisted: none in the mixed run");
  assert.equal(calls("MLA"), 3);
  await noCrossAppCalls(m);
});

Deno.test("one run, both sites due: Brazil's breaker opening mid-run spares no Argentine account after it", async () => {
  const m = multi();
  await drain(m);
  const brazil = [
    await dueAccount(m, "MLB", 20),
    await dueAccount(m, "MLB", 20),
    await dueAccount(m, "MLB", 20),
  ];
  const argentina = [await dueAccount(m, "MLA", 40), await dueAccount(m, "MLA", 40)];
  await m.sandbox.faults("error_500", 1_000, m.clientId("MLB"));
  await m.sandbox.hold(true, m.clientId("MLA"));
  try {
    // One slot per application: Argentina's first call is held, its second waits for the slot
    // while Brazil's three fail and open Brazil's breaker; then Argentina's first is let through.
    const run = refreshRun(m, 10);
    await m.sandbox.awaitHeld(1, m.clientId("MLA"));
    await eventually(async () => {
      const [r] = await m.adminDb()`select count(*)::int as n from nv_accounts
        where id = any(${pgArray(brazil.map((a) => a.id))}::uuid[])
          and mp_refresh_last_error is not null`;
      return r.n === 3;
    }, 60_000);
    await m.sandbox.hold(false, m.clientId("MLA"));
    const results = (await run).results;
    const status = (id: string) => results.find((r) => r.account_id === id)?.status;
    assert.deepEqual(brazil.map((a) => status(a.id)), ["at_risk", "at_risk", "at_risk"]);
    assert.deepEqual(argentina.map((a) => status(a.id)), ["refreshed", "refreshed"]);
  } finally {
    await m.sandbox.hold(false, m.clientId("MLA"));
    await m.sandbox.faults("none", 0, m.clientId("MLB"));
    await m.adminDb()`delete from mp_app_breakers`;
  }
  await noCrossAppCalls(m);
});

Deno.test("mp-probe: one site's MercadoPago failing does not keep the other site's tokens from being checked", async () => {
  const m = multi();
  const brazil = [];
  for (let i = 0; i < 5; i++) brazil.push(await dueAccount(m, "MLB", 100));
  const argentina = await dueAccount(m, "MLA", 100);
  const ids = [...brazil, argentina].map((a) => a.id);
  // Never verified: due for the probe, Brazil's among the first claimed.
  await m.adminDb()`update nv_accounts set mp_verified_at = null
    where id = any(${pgArray(ids)}::uuid[])`;
  await m.sandbox.faults("error_500", 1_000, m.clientId("MLB"));
  let report;
  try {
    report = await m.call("mp-probe", { limit: 1000 });
  } finally {
    await m.sandbox.faults("none", 0, m.clientId("MLB"));
  }
  assert.equal(report.status, 200);
  const state = (id: string) => report.body.results.find((r: any) => r.account_id === id)?.state;
  assert.equal(state(argentina.id), "connected", "Argentina's token checked");
  const verified = await m.adminDb()`select id, mp_verified_at is not null as verified,
      mp_probe_lease_until > now() + interval '9 minutes' as waits
    from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
  const of = (id: string) => verified.find((v) => v.id === id)!;
  assert.equal(of(argentina.id).verified, true);
  // Brazil's: three checks without an answer open MLB's breaker; none is taken for verified, and
  // the ones it spared wait before a run claims them again.
  assert.ok(brazil.every((a) => !of(a.id).verified));
  assert.ok(brazil.filter((a) => of(a.id).waits).length >= 1, "the spared ones wait");
  await noCrossAppCalls(m);
});
