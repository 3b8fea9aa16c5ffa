// deno-lint-ignore-file no-explicit-any
/**
 * Invariant 9 when a token check cannot settle (shared/checkout/report.ts,
 * shared/probe/probe.ts): a dead token reported while a refresh holds the account is cleared
 * from both databases all the same and not answered (503, retry: the refresh replaces it), and
 * MercadoPago answering 500 to mp-probe proves nothing — the account is neither handled as dead
 * nor recorded as verified, and the next run checks it again.
 */
import assert from "node:assert/strict";
import {
  accountRow,
  adminDb,
  cachedToken,
  call,
  pauseJobsDuringFile,
  provisionedPair,
  sandbox,
} from "./_stack.ts";

pauseJobsDuringFile();

Deno.test("invariant 9: a dead token reported while a refresh holds the account → 503, the dead token not answered, cleared from both databases, the lease left to the refresh", async () => {
  const p = await provisionedPair();
  await sandbox.invalidate(p.seller, "access");
  const holder = crypto.randomUUID();
  await adminDb()`update nv_accounts set mp_refresh_lease_owner = ${holder},
    mp_refresh_lease_expires_at = now() + interval '10 minutes' where id = ${p.accountId}`;
  const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
  assert.equal(res.status, 503, `answered ${res.status} ${res.body?.error?.code ?? ""}`);
  assert.equal(res.body.error.code, "unavailable");
  assert.ok(res.body.access_token === undefined, "the dead token is not answered");
  const row: any = await accountRow(p.accountId);
  assert.deepEqual(
    [
      Number(row.mp_token_version),
      row.mp_access_token_encrypted,
      row.mp_state,
      row.mp_state_reason,
      row.mp_refresh_lease_owner,
    ],
    [2, null, "reauth_required", "token_dead", holder],
    "cleared at a new version; the refresh's lease untouched",
  );
  assert.equal(await cachedToken(p.clientId), null, "nor does the cache hold it");
  const later = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(later.status, 404);
  assert.equal(later.body.error.code, "mp_reauth_required");
});

Deno.test("mp-probe: MercadoPago answering 500 proves nothing — unverified, an error, not recorded verified; the next run checks again", async () => {
  const p = await provisionedPair();
  await sandbox.faults("error_500", 1);
  const res = await call("mp-probe", { account_id: p.accountId });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, {
    checked: 1,
    alive: 0,
    dead: 0,
    errors: 1,
    results: [{ account_id: p.accountId, state: "unverified" }],
  });
  const row: any = await accountRow(p.accountId);
  assert.equal(row.mp_verified_at, null, "not recorded as verified");
  assert.equal(row.mp_state, "connected");
  assert.ok((await cachedToken(p.clientId)) === p.grant.access_token, "the cache keeps the token");
  const again = await call("mp-probe", { account_id: p.accountId });
  assert.deepEqual(again.body.results, [{ account_id: p.accountId, state: "connected" }]);
  assert.equal(again.body.alive, 1);
  assert.ok((await accountRow(p.accountId)).mp_verified_at, "verified by the next run");
});
