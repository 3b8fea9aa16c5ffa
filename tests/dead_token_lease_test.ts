// deno-lint-ignore-file no-explicit-any
/**
 * Invariant 9 against the refresh lease (docs/invariants.md; docs/contract.md "Connection
 * states"), through the real functions and PostgreSQL: MercadoPago confirming an access token
 * dead (401 on `/users/me`, found by mp-probe or by checkout's report) while a refresh holds
 * the account — a crashed worker's lease, or a refresh whose MercadoPago call the sandbox's
 * latch holds — clears the token from both databases all the same, so get-mp-config never
 * answers it afterwards; and the pair the refresh in flight gets is not lost (invariant 3):
 * saved, or escrowed and applied by the next run, then served.
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
  pauseJobsDuringFile,
  provisionedPair,
  sandbox,
} from "./_stack.ts";

pauseJobsDuringFile();

/** A token MercadoPago accepts now, asked as checkout would (`/users/me`). */
async function works(token: string): Promise<boolean> {
  const res = await fetch(`${Deno.env.get("MP_API_URL")}/users/me`, {
    headers: { authorization: `Bearer ${token}` },
  });
  await res.body?.cancel();
  return res.status === 200;
}

/** get-mp-config for `clientId` answers 404 `mp_reauth_required`, without `dead` anywhere. */
async function assertNotServed(clientId: string, dead: string, when: string): Promise<void> {
  const read = await call("get-mp-config", { client_id: clientId });
  assert.equal(read.status, 404, `${when}: answered ${read.status}`);
  assert.equal(read.body.error.code, "mp_reauth_required", when);
  assert.ok(!JSON.stringify(read.body).includes(dead), `${when}: the dead token is not answered`);
  assert.equal(await cachedToken(clientId), null, `${when}: the cache holds no token`);
}

Deno.test("invariant 9: a crashed refresh keeps its lease — a 401 found by mp-probe clears the token all the same; once the lease runs out the next run refreshes it", async () => {
  const p = await provisionedPair();
  const dead = p.grant.access_token;
  await sandbox.invalidate(p.seller, "access");
  const crashed = crypto.randomUUID();
  await adminDb()`update nv_accounts set mp_refresh_lease_owner = ${crashed},
    mp_refresh_lease_expires_at = now() + interval '5 minutes' where id = ${p.accountId}`;
  const before = await sandbox.stats();

  const probed = await call("mp-probe", { account_id: p.accountId });
  assert.equal(probed.status, 200);
  assert.equal(probed.body.checked, 1);
  assert.equal(probed.body.dead, 1);
  assert.deepEqual(
    probed.body.results,
    [{ account_id: p.accountId, state: "reauth_required" }],
    "the probe's answer says the state the account is in: nothing is served until it is replaced",
  );
  await assertNotServed(p.clientId, dead, "after the probe");
  const row: any = await accountRow(p.accountId);
  assert.deepEqual(
    [
      Number(row.mp_token_version),
      row.mp_access_token_encrypted,
      row.mp_state,
      row.mp_state_reason,
      row.mp_refresh_lease_owner,
      row.mp_refresh_sends,
    ],
    [2, null, "reauth_required", "token_dead", crashed, 0],
    "cleared at version 2; the crashed worker's lease and the unsent refresh token left alone",
  );
  const [event] = await adminDb()`select detail from mp_credential_events
    where account_id = ${p.accountId} and event = 'token_dead'`;
  assert.equal(event.detail.source, "probe");
  assert.equal(
    (await sandbox.stats()).token_calls,
    before.token_calls,
    "the refresh token is not used under another worker's lease",
  );

  // The lease runs out: the next run uses the refresh token that was never sent.
  await adminDb()`update nv_accounts set mp_refresh_lease_expires_at = now() - interval '1 second'
    where id = ${p.accountId}`;
  const run = await call("mp-refresh", { account_id: p.accountId });
  assert.equal(run.status, 200);
  assert.deepEqual(run.body.results, [{ account_id: p.accountId, status: "refreshed" }]);
  const served = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(served.status, 200);
  assert.equal(served.body.token_version, 3);
  assert.ok(served.body.access_token !== dead, "a new token");
  assert.ok(await works(served.body.access_token), "a token MercadoPago accepts");
  assert.equal((await accountRow(p.accountId)).mp_state, "connected");
  assert.equal((await sandbox.stats()).refresh_token_reuse, before.refresh_token_reuse);
});

Deno.test("invariants 9 and 3: a dead token reported while a refresh is in flight — 503, cleared, never answered again; the refresh's pair is saved and served", async () => {
  const p = await provisionedPair();
  const dead = p.grant.access_token;
  await sandbox.invalidate(p.seller, "access");
  const before = await sandbox.stats();
  await sandbox.hold(true);
  let refresh;
  try {
    const refreshing = call("mp-refresh", { account_id: p.accountId, force: true });
    await sandbox.awaitHeld(1); // the refresh token is at MercadoPago, not processed yet

    const report = await call("get-mp-config", {
      client_id: p.clientId,
      rejected_token_version: 1,
    });
    assert.equal(report.status, 503, `answered ${report.status}`);
    assert.equal(report.body.error.code, "unavailable");
    assert.ok(!JSON.stringify(report.body).includes(dead), "the dead token is not answered");
    await assertNotServed(p.clientId, dead, "while the refresh is in flight");
    const row: any = await accountRow(p.accountId);
    assert.equal(Number(row.mp_token_version), 2);
    assert.equal(row.mp_access_token_encrypted, null, "the master no longer holds it");
    assert.equal(row.mp_state, "reauth_required");
    assert.ok(row.mp_refresh_lease_owner, "the refresh keeps its lease");

    await sandbox.hold(false); // MercadoPago processes the refresh and answers a new pair
    refresh = await refreshing;
  } finally {
    await sandbox.hold(false);
  }
  assert.equal(refresh.status, 200);
  assert.deepEqual(refresh.body.results, [{ account_id: p.accountId, status: "refreshed" }]);
  const issued = await sandbox.lastTokens(p.seller);
  assert.ok(issued && issued.access_token !== dead, "MercadoPago issued a new pair");
  const served = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(served.status, 200);
  assert.equal(served.body.source, "fast_path");
  assert.equal(served.body.token_version, 3);
  assert.ok(served.body.access_token === issued.access_token, "the refresh's pair is served");
  assert.ok(await works(served.body.access_token));
  const row: any = await accountRow(p.accountId);
  assert.deepEqual([row.mp_state, row.mp_refresh_sends, row.mp_refresh_lease_owner], [
    "connected",
    0,
    null,
  ]);
  assert.equal((await sandbox.stats()).refresh_token_reuse, before.refresh_token_reuse);
});

Deno.test("invariants 9 and 3: a 401 found by mp-probe while a refresh is in flight, the Admin DB then down for its save — the pair is escrowed from the version before the clear and applied by the next run", async () => {
  const p = await provisionedPair();
  const dead = p.grant.access_token;
  await sandbox.invalidate(p.seller, "access");
  const before = await sandbox.stats();
  const admin = cluster("admin");
  await sandbox.hold(true);
  let refresh;
  let stopped = false;
  try {
    const refreshing = call("mp-refresh", { account_id: p.accountId, force: true });
    await sandbox.awaitHeld(1);
    const probed = await call("mp-probe", { account_id: p.accountId });
    assert.equal(probed.status, 200);
    assert.equal(probed.body.dead, 1);
    await assertNotServed(p.clientId, dead, "after the probe");
    await admin.stop(); // the refresh's save cannot reach the Admin DB
    stopped = true;
    await sandbox.hold(false);
    refresh = await refreshing;
  } finally {
    await sandbox.hold(false);
    if (stopped) await admin.start();
    await closeDbs();
  }
  assert.deepEqual(refresh.body.results, [
    { account_id: p.accountId, status: "escrowed", error: "admin_unavailable" },
  ]);
  const [escrow] = await backendDb()`select base_version from mp_refresh_escrow
    where account_id = ${p.accountId}`;
  assert.equal(Number(escrow.base_version), 1, "escrowed from the version before the clear");
  await assertNotServed(p.clientId, dead, "with the pair in escrow");

  // The refresh's lease runs out; the next run applies the escrowed pair (no call).
  await adminDb()`update nv_accounts set mp_refresh_lease_expires_at = now() - interval '1 second'
    where id = ${p.accountId}`;
  const mid = await sandbox.stats();
  const run = await call("mp-refresh", { account_id: p.accountId });
  assert.deepEqual(run.body.results, [{ account_id: p.accountId, status: "escrow_applied" }]);
  assert.equal((await sandbox.stats()).token_calls, mid.token_calls, "MercadoPago not called");
  const issued = await sandbox.lastTokens(p.seller);
  const served = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(served.status, 200);
  assert.equal(served.body.token_version, 3);
  assert.ok(served.body.access_token === issued?.access_token, "the escrowed pair is served");
  assert.ok(await works(served.body.access_token));
  assert.equal((await accountRow(p.accountId)).mp_state, "connected");
  assert.equal(
    (await backendDb()`select 1 from mp_refresh_escrow where account_id = ${p.accountId}`).length,
    0,
  );
  assert.equal((await sandbox.stats()).refresh_token_reuse, before.refresh_token_reuse);
});
