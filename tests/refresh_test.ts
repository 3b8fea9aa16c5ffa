// deno-lint-ignore-file no-explicit-any
/**
 * mp-refresh (docs/contract.md, mp-refresh): claiming under leases, the compare-and-swap save, sandbox faults,
 * the escrow that keeps a rotated refresh token when the Admin DB is down, ten runs in
 * parallel, and the real pg_cron job firing through the local pg_net stand-in.
 * The 10-minute schedule is paused while these tests run (so it claims nothing of theirs)
 * and restored by the last one.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  cluster,
  eventually,
  keyRing,
  logLine,
  type MpGrant,
  newAccount,
  newClient,
  pauseJobsDuringFile,
  sandbox,
  stack,
} from "./_stack.ts";
import { decryptSecret, encryptSecret, type SecretField } from "../shared/platform/crypto.ts";
import { loadConfig } from "../shared/platform/config.ts";
import { createContext } from "../shared/platform/context.ts";
import { createLogger } from "../shared/platform/log.ts";
import { pgArray } from "../shared/platform/db.ts";
import { runRefresh } from "../shared/refresh/run.ts";

const DAY = 86_400_000;

/** A connected account linked to a fresh client, its token expiring in 10 days (due). */
async function dueAccount(grant?: MpGrant) {
  const g = grant ?? (await sandbox.grants(1))[0];
  const clientId = await newClient();
  const id = await newAccount({ grant: g, clientId, expiresInDays: 10 });
  return { id, clientId, grant: g };
}

async function account(id: string) {
  const [row] = await adminDb()`select * from nv_accounts where id = ${id}`;
  return row;
}

async function cache(clientId: string) {
  const [row] = await backendDb()`
    select mp_access_token, mp_public_key, mp_token_version from clients where id = ${clientId}`;
  return row;
}

async function decrypt(accountId: string, field: SecretField, value: string) {
  return await decryptSecret(await keyRing(), accountId, field, value);
}

async function encrypt(accountId: string, field: SecretField, value: string) {
  return await encryptSecret(await keyRing(), accountId, field, value);
}

/** Runs mp-refresh over everything due until a run claims nothing (isolates later counts). */
async function drain() {
  for (let i = 0; i < 20; i++) {
    const res = await call("mp-refresh", { limit: 500 });
    assert.equal(res.status, 200);
    if (res.body.claimed === 0) return;
  }
  throw new Error("mp-refresh kept claiming accounts");
}

/** A context of our own, as the stack's functions build it, with environment overrides. */
function ownContext(overrides: Record<string, string> = {}) {
  return createContext(loadConfig({ ...Deno.env.toObject(), ...overrides }));
}

const quietLog = createLogger({ test: "refresh" });

async function refreshJob() {
  const [job] = await backendDb()`
    select jobid, schedule, command, active, username from cron.job where jobname = 'mp-refresh'`;
  return job;
}

pauseJobsDuringFile();

Deno.test("the Backend migrations schedule mp-refresh every 10 minutes via pg_net and Vault, the key in apikey", async () => {
  const job = await refreshJob();
  assert.ok(job, "cron job mp-refresh exists");
  assert.equal(job.schedule, "*/10 * * * *");
  assert.equal(job.username, "postgres", "owned by and run as postgres, not a superuser");
  assert.equal(
    job.command,
    `select public.mp_invoke_function('mp-refresh', '{"limit": 200}'::jsonb, 150000)`,
  );
  const [{ src }] = await backendDb()`select prosrc as src from pg_proc
    where proname = 'mp_invoke_function'`;
  assert.match(src, /net\.http_post\(/);
  assert.match(src, /name = 'project_url'\)\s*\|\| '\/functions\/v1\/' \|\| p_function/);
  assert.match(src, /'apikey', key/);
  assert.match(src, /'Authorization', 'Bearer ' \|\| key/);
  assert.match(src, /name = 'mp_sync_secret_key'/);
  const [{ n }] = await backendDb()`
    select count(*)::int as n from vault.decrypted_secrets
     where name in ('project_url', 'mp_sync_secret_key')`;
  assert.equal(n, 2);
});

Deno.test("mp-refresh checks its caller and body", async () => {
  assert.equal((await call("mp-refresh", {}, { key: null })).status, 401);
  assert.equal((await call("mp-refresh", {}, { key: "sb_secret_wrong_key_123" })).status, 401);
  for (
    const body of [
      { limit: 0 },
      { limit: 501 },
      { limit: 2.5 },
      { limit: "10" },
      { account_id: "nope" },
      { force: "yes" },
      { force: true },
      { extra: 1 },
    ]
  ) {
    const res = await call("mp-refresh", body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.body.error.code, "invalid_request");
  }
  const missing = await call("mp-refresh", { account_id: crypto.randomUUID() });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, "account_not_found");
  assert.equal((await call("mp-refresh", undefined, { method: "GET" })).status, 405);
  // No body at all (pg_cron without one, a bare curl) means the defaults; so does an empty
  // chunked one. Anything else must be a JSON object.
  for (const body of [undefined, new ReadableStream({ start: (c) => c.close() })]) {
    const res = await fetch(`${stack.functionsUrl}/mp-refresh`, {
      method: "POST",
      headers: { apikey: stack.secretKey },
      body,
    });
    const answer = await res.json();
    assert.equal(res.status, 200, JSON.stringify(answer).slice(0, 200));
    assert.equal(typeof answer.claimed, "number");
  }
  assert.equal((await call("mp-refresh", "  ")).status, 400, "whitespace is not a body");
});

Deno.test("acceptance 3: a refresh updates clients.mp_access_token together with nv_accounts", async () => {
  const a = await dueAccount();
  const res = await call("mp-refresh", { account_id: a.id });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, {
    claimed: 1,
    refreshed: 1,
    failed: 0,
    reauth_required: 0,
    results: [{ account_id: a.id, status: "refreshed" }],
  });
  const row = await account(a.id);
  assert.equal(row.mp_token_version, 2);
  const access = await decrypt(a.id, "access_token", row.mp_access_token_encrypted);
  const refresh = await decrypt(a.id, "refresh_token", row.mp_refresh_token);
  assert.notEqual(access, a.grant.access_token);
  assert.notEqual(refresh, a.grant.refresh_token);
  assert.equal(row.mp_public_key, a.grant.public_key);
  assert.equal(Number(row.mp_user_id), a.grant.user_id);
  assert.equal(row.mp_expires_in, 15552000);
  assert.ok(row.mp_token_expires_at.getTime() > Date.now() + 170 * DAY);
  assert.equal(row.mp_refresh_lease_owner, null);
  assert.ok(row.mp_last_refreshed_at);

  assert.deepEqual(await cache(a.clientId), {
    mp_access_token: access,
    mp_public_key: a.grant.public_key,
    mp_token_version: 2,
  });
  const served = await call("get-mp-config", { client_id: a.clientId });
  assert.equal(served.body.access_token, access);
  assert.equal(served.body.source, "fast_path");

  const events = await adminDb()`
    select event, detail::text from mp_credential_events where account_id = ${a.id}`;
  assert.deepEqual(events.map((e) => e.event), ["refreshed"]);
  assert.doesNotMatch(events[0].detail, /APP_USR|TG-|v1:/);
  const line = JSON.parse(
    await logLine("MP refresh run finished", res.headers.get("x-request-id")!),
  );
  assert.equal(line.claimed, 1);
  assert.equal(line.refreshed, 1);
  // No longer due: the next run leaves it alone.
  assert.equal((await call("mp-refresh", { account_id: a.id })).body.claimed, 0);
});

Deno.test("claim and save in SQL: one owner per lease, compare-and-swap, thin answers keep fields", async () => {
  const a = await dueAccount();
  const [one, two] = [crypto.randomUUID(), crypto.randomUUID()];
  const claim = (owner: string, force = false) =>
    adminDb()`select * from mp_claim_due_accounts(${owner}::uuid, 10, interval '60 days',
      interval '5 minutes', ${a.id}::uuid, ${force})`;
  const [claimed] = await claim(one);
  assert.equal(claimed.id, a.id);
  assert.equal(claimed.mp_token_version, 1);
  assert.ok(claimed.lease_expires_at.getTime() > claimed.db_now.getTime() + 4 * 60_000);
  assert.equal((await claim(two)).length, 0, "a live lease is not claimed again");
  assert.equal((await claim(two, true)).length, 0, "not even by force");

  const access = await encrypt(a.id, "access_token", "APP_USR-thin-access");
  const refresh = await encrypt(a.id, "refresh_token", "TG-thin-refresh");
  const save = (owner: string, version: number) =>
    adminDb()`select * from mp_save_refreshed(${a.id}::uuid, ${owner}::uuid, ${version}::bigint,
      ${access}, ${refresh}, 15552000, now() + interval '180 days')`;
  assert.equal((await save(two, 1)).length, 0, "another owner loses the CAS");
  assert.equal((await save(one, 0)).length, 0, "an old version loses the CAS");
  const [saved] = await save(one, 1);
  assert.equal(saved.mp_token_version, 2);
  assert.equal(saved.mp_public_key, a.grant.public_key);
  assert.equal((await save(one, 1)).length, 0, "the same save twice changes nothing");

  const row = await account(a.id);
  assert.equal(row.mp_token_version, 2);
  assert.equal(row.mp_refresh_token, refresh);
  assert.equal(row.mp_public_key, a.grant.public_key);
  assert.equal(Number(row.mp_user_id), a.grant.user_id);
  assert.equal(row.mp_live_mode, true);
  assert.equal(row.mp_scope, a.grant.scope);
  assert.equal(row.mp_refresh_lease_owner, null);
  assert.equal(row.mp_refresh_lease_expires_at, null);
});

Deno.test("ten mp-refresh runs in parallel over 200 due accounts refresh each exactly once", async () => {
  await drain();
  const grants = await sandbox.grants(200);
  const accounts: { id: string; clientId: string }[] = [];
  for (let i = 0; i < grants.length; i += 20) {
    accounts.push(...await Promise.all(grants.slice(i, i + 20).map((g) => dueAccount(g))));
  }
  const ids = accounts.map((a) => a.id);
  const before = await sandbox.stats();

  const runs = await Promise.all(
    Array.from({ length: 10 }, () => call("mp-refresh", { limit: 30 })),
  );
  const seen = new Map<string, string[]>();
  let claimed = 0;
  for (const run of runs) {
    assert.equal(run.status, 200);
    claimed += run.body.claimed;
    assert.equal(run.body.results.length, run.body.claimed);
    for (const r of run.body.results) {
      // An error code rides with its status, so a rare failure on CI says which path it took.
      const line = r.error ? `${r.status} (${r.error})` : r.status;
      seen.set(r.account_id, [...seen.get(r.account_id) ?? [], line]);
    }
  }
  for (const id of ids) assert.deepEqual(seen.get(id), ["refreshed"], id);
  assert.ok(runs.filter((r) => r.body.claimed > 0).length >= 7, "the work was spread over runs");

  const after = await sandbox.stats();
  assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
  assert.equal(after.token_calls - before.token_calls, claimed, "one MercadoPago call per claim");

  const rows = await adminDb()`
    select id, mp_token_version, mp_access_token_encrypted, backend_client_id
      from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
  assert.equal(rows.length, 200);
  const caches = new Map(
    (await backendDb()`select id, mp_access_token, mp_token_version from clients
      where id = any(${pgArray(accounts.map((a) => a.clientId))}::uuid[])`).map((c) => [c.id, c]),
  );
  for (const row of rows) {
    assert.equal(row.mp_token_version, 2);
    const c = caches.get(row.backend_client_id)!;
    assert.equal(c.mp_token_version, 2);
    assert.equal(
      c.mp_access_token,
      await decrypt(row.id, "access_token", row.mp_access_token_encrypted),
    );
  }
  const [{ events }] = await adminDb()`
    select count(*)::int as events from mp_credential_events
     where event = 'refreshed' and account_id = any(${pgArray(ids)}::uuid[])`;
  assert.equal(events, 200);

  const again = await call("mp-refresh", { limit: 500 });
  assert.ok(!again.body.results.some((r: any) => ids.includes(r.account_id)));
});

Deno.test("a refresher whose lease expired mid-call: its request counts, nobody resends the token; a later last resort wins the compare-and-swap", async () => {
  const a = await dueAccount();
  const [newer] = await sandbox.grants(1);
  await sandbox.hold(true); // the call stays at MercadoPago until the test has done its part
  let res;
  try {
    const pending = call("mp-refresh", { account_id: a.id });
    await sandbox.awaitHeld(1);
    const stale = await eventually(async () => {
      const row = await account(a.id);
      return row.mp_refresh_sends === 1 && row.mp_refresh_lease_owner;
    });
    // Meanwhile its lease runs out. Its request may have reached MercadoPago (invariant 3):
    // no other refresher may send that refresh token again while the token is far from expiry.
    await adminDb()`update nv_accounts set mp_refresh_lease_expires_at = now() - interval '1 second'
      where id = ${a.id}`;
    const other = crypto.randomUUID();
    const claim = () =>
      adminDb()`select * from mp_claim_due_accounts(${other}::uuid, 1,
      interval '60 days', interval '5 minutes', ${a.id}::uuid, true)`;
    assert.equal((await claim()).length, 0, "not claimable, not even by force");
    // Within 7 days of expiry the single last resort may claim it; it saves first.
    await adminDb()`update nv_accounts set mp_token_expires_at = now() + interval '3 days'
      where id = ${a.id}`;
    const [claimed] = await claim();
    assert.equal(claimed.mp_token_version, 1);
    assert.equal(claimed.mp_refresh_sends, 1);
    assert.notEqual(other, stale);
    const [saved] = await adminDb()`select * from mp_save_refreshed(${a.id}::uuid, ${other}::uuid,
      1::bigint, ${await encrypt(a.id, "access_token", newer.access_token)},
      ${await encrypt(a.id, "refresh_token", newer.refresh_token)}, 15552000,
      now() + interval '180 days')`;
    assert.equal(saved.mp_token_version, 2);
    await sandbox.hold(false);
    res = await pending;
  } finally {
    await sandbox.hold(false);
  }
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.results, [
    { account_id: a.id, status: "superseded", error: "superseded" },
  ]);
  assert.equal(res.body.refreshed, 0);
  const row = await account(a.id);
  assert.equal(row.mp_token_version, 2);
  assert.equal(row.mp_refresh_sends, 0, "the saved pair's refresh token is unsent");
  assert.equal(
    await decrypt(a.id, "access_token", row.mp_access_token_encrypted),
    newer.access_token,
  );
  assert.equal(await decrypt(a.id, "refresh_token", row.mp_refresh_token), newer.refresh_token);
  // Compared without printing: a failure must not write a token into the test output.
  assert.ok((await cache(a.clientId)).mp_access_token === null, "the stale pair was not synced");
});

Deno.test("MercadoPago 500 (it may have processed the call): at risk, the refresh token is not sent again, not even by force", async () => {
  const a = await dueAccount();
  await sandbox.faults("error_500", 1);
  const res = await call("mp-refresh", { account_id: a.id });
  assert.deepEqual(res.body.results, [{
    account_id: a.id,
    status: "at_risk",
    error: "server_error",
  }]);
  assert.equal(res.body.failed, 1);
  const [first] = await adminDb()`
    select mp_refresh_failures, mp_refresh_last_error, mp_refresh_lease_owner, mp_token_version,
           mp_refresh_sends, mp_state, mp_state_reason, mp_refresh_next_attempt_at
      from nv_accounts where id = ${a.id}`;
  assert.deepEqual({ ...first }, {
    mp_refresh_failures: 1,
    mp_refresh_last_error: "server_error",
    mp_refresh_lease_owner: null,
    mp_token_version: 1,
    mp_refresh_sends: 1,
    mp_state: "at_risk",
    mp_state_reason: "refresh_unconfirmed",
    mp_refresh_next_attempt_at: null,
  });
  const [state] = await adminDb()`select state, reason, deadline from mp_connection_states
    where account_id = ${a.id}`;
  assert.equal(state.state, "at_risk");
  assert.equal(state.deadline.getTime(), (await account(a.id)).mp_token_expires_at.getTime());

  const before = await sandbox.stats();
  assert.equal((await call("mp-refresh", { account_id: a.id })).body.claimed, 0);
  assert.equal((await call("mp-refresh", { account_id: a.id, force: true })).body.claimed, 0);
  assert.equal((await sandbox.stats()).token_calls, before.token_calls, "never sent again");
  const served = await call("get-mp-config", { client_id: a.clientId });
  assert.equal(served.status, 200);
  assert.ok(served.body.access_token === a.grant.access_token, "the working token is served");
});

Deno.test("MercadoPago timeout: the call is abandoned at MP_HTTP_TIMEOUT_MS and the account is at risk", async () => {
  const a = await dueAccount();
  const ctx = ownContext({ MP_HTTP_TIMEOUT_MS: "500" });
  try {
    await sandbox.faults("timeout", 1);
    const report = await runRefresh(ctx, quietLog, { accountId: a.id });
    assert.deepEqual(report.results, [{ account_id: a.id, status: "at_risk", error: "timeout" }]);
  } finally {
    await sandbox.faults("none", 0);
    await ctx.close();
  }
  const row = await account(a.id);
  assert.equal(row.mp_refresh_failures, 1);
  assert.equal(row.mp_refresh_last_error, "timeout");
  assert.equal(row.mp_refresh_sends, 1);
  assert.equal(row.mp_state, "at_risk");
  assert.equal(row.mp_refresh_lease_owner, null);
  assert.equal(row.mp_token_version, 1);
});

Deno.test("MercadoPago 429: Retry-After is the next attempt time; the account recovers after it", async () => {
  const a = await dueAccount();
  await sandbox.faults("rate_limited", 1);
  const res = await call("mp-refresh", { account_id: a.id });
  assert.deepEqual(res.body.results, [{
    account_id: a.id,
    status: "failed",
    error: "rate_limited",
  }]);
  const [row] = await adminDb()`
    select mp_refresh_failures, mp_refresh_last_error,
           mp_refresh_next_attempt_at > now() - interval '1 minute' as set,
           mp_refresh_next_attempt_at < now() + interval '1 minute' as not_backoff,
           mp_refresh_sends as sends
      from nv_accounts where id = ${a.id}`;
  assert.deepEqual({ ...row }, {
    mp_refresh_failures: 1,
    mp_refresh_last_error: "rate_limited",
    set: true,
    not_backoff: true,
    sends: 0,
  });
  await eventually(async () => {
    const [r] = await adminDb()`select mp_refresh_next_attempt_at <= now() as due
      from nv_accounts where id = ${a.id}`;
    return r.due;
  });
  const again = await call("mp-refresh", { account_id: a.id });
  assert.equal(again.body.results[0].status, "refreshed");
  assert.equal((await account(a.id)).mp_refresh_failures, 0);
});

Deno.test("invalid_grant: needs re-authorization, the access token is still served, no automatic retry", async () => {
  const a = await dueAccount();
  await sandbox.faults("invalid_grant", 1);
  const res = await call("mp-refresh", { account_id: a.id });
  assert.deepEqual(res.body, {
    claimed: 1,
    refreshed: 0,
    failed: 0,
    reauth_required: 1,
    results: [{ account_id: a.id, status: "reauth_required", error: "invalid_grant" }],
  });
  const row = await account(a.id);
  assert.equal(row.mp_needs_reauth, true);
  assert.equal(row.mp_connected, true);
  assert.equal(row.mp_token_version, 1);
  assert.equal(row.mp_refresh_lease_owner, null);
  assert.equal(
    await decrypt(a.id, "access_token", row.mp_access_token_encrypted),
    a.grant.access_token,
  );
  const served = await call("get-mp-config", { client_id: a.clientId });
  assert.equal(served.status, 200);
  assert.equal(served.body.access_token, a.grant.access_token);

  assert.equal((await call("mp-refresh", { account_id: a.id })).body.claimed, 0, "not retried");
  const [{ n }] = await adminDb()`select count(*)::int as n from mp_credential_events
    where account_id = ${a.id} and event = 'reauth_required'`;
  assert.equal(n, 1);

  assert.equal(row.mp_state, "reauth_required");
  assert.equal(row.mp_state_reason, "invalid_grant");
  // The refused refresh token reached MercadoPago: not even force sends it again (invariant 3).
  const before = await sandbox.stats();
  const forced = await call("mp-refresh", { account_id: a.id, force: true });
  assert.equal(forced.body.claimed, 0);
  assert.equal((await sandbox.stats()).token_calls, before.token_calls);
  // The seller connecting again ends it.
  const [seller] = await sandbox.grants(1);
  const [saved] = await adminDb()`select * from mp_save_connection(${a.id}::uuid,
    ${a.grant.user_id}::bigint, ${await encrypt(a.id, "access_token", seller.access_token)},
    ${await encrypt(a.id, "refresh_token", seller.refresh_token)}, 'APP_USR-pk', 15552000, true,
    'offline_access', false)`;
  assert.equal(saved.result, "connected");
  const after = await account(a.id);
  assert.equal(after.mp_needs_reauth, false);
  assert.equal(after.mp_state, "connected");
  assert.equal(after.mp_refresh_sends, 0);
});

Deno.test("bad accounts (undecryptable, rejected token) do not hold up the others in a run", async () => {
  await drain();
  const good = await dueAccount();
  const rejected = await dueAccount({
    ...(await sandbox.grants(1))[0],
    refresh_token: `TG-${crypto.randomUUID()}-unknown`,
  });
  const broken = await dueAccount();
  await adminDb()`update nv_accounts
    set mp_refresh_token = ${await encrypt(good.id, "refresh_token", "TG-moved")}
    where id = ${broken.id}`;

  const res = await call("mp-refresh", { limit: 500 });
  const status = (id: string) => res.body.results.find((r: any) => r.account_id === id);
  assert.deepEqual(status(good.id), { account_id: good.id, status: "refreshed" });
  assert.deepEqual(status(rejected.id), {
    account_id: rejected.id,
    status: "reauth_required",
    error: "invalid_grant",
  });
  assert.deepEqual(status(broken.id), {
    account_id: broken.id,
    status: "failed",
    error: "decrypt_failed",
  });
  await logLine("Stored MP credential failed to decrypt", broken.id);
  const next = await call("mp-refresh", { limit: 500 });
  const ids = [good.id, rejected.id, broken.id];
  assert.ok(!next.body.results.some((r: any) => ids.includes(r.account_id)));
});

Deno.test("past its time budget, or with too short a lease, a run calls nobody and releases leases", async () => {
  const a = await dueAccount();
  const ctx = ownContext();
  const before = await sandbox.stats();
  try {
    const late = await runRefresh(ctx, quietLog, { accountId: a.id, budgetMs: 0 });
    assert.deepEqual(late.results, [{ account_id: a.id, status: "skipped", error: "time_budget" }]);
    assert.equal((await account(a.id)).mp_refresh_lease_owner, null);
    const short = await runRefresh(ctx, quietLog, { accountId: a.id, leaseMs: 1000 });
    assert.deepEqual(short.results, [
      { account_id: a.id, status: "skipped", error: "lease_too_short" },
    ]);
    assert.equal((await account(a.id)).mp_refresh_lease_owner, null);
  } finally {
    await ctx.close();
  }
  assert.equal((await sandbox.stats()).token_calls, before.token_calls);
  assert.equal((await account(a.id)).mp_token_version, 1);
});

Deno.test("a hanging Backend DB: the escrow cannot be checked, so MercadoPago is not called", async () => {
  const a = await dueAccount();
  const before = await sandbox.stats();
  const backend = cluster("backend");
  let res;
  try {
    await backend.freeze(true);
    res = await call("mp-refresh", { account_id: a.id });
  } finally {
    await backend.freeze(false);
  }
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.results, [
    { account_id: a.id, status: "skipped", error: "escrow_unavailable" },
  ]);
  assert.equal((await sandbox.stats()).token_calls, before.token_calls);
  const row = await account(a.id);
  assert.equal(row.mp_refresh_lease_owner, null);
  assert.equal(row.mp_refresh_failures, 0);
  assert.equal((await call("mp-refresh", { account_id: a.id })).body.refreshed, 1);
});

Deno.test("Admin DB stopped after MercadoPago answered: the rotated pair is escrowed, then applied", async () => {
  const a = await dueAccount();
  const before = await sandbox.stats();
  const admin = cluster("admin");
  await sandbox.hold(true);
  let res;
  try {
    const pending = call("mp-refresh", { account_id: a.id });
    await sandbox.awaitHeld(1);
    await admin.stop(); // while the MercadoPago call is in flight
    await sandbox.hold(false); // MercadoPago answers only now
    res = await pending;
  } finally {
    await sandbox.hold(false);
    await admin.start();
    await closeDbs();
  }
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.results, [
    { account_id: a.id, status: "escrowed", error: "admin_unavailable" },
  ]);
  const [escrow] = await backendDb()`select * from mp_refresh_escrow where account_id = ${a.id}`;
  assert.equal(escrow.base_version, 1);
  const parked = await decrypt(a.id, "refresh_token", escrow.refresh_token_encrypted);
  const parkedAccess = await decrypt(a.id, "access_token", escrow.access_token_encrypted);
  assert.notEqual(parked, a.grant.refresh_token);
  await logLine("Refreshed MP token pair escrowed", a.id);

  const stuck = await account(a.id);
  assert.equal(stuck.mp_token_version, 1);
  assert.ok(stuck.mp_refresh_lease_owner, "the lease could not be released while down");
  // Time passes: the lease runs out. Not even due, the account is claimable: a pair waits.
  await adminDb()`update nv_accounts set mp_refresh_lease_expires_at = now() - interval '1 second',
    mp_token_expires_at = now() + interval '170 days' where id = ${a.id}`;
  const mid = await sandbox.stats();
  const applied = await call("mp-refresh", { account_id: a.id });
  assert.deepEqual(applied.body, {
    claimed: 1,
    refreshed: 1,
    failed: 0,
    reauth_required: 0,
    results: [{ account_id: a.id, status: "escrow_applied" }],
  });
  assert.equal((await sandbox.stats()).token_calls, mid.token_calls, "MercadoPago not called");
  const row = await account(a.id);
  assert.equal(row.mp_token_version, 2);
  assert.equal(await decrypt(a.id, "refresh_token", row.mp_refresh_token), parked);
  assert.equal(await decrypt(a.id, "access_token", row.mp_access_token_encrypted), parkedAccess);
  assert.equal(row.mp_refresh_lease_owner, null);
  assert.equal((await cache(a.clientId)).mp_access_token, parkedAccess);
  const left = await backendDb()`select 1 from mp_refresh_escrow where account_id = ${a.id}`;
  assert.equal(left.length, 0);

  // The escrowed refresh token is the live one: it refreshes, and nothing was sent twice.
  const forced = await call("mp-refresh", { account_id: a.id, force: true });
  assert.equal(forced.body.results[0].status, "refreshed");
  assert.equal((await account(a.id)).mp_token_version, 3);
  assert.equal((await sandbox.stats()).refresh_token_reuse, before.refresh_token_reuse);
  const events = await adminDb()`select event from mp_credential_events
    where account_id = ${a.id} order by id`;
  assert.deepEqual(events.map((e) => e.event), ["escrow_applied", "refreshed"]);
});

Deno.test("an escrowed pair from an older version is discarded, not applied", async () => {
  const a = await dueAccount();
  const [old] = await sandbox.grants(1);
  await backendDb()`insert into mp_refresh_escrow ${
    backendDb()({
      account_id: a.id,
      base_version: 0,
      access_token_encrypted: await encrypt(a.id, "access_token", old.access_token),
      refresh_token_encrypted: await encrypt(a.id, "refresh_token", old.refresh_token),
      expires_in: old.expires_in,
      token_expires_at: new Date(Date.now() + 180 * DAY),
    })
  }`;
  const res = await call("mp-refresh", { account_id: a.id });
  assert.deepEqual(res.body.results, [{ account_id: a.id, status: "refreshed" }]);
  const row = await account(a.id);
  assert.equal(row.mp_token_version, 2);
  assert.notEqual(
    await decrypt(a.id, "access_token", row.mp_access_token_encrypted),
    old.access_token,
  );
  assert.equal(
    (await backendDb()`select 1 from mp_refresh_escrow where account_id = ${a.id}`).length,
    0,
  );
  const events = await adminDb()`select event from mp_credential_events
    where account_id = ${a.id} order by id`;
  assert.deepEqual(events.map((e) => e.event), ["escrow_discarded", "refreshed"]);
});

Deno.test("the real pg_cron job (on a 1-minute test schedule) refreshes a due account end to end", async () => {
  await drain();
  const a = await dueAccount();
  const [{ start }] = await backendDb()`select now() as start`;
  const job = await refreshJob();
  try {
    await backendDb()`select cron.alter_job(${job.jobid}::bigint, schedule := '* * * * *',
      active := true)`;
    await eventually(async () => (await account(a.id)).mp_token_version === 2, 90_000);
    const response = await eventually(async () => {
      const [r] = await backendDb()`select status_code, content from net._http_response
        where created >= ${start} and content like ${`%${a.id}%`}`;
      return r;
    }, 20_000);
    assert.equal(response.status_code, 200);
    const body = JSON.parse(response.content);
    assert.deepEqual(body.results.find((r: any) => r.account_id === a.id), {
      account_id: a.id,
      status: "refreshed",
    });
    const [run] = await backendDb()`select status, username from cron.job_run_details
      where jobid = ${job.jobid}::bigint and start_time >= ${start} order by start_time limit 1`;
    assert.equal(run.status, "succeeded");
    assert.equal(run.username, "postgres", "the job fired as postgres");
  } finally {
    // Back to the real schedule, paused again until this file's tests are over.
    await backendDb()`select cron.alter_job(${job.jobid}::bigint, schedule := '*/10 * * * *',
      active := false)`;
  }
  const row = await account(a.id);
  assert.equal(
    (await cache(a.clientId)).mp_access_token,
    await decrypt(a.id, "access_token", row.mp_access_token_encrypted),
  );
  assert.equal((await refreshJob()).schedule, "*/10 * * * *");
});
