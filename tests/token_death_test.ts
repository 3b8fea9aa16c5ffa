// deno-lint-ignore-file no-explicit-any
/**
 * Tokens MercadoPago kills without a word (docs/contract.md "Connection states"; invariant 9):
 * checkout's rejected-token reports (get-mp-config step 4, and the checkout client's
 * report-and-retry) and mp-probe, through the real handlers and the sandbox's `invalidate`.
 */
import assert from "node:assert/strict";
import {
  accountRow,
  adminDb,
  backendDb,
  cachedToken,
  call,
  closeDbs,
  cluster,
  newAccount,
  newClient,
  pauseJobsDuringFile,
  provisionedPair,
  sandbox,
  stack,
  supabase,
} from "./_stack.ts";
import { createMpConfigClient, MpConfigError } from "../client/mp_config.ts";

/** A token MercadoPago still accepts, asked as checkout would (`/users/me`). */
async function works(token: string): Promise<boolean> {
  const api = Deno.env.get("MP_API_URL")!;
  const res = await fetch(`${api}/users/me`, { headers: { authorization: `Bearer ${token}` } });
  await res.body?.cancel();
  return res.status === 200;
}

pauseJobsDuringFile();

Deno.test("report of a dead token whose refresh token was never sent: verified, refreshed at once, the new token answered", async () => {
  const p = await provisionedPair();
  await sandbox.invalidate(p.seller, "access");
  const before = await sandbox.stats();
  const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
  assert.equal(res.status, 200);
  assert.ok(res.body.access_token !== p.grant.access_token, "not the dead token");
  assert.ok(res.body.token_version > 1);
  const after = await sandbox.stats();
  assert.equal(after.users_me_calls - before.users_me_calls, 1, "verified once at MercadoPago");
  assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
  assert.ok(await works(res.body.access_token), "a token MercadoPago accepts");
  const row = await accountRow(p.accountId);
  assert.equal(row.mp_state, "connected");
  assert.equal(row.mp_refresh_sends, 0);
  assert.ok((await cachedToken(p.clientId)) === res.body.access_token, "the cache holds it");
  const fast = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(fast.body.source, "fast_path");
  assert.equal(fast.body.token_version, res.body.token_version);
  const [dead] = await adminDb()`select detail from mp_credential_events
    where account_id = ${p.accountId} and event = 'token_dead'`;
  assert.deepEqual(
    { source: dead.detail.source, refresh_unsent: dead.detail.refresh_unsent },
    { source: "report", refresh_unsent: true },
  );
});

Deno.test("invariant 9: report of a dead grant → reauth_required, cache cleared, 404 mp_reauth_required on every later read", async () => {
  const p = await provisionedPair();
  await sandbox.invalidate(p.seller, "grant");
  const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
  assert.equal(res.status, 404);
  assert.equal(res.body.error.code, "mp_reauth_required");
  const row = await accountRow(p.accountId);
  assert.equal(row.mp_state, "reauth_required");
  assert.equal(row.mp_access_token_encrypted, null, "the master no longer holds it");
  assert.equal(await cachedToken(p.clientId), null, "nor the cache");
  for (let i = 0; i < 3; i++) {
    const later = await call("get-mp-config", { client_id: p.clientId });
    assert.equal(later.status, 404);
    assert.equal(later.body.error.code, "mp_reauth_required");
  }
  // Even with the cache refilled by hand at the old version, the fenced write won: it stays empty.
  await backendDb()`update clients set mp_access_token = ${p.grant.access_token}
    where id = ${p.clientId} and mp_token_version < ${row.mp_token_version}`;
  const again = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(again.status, 404);
  // mp-revoke ends reauth_required too.
  assert.equal((await call("mp-revoke", { account_id: p.accountId })).status, 200);
  assert.equal((await accountRow(p.accountId)).mp_state, "revoked");
});

Deno.test("report of a token MercadoPago still accepts: answered again, audit invalid_report_unconfirmed; at most one check a minute", async () => {
  const p = await provisionedPair();
  const before = await sandbox.stats();
  for (let i = 0; i < 3; i++) {
    const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
    assert.equal(res.status, 200);
    assert.ok(res.body.access_token === p.grant.access_token);
    assert.equal(res.body.token_version, 1);
  }
  const after = await sandbox.stats();
  assert.equal(after.users_me_calls - before.users_me_calls, 1, "one check within the minute");
  const events = await adminDb()`select event from mp_credential_events
    where account_id = ${p.accountId} and event = 'invalid_report_unconfirmed'`;
  assert.equal(events.length, 1);
  assert.equal((await accountRow(p.accountId)).mp_state, "connected");
  // A report within the minute of a check that found the token dead answers as dead.
  await sandbox.invalidate(p.seller, "access");
  const within = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
  assert.ok(within.body.access_token === p.grant.access_token, "not asked again within the minute");
  assert.equal((await sandbox.stats()).users_me_calls, after.users_me_calls);
});

Deno.test("report of an older version: the current token is answered, MercadoPago is not asked", async () => {
  const p = await provisionedPair();
  await adminDb()`update nv_accounts set mp_token_version = 3 where id = ${p.accountId}`;
  await call("mp-reconcile", {});
  const before = await sandbox.stats();
  const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 2 });
  assert.equal(res.status, 200);
  assert.equal(res.body.token_version, 3);
  assert.equal((await sandbox.stats()).users_me_calls, before.users_me_calls);
});

Deno.test("report bad input: rejected_token_version not a non-negative integer → 400; unknown client → 404; nothing written", async () => {
  const p = await provisionedPair();
  const [snap] = await adminDb()`select mp_report_checked_at, mp_token_version from nv_accounts
    where id = ${p.accountId}`;
  for (const v of [-1, 1.5, "1", null, true, [], {}, 1e21]) {
    const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: v });
    assert.equal(res.status, 400, JSON.stringify(v));
    assert.equal(res.body.error.code, "invalid_request");
  }
  const unknown = await call("get-mp-config", {
    client_id: crypto.randomUUID(),
    rejected_token_version: 1,
  });
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, "client_not_found");
  const [now] = await adminDb()`select mp_report_checked_at, mp_token_version from nv_accounts
    where id = ${p.accountId}`;
  assert.deepEqual({ ...now }, { ...snap });
});

Deno.test("the checkout client: a charge answered 401 reports the token once and retries with the answer", async () => {
  const p = await provisionedPair();
  await sandbox.invalidate(p.seller, "access");
  const tried: number[] = [];
  const checkout = createMpConfigClient({ supabase: supabase() });
  const result = await checkout.withMpConfig(
    p.clientId,
    async (config) => {
      tried.push(config.token_version ?? -1);
      return (await works(config.access_token)) ? 200 : 401;
    },
    { isRejected: (status) => status === 401 },
  );
  assert.equal(result, 200);
  assert.equal(tried.length, 2);
  assert.equal(tried[0], 1);
  assert.ok(tried[1] > 1);
  // A dead grant: the report answers mp_reauth_required as a typed error.
  const q = await provisionedPair();
  await sandbox.invalidate(q.seller, "grant");
  await assert.rejects(
    () => checkout.reportRejectedToken(q.clientId, 1),
    (err: unknown) =>
      err instanceof MpConfigError && err.status === 404 && err.code === "mp_reauth_required",
  );
});

Deno.test("mp-probe: a live token is verified; a silently killed one is replaced (refresh unsent) or reauth_required (grant dead)", async () => {
  const live = await provisionedPair();
  const res = await call("mp-probe", { account_id: live.accountId });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, {
    checked: 1,
    alive: 1,
    dead: 0,
    errors: 0,
    results: [{ account_id: live.accountId, state: "connected" }],
  });
  assert.ok((await accountRow(live.accountId)).mp_verified_at);

  const access = await provisionedPair();
  await sandbox.invalidate(access.seller, "access");
  const replaced = await call("mp-probe", { account_id: access.accountId });
  assert.deepEqual(replaced.body.results, [{ account_id: access.accountId, state: "connected" }]);
  assert.equal(replaced.body.dead, 1);
  const served = await call("get-mp-config", { client_id: access.clientId });
  assert.equal(served.body.source, "fast_path");
  assert.ok(await works(served.body.access_token), "the new token works");

  const grant = await provisionedPair();
  await sandbox.invalidate(grant.seller, "grant");
  const gone = await call("mp-probe", { account_id: grant.accountId });
  assert.deepEqual(gone.body.results, [{ account_id: grant.accountId, state: "reauth_required" }]);
  const read = await call("get-mp-config", { client_id: grant.clientId });
  assert.equal(read.status, 404);
  assert.equal(read.body.error.code, "mp_reauth_required");
  const [dead] = await adminDb()`select detail from mp_credential_events
    where account_id = ${grant.accountId} and event = 'token_dead'`;
  assert.equal(dead.detail.source, "probe");
});

Deno.test("mp-probe takes a slice, oldest verification first, and skips what was verified within the interval", async () => {
  // Everything else counts as verified just now, so the slice is these accounts.
  await adminDb()`update nv_accounts set mp_verified_at = now()
    where mp_connected and mp_access_token_encrypted is not null`;
  const ids: string[] = [];
  for (const days of [30, 10, 20, 1]) {
    const { grants: [g] } = await sandbox.post("grants", { count: 1 });
    const id = await newAccount({ grant: g, clientId: await newClient() });
    await adminDb()`update nv_accounts set mp_verified_at = now() - make_interval(days => ${days})
      where id = ${id}`;
    ids.push(id);
  }
  const before = await sandbox.stats();
  const first = await call("mp-probe", { limit: 2 });
  assert.deepEqual(
    first.body.results.map((r: any) => r.account_id).sort(),
    [ids[0], ids[2]].sort(),
  );
  const second = await call("mp-probe", { limit: 2 });
  assert.deepEqual(second.body.results.map((r: any) => r.account_id), [ids[1]], "1 day: not due");
  assert.equal((await call("mp-probe", { limit: 2 })).body.checked, 0);
  assert.equal((await sandbox.stats()).users_me_calls - before.users_me_calls, 3);
});

Deno.test("mp-probe checks its caller and body; its schedule runs it every minute with the key in apikey", async () => {
  assert.equal((await call("mp-probe", {}, { key: null })).status, 401);
  for (const body of [{ limit: 0 }, { limit: 1001 }, { account_id: "x" }, { extra: 1 }]) {
    const res = await call("mp-probe", body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.body.error.code, "invalid_request");
  }
  const [job] = await backendDb()`select schedule, command, username from cron.job
    where jobname = 'mp-probe'`;
  assert.equal(job.schedule, "* * * * *");
  assert.equal(job.username, "postgres");
  assert.match(job.command, /mp_invoke_function\('mp-probe'/);
  const [{ src }] = await backendDb()`select prosrc as src from pg_proc
    where proname = 'mp_invoke_function'`;
  assert.match(src, /'apikey'/);
  assert.match(src, /mp_sync_secret_key/);
});

Deno.test("a deauthorization after MercadoPago confirmed the token dead: the earlier 401 confirms it, the account is revoked", async () => {
  const p = await provisionedPair();
  await sandbox.invalidate(p.seller, "grant");
  const probed = await call("mp-probe", { account_id: p.accountId });
  assert.deepEqual(probed.body.results, [{ account_id: p.accountId, state: "reauth_required" }]);
  assert.equal((await accountRow(p.accountId)).mp_access_token_encrypted, null);
  const res = await sandbox.post("deauthorize", {
    user_id: p.seller,
    notify_url: `${stack.functionsUrl}/mp-webhook`,
  });
  assert.equal(res.notified, 200);
  const row = await accountRow(p.accountId);
  assert.deepEqual([row.mp_connected, row.mp_state, row.mp_state_reason], [
    false,
    "revoked",
    "mp_deauthorized",
  ]);
  const read = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(read.status, 404);
  assert.equal(read.body.error.code, "mp_not_connected");
});

Deno.test("invariant 9 with the Backend DB down: a confirmed dead token changes nothing until its cache can be cleared (report 503), then is cleared and replaced", async () => {
  const p = await provisionedPair();
  await sandbox.invalidate(p.seller, "access");
  const backend = cluster("backend");
  await backend.stop();
  let res;
  try {
    res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
  } finally {
    await backend.start();
    await closeDbs();
  }
  assert.equal(res.status, 503);
  assert.equal(res.body.error.code, "unavailable");
  const row = await accountRow(p.accountId);
  assert.deepEqual([row.mp_token_version, row.mp_state], [1, "connected"], "nothing changed");
  // The cache still holds the token (version 1): the next report, with the Backend DB back,
  // verifies again, clears it and answers the replacement.
  await adminDb()`update nv_accounts set mp_report_checked_at = null where id = ${p.accountId}`;
  const again = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
  assert.equal(again.status, 200);
  assert.ok(again.body.access_token !== p.grant.access_token);
  assert.ok((await cachedToken(p.clientId)) === again.body.access_token);
  const fast = await call("get-mp-config", { client_id: p.clientId });
  assert.ok(fast.body.access_token !== p.grant.access_token, "the dead token is not served");
});
