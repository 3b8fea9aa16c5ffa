// deno-lint-ignore-file no-explicit-any
/**
 * MercadoPago as it really fails (docs/contract.md "Connection states"; docs/invariants.md,
 * invariants 3 and 6), through mp-refresh and the sandbox's failure modes: answers lost after
 * MercadoPago acted, the circuit breaker, a call provably never sent, the last-resort attempt,
 * and a refresh (or an escrowed pair) that belongs to another seller.
 */
import assert from "node:assert/strict";
import {
  accountRow,
  adminDb,
  backendDb,
  cachedToken,
  call,
  keyRing,
  logLine,
  type MpGrant,
  newAccount,
  newClient,
  newSeller,
  pauseJobsDuringFile,
  sandbox,
} from "./_stack.ts";
import { decryptSecret, encryptSecret, type SecretField } from "../shared/platform/crypto.ts";
import { appOfSite, loadConfig } from "../shared/platform/config.ts";
import { createContext } from "../shared/platform/context.ts";
import { createLogger } from "../shared/platform/log.ts";
import { pgArray } from "../shared/platform/db.ts";
import { runRefresh } from "../shared/refresh/run.ts";
import { writeEscrow } from "../shared/store/escrow.ts";
import { MpError, refreshTokens } from "../shared/mercadopago/api.ts";

const quietLog = createLogger({ test: "mp_failures" });

/** A connected account of a new seller, linked and provisioned, its token expiring in 10 days (due). */
async function dueAccount(seller = newSeller()) {
  const { grants: [grant] } = await sandbox.post("grants", { count: 1, user_id: seller });
  const clientId = await newClient();
  const id = await newAccount({ grant, clientId, expiresInDays: 10 });
  const prov = await call("provision-step-7-1", { account_id: id, client_id: clientId });
  assert.equal(prov.body.synced, true);
  return { id, clientId, grant: grant as MpGrant, seller };
}

async function decrypt(accountId: string, field: SecretField, value: string) {
  return await decryptSecret(await keyRing(), accountId, field, value);
}

async function encrypt(accountId: string, field: SecretField, value: string) {
  return await encryptSecret(await keyRing(), accountId, field, value);
}

/** A context of our own, as the stack's functions build it, with environment overrides. */
function ownContext(overrides: Record<string, string> = {}) {
  return createContext(loadConfig({ ...Deno.env.toObject(), ...overrides }));
}

pauseJobsDuringFile(undefined, () => sandbox.faults("none", 0));

for (
  const [mode, error] of [
    ["lose_answer", "lost"],
    ["error_500_after", "server_error"],
    ["malformed_200", "bad_response"],
  ] as const
) {
  Deno.test(`${mode}: MercadoPago spent the refresh token; the account is at risk and the token is never presented again, with or without force`, async () => {
    const a = await dueAccount();
    const before = await sandbox.stats();
    await sandbox.faults(mode, 1);
    const res = await call("mp-refresh", { account_id: a.id });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.results, [{ account_id: a.id, status: "at_risk", error }]);
    assert.equal(res.body.failed, 1);
    const issued = await sandbox.lastTokens(a.seller);
    assert.ok(issued, "MercadoPago processed the call and issued a pair");
    assert.ok(issued.refresh_token !== a.grant.refresh_token, "…rotating the refresh token");

    const row = await accountRow(a.id);
    assert.equal(row.mp_state, "at_risk");
    assert.equal(row.mp_state_reason, "refresh_unconfirmed");
    assert.equal(row.mp_refresh_sends, 1);
    assert.equal(row.mp_token_version, 1);
    assert.ok(
      await decrypt(a.id, "refresh_token", row.mp_refresh_token) === a.grant.refresh_token,
      "the stored refresh token is the one sent",
    );

    for (const body of [{ account_id: a.id }, { account_id: a.id, force: true }]) {
      assert.equal((await call("mp-refresh", body)).body.claimed, 0, "not claimed");
    }
    const after = await sandbox.stats();
    assert.equal(after.token_calls - before.token_calls, 1, "one request with that token, ever");
    // A run over everything due (other files' accounts too) leaves it alone as well.
    const all = await call("mp-refresh", { limit: 500 });
    assert.ok(!all.body.results.some((r: any) => r.account_id === a.id), "not claimed");
    assert.equal(
      (await sandbox.stats()).refresh_token_reuse,
      before.refresh_token_reuse,
      "no reuse at MercadoPago",
    );
    // The token it had keeps being served while MercadoPago accepts it.
    const served = await call("get-mp-config", { client_id: a.clientId });
    assert.equal(served.status, 200);
    assert.ok(served.body.access_token === a.grant.access_token);
    await logLine("MP refresh outcome unknown", a.id);
  });
}

Deno.test("circuit breaker: after 3 unknown outcomes in a row a run calls MercadoPago no more", async () => {
  // Nothing else due, so the run takes exactly these accounts.
  for (let i = 0; i < 20 && (await call("mp-refresh", { limit: 500 })).body.claimed > 0; i++);
  const accounts = [];
  for (let i = 0; i < 6; i++) accounts.push(await dueAccount());
  const ids = accounts.map((a) => a.id);
  const ctx = ownContext({ MP_REFRESH_CONCURRENCY: "1" });
  const before = await sandbox.stats();
  let report;
  try {
    await sandbox.faults("error_500_after", 6);
    report = await runRefresh(ctx, quietLog, { limit: 6 });
  } finally {
    await sandbox.faults("none", 0);
    await ctx.close();
  }
  const mine = report.results.filter((r) => ids.includes(r.account_id));
  assert.equal(mine.length, 6);
  assert.deepEqual(
    mine.map((r) => r.status).sort(),
    ["at_risk", "at_risk", "at_risk", "skipped", "skipped", "skipped"],
  );
  assert.ok(mine.filter((r) => r.status === "skipped").every((r) => r.error === "circuit_open"));
  const after = await sandbox.stats();
  assert.equal(after.token_calls - before.token_calls, 3, "three calls, then the breaker");
  const rows = await adminDb()`select id, mp_state, mp_refresh_sends, mp_refresh_lease_owner
    from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
  const states = rows.map((r) => `${r.mp_state}/${r.mp_refresh_sends}`).sort();
  assert.deepEqual(states, [
    "at_risk/1",
    "at_risk/1",
    "at_risk/1",
    "connected/0",
    "connected/0",
    "connected/0",
  ]);
  assert.ok(rows.every((r) => r.mp_refresh_lease_owner === null), "every lease released");
  // The breaker is persisted open for 10 minutes (runs in between call MercadoPago no more);
  // once that is over, the next run's trial call is answered, closes it, and the accounts the
  // breaker spared are refreshed.
  const [breaker] = await adminDb()`select site_id, opens, open_until > now() as open,
      extract(epoch from open_until - opened_at)::int as backoff_s
    from mp_app_breakers where open_until is not null`;
  assert.deepEqual({ ...breaker }, { site_id: "MLA", opens: 1, open: true, backoff_s: 600 });
  await adminDb()`update mp_app_breakers set open_until = now()`;
  const next = await call("mp-refresh", { limit: 500 }).finally(() =>
    adminDb()`delete from mp_app_breakers`
  );
  const spared = rows.filter((r) => r.mp_state === "connected").map((r) => r.id);
  for (const id of spared) {
    assert.deepEqual(next.body.results.find((r: any) => r.account_id === id)?.status, "refreshed");
  }
});

Deno.test("a call that provably never reached MercadoPago (connection refused) backs off, the refresh token unspent; it is retried", async () => {
  const a = await dueAccount();
  const ctx = ownContext({ MP_API_URL: "http://127.0.0.1:1" });
  try {
    const report = await runRefresh(ctx, quietLog, { accountId: a.id });
    assert.deepEqual(report.results, [{ account_id: a.id, status: "failed", error: "not_sent" }]);
  } finally {
    await ctx.close();
  }
  const row = await accountRow(a.id);
  assert.equal(row.mp_refresh_sends, 0, "uncounted: it never left");
  assert.equal(row.mp_state, "connected");
  assert.ok(row.mp_refresh_next_attempt_at.getTime() > Date.now(), "backing off");
  const forced = await call("mp-refresh", { account_id: a.id, force: true });
  assert.equal(forced.body.results[0].status, "refreshed");
  assert.equal((await accountRow(a.id)).mp_token_version, 2);
});

Deno.test("429 is retried: the refresh token counted as unsent, Retry-After honoured", async () => {
  const a = await dueAccount();
  await sandbox.faults("rate_limited", 1);
  const res = await call("mp-refresh", { account_id: a.id });
  assert.deepEqual(res.body.results, [{
    account_id: a.id,
    status: "failed",
    error: "rate_limited",
  }]);
  const row = await accountRow(a.id);
  assert.equal(row.mp_refresh_sends, 0);
  assert.equal(row.mp_state, "connected");
  const forced = await call("mp-refresh", { account_id: a.id, force: true });
  assert.equal(forced.body.results[0].status, "refreshed");
});

Deno.test("last resort: an at-risk account gets one more attempt when its token expires within 7 days, and only one", async () => {
  // error_500 answers before processing, so the sandbox still honours the token: the last
  // resort succeeds and the account is connected again.
  const ok = await dueAccount();
  await sandbox.faults("error_500", 1);
  assert.equal((await call("mp-refresh", { account_id: ok.id })).body.results[0].status, "at_risk");
  await adminDb()`update nv_accounts set mp_token_expires_at = now() + interval '3 days'
    where id = ${ok.id}`;
  const saved = await call("mp-refresh", { account_id: ok.id });
  assert.equal(saved.body.results[0].status, "refreshed");
  const row = await accountRow(ok.id);
  assert.deepEqual([row.mp_state, row.mp_refresh_sends, row.mp_token_version], [
    "connected",
    0,
    2,
  ]);
  await logLine("last-resort attempt", ok.id);

  // A last resort that fails as well: never a third request.
  const bad = await dueAccount();
  await sandbox.faults("error_500", 2);
  try {
    assert.equal(
      (await call("mp-refresh", { account_id: bad.id })).body.results[0].status,
      "at_risk",
    );
    await adminDb()`update nv_accounts set mp_token_expires_at = now() + interval '3 days'
      where id = ${bad.id}`;
    assert.equal(
      (await call("mp-refresh", { account_id: bad.id })).body.results[0].status,
      "at_risk",
    );
  } finally {
    await sandbox.faults("none", 0);
  }
  assert.equal((await accountRow(bad.id)).mp_refresh_sends, 2);
  const before = await sandbox.stats();
  assert.equal((await call("mp-refresh", { account_id: bad.id, force: true })).body.claimed, 0);
  assert.equal((await sandbox.stats()).token_calls, before.token_calls);
  const [state] = await adminDb()`select state, deadline from mp_connection_states
    where account_id = ${bad.id}`;
  assert.equal(state.state, "at_risk");
  assert.ok(state.deadline.getTime() < Date.now() + 4 * 86_400_000, "the deadline is the expiry");
});

Deno.test("invariant 6: a refresh answered for another seller is never stored nor served; reauth_required seller_mismatch", async () => {
  const a = await dueAccount();
  await sandbox.faults("other_seller", 1);
  const res = await call("mp-refresh", { account_id: a.id });
  assert.deepEqual(res.body.results, [{
    account_id: a.id,
    status: "reauth_required",
    error: "seller_mismatch",
  }]);
  const other = await sandbox.lastTokens();
  assert.ok(other && other.user_id !== a.seller, "MercadoPago answered another seller's pair");
  const row = await accountRow(a.id);
  assert.equal(Number(row.mp_user_id), a.seller, "the seller is unchanged");
  assert.equal(row.mp_token_version, 1);
  assert.equal(row.mp_state, "reauth_required");
  assert.equal(row.mp_state_reason, "seller_mismatch");
  assert.ok(
    await decrypt(a.id, "access_token", row.mp_access_token_encrypted) === a.grant.access_token,
  );
  const cached = await cachedToken(a.clientId);
  assert.ok(cached !== other.access_token, "the other seller's token is not in the cache");
  const served = await call("get-mp-config", { client_id: a.clientId });
  assert.ok(served.body.access_token !== other.access_token, "…nor served");
  const forced = await call("mp-refresh", { account_id: a.id, force: true });
  assert.equal(forced.body.claimed, 0, "the spent token is not sent again");
});

Deno.test("invariant 6 in SQL: mp_save_refreshed refuses another seller; an answer without one keeps the stored seller", async () => {
  const a = await dueAccount();
  const owner = crypto.randomUUID();
  const [claimed] = await adminDb()`select * from mp_claim_due_accounts(${owner}::uuid, 1,
    interval '60 days', interval '5 minutes', ${a.id}::uuid, false)`;
  assert.equal(claimed.id, a.id);
  const access = await encrypt(a.id, "access_token", "APP_USR-fence-access");
  const refresh = await encrypt(a.id, "refresh_token", "TG-fence-refresh");
  const save = (userId: number | null) =>
    adminDb()`select * from mp_save_refreshed(${a.id}::uuid, ${owner}::uuid, 1::bigint,
      ${access}, ${refresh}, 15552000, now() + interval '180 days', ${userId}::bigint)`;
  assert.equal((await save(a.seller + 1)).length, 0, "another seller's pair is refused");
  assert.equal((await accountRow(a.id)).mp_token_version, 1);
  const [saved] = await save(null);
  assert.equal(saved.mp_token_version, 2);
  assert.equal(Number((await accountRow(a.id)).mp_user_id), a.seller);
});

Deno.test("invariant 6 through the escrow: a pair escrowed without its seller is checked at MercadoPago; another seller's is discarded, the own applied", async () => {
  const mine = await dueAccount();
  const theirs = await dueAccount();
  const escrow = async (accountId: string, g: MpGrant) =>
    await writeEscrow(backendDb(), {
      accountId,
      baseVersion: 1,
      accessTokenEncrypted: await encrypt(accountId, "access_token", g.access_token),
      refreshTokenEncrypted: await encrypt(accountId, "refresh_token", g.refresh_token),
      expiresIn: 15552000,
      tokenExpiresAt: new Date(Date.now() + 180 * 86_400_000),
      userId: null,
      publicKey: null,
      liveMode: null,
      scope: null,
    });
  // The escrow of `mine` holds a pair of another seller (encrypted under mine's AAD), that of
  // `theirs` a new pair of its own seller.
  const { grants: [stranger] } = await sandbox.post("grants", { count: 1 });
  const { grants: [own] } = await sandbox.post("grants", { count: 1, user_id: theirs.seller });
  await escrow(mine.id, stranger);
  await escrow(theirs.id, own);
  const before = await sandbox.stats();

  const rejected = await call("mp-refresh", { account_id: mine.id });
  assert.deepEqual(rejected.body.results, [{
    account_id: mine.id,
    status: "failed",
    error: "escrow_rejected",
  }]);
  const row = await accountRow(mine.id);
  assert.equal(row.mp_token_version, 1, "the master is unchanged");
  assert.equal(Number(row.mp_user_id), mine.seller);
  assert.ok((await cachedToken(mine.clientId)) !== stranger.access_token);
  const [{ n }] = await backendDb()`select count(*)::int as n from mp_refresh_escrow
    where account_id = ${mine.id}`;
  assert.equal(n, 0, "the pair is discarded");
  const [event] = await adminDb()`select detail from mp_credential_events
    where account_id = ${mine.id} and event = 'escrow_rejected'`;
  assert.equal(event.detail.reason, "seller_mismatch");

  const applied = await call("mp-refresh", { account_id: theirs.id });
  assert.equal(applied.body.results[0].status, "escrow_applied");
  assert.ok((await cachedToken(theirs.clientId)) === own.access_token);
  const after = await sandbox.stats();
  assert.equal(after.users_me_calls - before.users_me_calls, 2, "each pair checked at MercadoPago");
  assert.equal(after.token_calls, before.token_calls, "no refresh call");
});

Deno.test("a worker terminated after its request left: the counted send stays, and once the lease runs out the account is at risk, never resent", async () => {
  const a = await dueAccount();
  const owner = crypto.randomUUID();
  const [claimed] = await adminDb()`select * from mp_claim_due_accounts(${owner}::uuid, 1,
    interval '60 days', interval '5 minutes', ${a.id}::uuid, false)`;
  assert.equal(claimed.id, a.id);
  const [{ began }] = await adminDb()`select mp_begin_refresh_call(${a.id}::uuid, ${owner}::uuid,
    1::bigint) as began`;
  assert.equal(began, true);
  const [{ again }] = await adminDb()`select mp_begin_refresh_call(${a.id}::uuid, ${owner}::uuid,
    1::bigint) as again`;
  assert.equal(again, false, "a second send of the same token is refused in SQL");
  // …and the worker dies here. While the lease lives nothing changes; then it runs out.
  assert.equal((await accountRow(a.id)).mp_state, "connected");
  await adminDb()`update nv_accounts set mp_refresh_lease_expires_at = now() - interval '1 second'
    where id = ${a.id}`;
  const before = await sandbox.stats();
  const run = await call("mp-refresh", { account_id: a.id, force: true });
  assert.equal(run.body.claimed, 0);
  const row = await accountRow(a.id);
  assert.deepEqual([row.mp_state, row.mp_state_reason, row.mp_refresh_last_error], [
    "at_risk",
    "refresh_unconfirmed",
    "outcome_lost",
  ]);
  assert.equal((await sandbox.stats()).token_calls, before.token_calls);
});

Deno.test("a refresh whose connection drops unanswered is not resent by the HTTP client, even after a kept-alive call", async () => {
  const app = appOfSite(loadConfig(Deno.env.toObject()), null)!;
  const { grants: [warm, lost] } = await sandbox.post("grants", { count: 2 });
  // A first call leaves a kept-alive connection behind (Deno's fetch would reuse it).
  await refreshTokens(app, warm.refresh_token);
  const before = await sandbox.stats();
  await sandbox.faults("lose_answer", 1);
  const err = await refreshTokens(app, lost.refresh_token).then(() => null, (e) => e);
  assert.ok(err instanceof MpError);
  assert.equal(err.kind, "lost");
  const after = await sandbox.stats();
  assert.equal(after.token_calls - before.token_calls, 1, "one request, not resent");
  assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
});

Deno.test("a claimed account that changed before its call (a reconnect while it waited for a slot) is not sent: mp_begin_refresh_call refuses and the run obeys", async () => {
  // Nothing else due, so the run takes exactly these two accounts, one call at a time.
  for (let i = 0; i < 20 && (await call("mp-refresh", { limit: 500 })).body.claimed > 0; i++);
  const first = await dueAccount();
  const second = await dueAccount();
  const ctx = ownContext({ MP_REFRESH_CONCURRENCY: "1" });
  const before = await sandbox.stats();
  await sandbox.hold(true);
  let report;
  try {
    const running = runRefresh(ctx, quietLog, { limit: 2 });
    await sandbox.awaitHeld(1); // one account's call is held; the other waits for the slot
    const waiting = (await accountRow(first.id)).mp_refresh_sends === 1 ? second : first;
    // The waiting account's seller connects again meanwhile: new pair, version 2, no lease.
    const { grants: [fresh] } = await sandbox.post("grants", { count: 1, user_id: waiting.seller });
    const [saved] = await adminDb()`select * from mp_save_connection(${waiting.id}::uuid,
      ${waiting.seller}::bigint, ${await encrypt(waiting.id, "access_token", fresh.access_token)},
      ${await encrypt(waiting.id, "refresh_token", fresh.refresh_token)}, 'APP_USR-pk', 15552000,
      true, 'offline_access', false)`;
    assert.equal(saved.result, "connected");
    await sandbox.hold(false);
    report = await running;
    const waited = report.results.find((r) => r.account_id === waiting.id);
    assert.deepEqual(waited, {
      account_id: waiting.id,
      status: "skipped",
      error: "refresh_unconfirmed",
    });
    assert.equal(
      (await accountRow(waiting.id)).mp_refresh_sends,
      0,
      "the new refresh token unsent",
    );
  } finally {
    await sandbox.hold(false);
    await ctx.close();
  }
  const after = await sandbox.stats();
  assert.equal(after.token_calls - before.token_calls, 1, "only the held account's call was made");
  assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
});
