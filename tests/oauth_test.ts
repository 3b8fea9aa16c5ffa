// deno-lint-ignore-file no-explicit-any
/**
 * OAuth connect and deauthorization (docs/contract.md, mp-oauth-callback, mp-webhook), as a browser and MercadoPago drive them:
 * mp-oauth-start → the sandbox's authorization redirect → mp-oauth-callback → 302 to
 * APP_RETURN_URL, following Location headers by hand; and signed mp-webhook notifications.
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
  newAccount,
  newClient,
  newSeller,
  provisionedPair,
  sandbox,
  stack,
  stackLog,
} from "./_stack.ts";
import { decryptSecret, encryptSecret } from "../shared/platform/crypto.ts";
import type { Sql } from "../shared/platform/db.ts";
import { hashState, pkceChallenge, randomToken } from "../shared/oauth/state_token.ts";
import { signatureManifest, signManifest } from "../shared/mercadopago/signature.ts";

const CALLBACK_URL = () => `${stack.functionsUrl}/mp-oauth-callback`;

/** mp-oauth-start for an account: the authorization URL. */
async function start(accountId: string): Promise<URL> {
  const res = await call("mp-oauth-start", { account_id: accountId });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return new URL(res.body.url);
}

/** Follows the authorization URL at the sandbox (with extra query), returning its redirect. */
async function authorize(url: URL, extra: Record<string, string> = {}): Promise<URL> {
  const target = new URL(url);
  for (const [k, v] of Object.entries(extra)) target.searchParams.set(k, v);
  const res = await fetch(target, { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.status, 302);
  const location = new URL(res.headers.get("location")!);
  assert.equal(location.origin + location.pathname, CALLBACK_URL());
  return location;
}

/** Calls the callback as the browser does; it must 302 to APP_RETURN_URL. */
async function callback(url: URL | string, init: RequestInit = {}): Promise<URL> {
  const res = await fetch(url, { redirect: "manual", ...init });
  assert.equal(res.headers.get("content-type"), null, "the callback never answers JSON");
  await res.body?.cancel();
  assert.equal(res.status, 302);
  const location = new URL(res.headers.get("location")!);
  assert.equal(location.origin + location.pathname, stack.appReturnUrl);
  return location;
}

/** The whole connect flow for an account; `extra` goes to the authorization request. */
async function connect(accountId: string, extra: Record<string, string> = {}): Promise<URL> {
  return await callback(await authorize(await start(accountId), extra));
}

function assertConnected(location: URL, accountId: string) {
  assert.equal(location.searchParams.get("mp"), "connected", location.href);
  assert.equal(location.searchParams.get("account_id"), accountId);
}

function assertFailed(location: URL, reason: string) {
  assert.equal(location.searchParams.get("mp"), "error", location.href);
  assert.equal(location.searchParams.get("reason"), reason);
  assert.equal(location.searchParams.get("account_id"), null);
}

async function account(id: string): Promise<any> {
  const [row] = await adminDb()`select * from nv_accounts where id = ${id}`;
  return row;
}

/** Asserts the account holds no MercadoPago credentials, at `version` (0: never connected). */
async function assertNothingStored(id: string, version = 0) {
  const row = await account(id);
  assert.equal(row.mp_connected, false);
  assert.equal(row.mp_access_token_encrypted, null);
  assert.equal(row.mp_refresh_token, null);
  assert.equal(row.mp_public_key, null);
  assert.equal(row.mp_token_version, version);
  if (version === 0) assert.equal(row.mp_user_id, null);
}

async function events(accountId: string): Promise<{ event: string; detail: any }[]> {
  return await adminDb()`
    select event, detail from mp_credential_events where account_id = ${accountId} order by id`;
}

async function stateOf(accountId: string): Promise<any[]> {
  return await adminDb()`
    select * from mp_oauth_states where account_id = ${accountId} order by created_at`;
}

const sellerOf = (callbackUrl: URL) => Number(callbackUrl.searchParams.get("code")!.split("-")[2]);

/** Sends a signed mp-connect notification as MercadoPago does. */
async function webhook(
  body: Record<string, unknown>,
  opts: {
    secret?: string;
    ts?: string;
    requestId?: string;
    signedDataId?: string;
    header?: string | null;
  } = {},
) {
  const requestId = opts.requestId ?? crypto.randomUUID();
  const ts = opts.ts ?? String(Math.floor(Date.now() / 1000));
  const dataId = String((body.data as any)?.id);
  const v1 = await signManifest(
    opts.secret ?? stack.webhookSecret,
    signatureManifest({ dataId: opts.signedDataId ?? dataId, requestId, ts }),
  );
  const headers: Record<string, string> = { "x-request-id": requestId };
  const header = opts.header === undefined ? `ts=${ts},v1=${v1}` : opts.header;
  if (header !== null) headers["x-signature"] = header;
  return await call("mp-webhook", body, {
    key: null,
    headers,
    query: `?data.id=${encodeURIComponent(dataId)}&type=mp-connect`,
  });
}

function deauthorization(userId: number) {
  return {
    action: "application.deauthorized",
    api_version: "v1",
    data: { id: String(userId) },
    date_created: new Date().toISOString(),
    id: crypto.randomUUID(),
    live_mode: true,
    type: "mp-connect",
    user_id: userId,
    version: 1,
  };
}

Deno.test("connect: start → authorization → callback → connected; master encrypted, cache plain", async () => {
  const clientId = await newClient();
  const accountId = await newAccount({ clientId });
  const before = Date.now();
  const res = await call("mp-oauth-start", { account_id: accountId });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  const url = new URL(res.body.url);
  const q = url.searchParams;
  assert.equal(url.origin + url.pathname, `${stack.env("MP_AUTH_URL")}/authorization`);
  assert.deepEqual([...q.keys()].sort(), [
    "client_id",
    "code_challenge",
    "code_challenge_method",
    "platform_id",
    "redirect_uri",
    "response_type",
    "state",
  ]);
  assert.equal(q.get("client_id"), stack.env("MP_CLIENT_ID"));
  assert.equal(q.get("response_type"), "code");
  assert.equal(q.get("platform_id"), "mp");
  assert.equal(q.get("redirect_uri"), stack.env("MP_REDIRECT_URI"));
  assert.equal(q.get("code_challenge_method"), "S256");
  const state = q.get("state")!;
  assert.match(state, /^[A-Za-z0-9_-]{43}$/, "256 random bits, base64url");
  const expiresAt = Date.parse(res.body.expires_at);
  assert.ok(expiresAt > before + 9 * 60_000 && expiresAt < Date.now() + 11 * 60_000);

  // Only the state's hash is stored; the verifier is encrypted for this account's row.
  const [stored] = await stateOf(accountId);
  assert.equal(stored.state_hash, await hashState(state));
  assert.ok(!Object.values(stored).some((v) => String(v).includes(state)));
  const keys = await keyRing();
  const verifier = await decryptSecret(
    keys,
    accountId,
    "code_verifier",
    stored.code_verifier_encrypted,
  );
  assert.equal(await pkceChallenge(verifier), q.get("code_challenge"));
  await assert.rejects(
    decryptSecret(keys, crypto.randomUUID(), "code_verifier", stored.code_verifier_encrypted),
    { code: "decrypt_failed" },
  );

  const back = await authorize(url);
  assert.equal(back.searchParams.get("state"), state);
  const code = back.searchParams.get("code")!;
  const location = await callback(back);
  assertConnected(location, accountId);

  const row = await account(accountId);
  const keyId = stack.env("MP_TOKEN_KEYS").split(":")[0];
  assert.equal(row.mp_connected, true);
  assert.equal(row.mp_token_version, 1);
  assert.equal(row.mp_user_id, sellerOf(back));
  assert.ok(row.mp_access_token_encrypted.startsWith(`v1:${keyId}:`));
  assert.ok(row.mp_refresh_token.startsWith(`v1:${keyId}:`));
  const accessToken = await decryptSecret(
    keys,
    accountId,
    "access_token",
    row.mp_access_token_encrypted,
  );
  const refreshToken = await decryptSecret(keys, accountId, "refresh_token", row.mp_refresh_token);
  assert.match(accessToken, /^APP_USR-/);
  assert.match(refreshToken, /^TG-/);
  await assert.rejects(
    decryptSecret(keys, accountId, "refresh_token", row.mp_access_token_encrypted),
    { code: "decrypt_failed" },
  );
  assert.match(row.mp_public_key, /^APP_USR-/);
  assert.equal(row.mp_expires_in, 15552000);
  const expiresIn = (row.mp_token_expires_at.getTime() - Date.now()) / 1000;
  assert.ok(Math.abs(expiresIn - 15552000) < 120, `expires in ${expiresIn}s`);
  assert.equal(row.mp_live_mode, true);
  assert.equal(typeof row.mp_scope, "string");
  assert.ok(row.mp_connected_at instanceof Date);

  const [cache] = await backendDb()`
    select mp_access_token, mp_public_key, mp_token_version from clients where id = ${clientId}`;
  assert.deepEqual(cache, {
    mp_access_token: accessToken,
    mp_public_key: row.mp_public_key,
    mp_token_version: 1,
  });
  const config = await call("get-mp-config", { client_id: clientId });
  assert.equal(config.status, 200);
  assert.equal(config.body.source, "fast_path");
  assert.equal(config.body.access_token, accessToken);

  const [used] = await stateOf(accountId);
  assert.ok(used.consumed_at instanceof Date);
  assert.equal(used.outcome, "connected");
  assert.equal(used.code_verifier_encrypted, null, "the verifier is dropped once used");

  // Audit trail: start and connect recorded, no secret in it.
  const trail = await events(accountId);
  assert.deepEqual(trail.map((e) => e.event), ["oauth_started", "connected"]);
  assert.equal(trail[1].detail.mp_user_id, row.mp_user_id);
  assert.equal(trail[1].detail.token_version, 1);
  assert.equal(trail[1].detail.sync, "synced");
  const text = JSON.stringify(trail);
  for (const secret of [accessToken, refreshToken, code, verifier, state, "v1:"]) {
    assert.ok(!text.includes(secret), "no secret in the audit trail");
  }
  await closeDbs();
});

Deno.test("connect: a declined authorization stores nothing and says access_denied", async () => {
  const accountId = await newAccount();
  const back = await authorize(await start(accountId), { deny: "1" });
  assert.equal(back.searchParams.get("error"), "access_denied");
  assert.equal(back.searchParams.get("code"), null);
  assertFailed(await callback(back), "access_denied");
  await assertNothingStored(accountId);
  const [state] = await stateOf(accountId);
  assert.equal(state.outcome, "access_denied");
  // The state was used up by the decline.
  assertFailed(await callback(back), "invalid_state");
  assert.deepEqual((await events(accountId)).map((e) => e.event), [
    "oauth_started",
    "declined",
    "oauth_state_rejected",
  ]);
  await closeDbs();
});

Deno.test("connect: unknown, forged, malformed and missing states store nothing", async () => {
  const accountId = await newAccount();
  const url = await start(accountId);
  // A forged state with a genuine code: refused before the code is exchanged.
  const forged = await authorize(url, { state: randomToken() });
  assertFailed(await callback(forged), "invalid_state");
  const noState = new URL(forged);
  noState.searchParams.delete("state");
  assertFailed(await callback(noState), "invalid_state");
  const malformed = new URL(forged);
  malformed.searchParams.set("state", "x'; drop table nv_accounts; --");
  assertFailed(await callback(malformed), "invalid_state");
  assertFailed(await callback(CALLBACK_URL()), "invalid_state");
  await assertNothingStored(accountId);
  // The genuine state was not touched: it still connects.
  assertConnected(await callback(await authorize(url)), accountId);
  await closeDbs();
});

Deno.test("connect: an expired state stores nothing", async () => {
  const accountId = await newAccount();
  const url = await start(accountId);
  await adminDb()`update mp_oauth_states set expires_at = now() - interval '1 second'
    where state_hash = ${await hashState(url.searchParams.get("state")!)}`;
  assertFailed(await callback(await authorize(url)), "invalid_state");
  await assertNothingStored(accountId);
  const [state] = await stateOf(accountId);
  assert.equal(state.consumed_at, null);
  const rejected = (await events(accountId)).find((e) => e.event === "oauth_state_rejected");
  assert.equal(rejected?.detail.cause, "expired");
  await closeDbs();
});

Deno.test("connect: a state is bound to its account (cross-account state)", async () => {
  const a = await newAccount();
  const b = await newAccount();
  const urlA = await start(a);
  const urlB = await start(b);
  // A's code with B's state (and a misleading account_id): B's verifier does not match A's
  // challenge, so MercadoPago refuses the code and neither account gets anything.
  const backA = await authorize(urlA);
  const crossed = new URL(backA);
  crossed.searchParams.set("state", urlB.searchParams.get("state")!);
  crossed.searchParams.set("account_id", a);
  assertFailed(await callback(crossed), "exchange_failed");
  await assertNothingStored(a);
  await assertNothingStored(b);
  // A's own state connects A, whatever account_id the query claims.
  const again = await authorize(urlA);
  again.searchParams.set("account_id", b);
  assertConnected(await callback(again), a);
  assert.equal((await account(a)).mp_connected, true);
  await assertNothingStored(b);
  await closeDbs();
});

Deno.test("connect: a wrong PKCE verifier or one sealed for another row stores nothing", async () => {
  const keys = await keyRing();
  const accountId = await newAccount();
  const url = await start(accountId);
  const hash = await hashState(url.searchParams.get("state")!);
  const wrong = await encryptSecret(keys, accountId, "code_verifier", randomToken());
  await adminDb()`update mp_oauth_states set code_verifier_encrypted = ${wrong}
    where state_hash = ${hash}`;
  assertFailed(await callback(await authorize(url)), "exchange_failed");
  await assertNothingStored(accountId);
  const failed = (await events(accountId)).find((e) => e.event === "exchange_failed");
  assert.equal(failed?.detail.kind, "invalid_grant");

  const url2 = await start(accountId);
  const hash2 = await hashState(url2.searchParams.get("state")!);
  const foreign = await encryptSecret(keys, crypto.randomUUID(), "code_verifier", randomToken());
  await adminDb()`update mp_oauth_states set code_verifier_encrypted = ${foreign}
    where state_hash = ${hash2}`;
  assertFailed(await callback(await authorize(url2)), "decrypt_failed");
  await assertNothingStored(accountId);
  await closeDbs();
});

Deno.test("connect: MercadoPago 500 or timeout on the exchange → exchange_failed, nothing stored", async () => {
  const accountId = await newAccount();
  for (const [mode, kind] of [["error_500", "server_error"], ["timeout", "timeout"]]) {
    const back = await authorize(await start(accountId));
    await sandbox.faults(mode, 1);
    try {
      assertFailed(await callback(back), "exchange_failed");
    } finally {
      await sandbox.faults("none", 0);
    }
    await assertNothingStored(accountId);
    const failed = (await events(accountId)).filter((e) => e.event === "exchange_failed");
    assert.equal(failed.at(-1)?.detail.kind, kind);
  }
  assertConnected(await connect(accountId), accountId);
  await closeDbs();
});

Deno.test("connect: a double-clicked callback connects once; both land on connected", async () => {
  const clientId = await newClient();
  const accountId = await newAccount({ clientId });
  const back = await authorize(await start(accountId));
  const [first, second] = await Promise.all([callback(back), callback(back)]);
  assertConnected(first, accountId);
  assertConnected(second, accountId);
  const row = await account(accountId);
  assert.equal(row.mp_token_version, 1);
  assert.equal((await events(accountId)).filter((e) => e.event === "connected").length, 1);
  // A later repeat stores nothing either.
  assertConnected(await callback(back), accountId);
  const after = await account(accountId);
  assert.equal(after.mp_token_version, 1);
  assert.equal(after.mp_access_token_encrypted, row.mp_access_token_encrypted);
  // Once the account is revoked, the old callback no longer claims it is connected.
  assert.equal((await call("mp-revoke", { account_id: accountId })).status, 200);
  assertFailed(await callback(back), "invalid_state");
  await assertNothingStored(accountId, 2);
  await closeDbs();
});

Deno.test("connect: reconnect after revoke; connect clears re-authorization and failure state", async () => {
  const clientId = await newClient();
  const accountId = await newAccount({ clientId });
  assertConnected(await connect(accountId), accountId);
  const first = await call("get-mp-config", { client_id: clientId });
  assert.equal(first.status, 200);

  assert.equal((await call("mp-revoke", { account_id: accountId })).status, 200);
  const gone = await call("get-mp-config", { client_id: clientId });
  assert.equal(gone.status, 404);
  assert.equal(gone.body.error.code, "mp_not_connected");

  await adminDb()`update nv_accounts set mp_needs_reauth = true, mp_refresh_failures = 3,
    mp_refresh_next_attempt_at = now() + interval '1 hour', mp_refresh_last_error = 'invalid_grant',
    mp_refresh_lease_owner = ${crypto.randomUUID()},
    mp_refresh_lease_expires_at = now() + interval '1 minute'
    where id = ${accountId}`;
  // The same seller reconnects (another seller needs replace_seller: see the seller tests).
  const seller = String((await account(accountId)).mp_user_id);
  assertConnected(await connect(accountId, { user_id: seller }), accountId);
  const row = await account(accountId);
  assert.equal(row.mp_token_version, 3);
  assert.equal(row.mp_connected, true);
  assert.equal(row.mp_needs_reauth, false);
  assert.equal(row.mp_refresh_failures, 0);
  assert.equal(row.mp_refresh_next_attempt_at, null);
  assert.equal(row.mp_refresh_last_error, null);
  assert.equal(row.mp_refresh_lease_owner, null);
  assert.equal(row.mp_refresh_lease_expires_at, null);
  const second = await call("get-mp-config", { client_id: clientId });
  assert.equal(second.status, 200);
  assert.equal(second.body.source, "fast_path");
  assert.equal(second.body.token_version, 3);
  assert.notEqual(second.body.access_token, first.body.access_token);
  await closeDbs();
});

Deno.test("connect: a MercadoPago seller already connected elsewhere is refused (mp_account_in_use)", async () => {
  const seller = String(newSeller());
  const a = await newAccount();
  const b = await newAccount();
  assertConnected(await connect(a, { user_id: seller }), a);
  assertFailed(await connect(b, { user_id: seller }), "mp_account_in_use");
  await assertNothingStored(b);
  const rejected = (await events(b)).find((e) => e.event === "connect_rejected");
  assert.equal(rejected?.detail.reason, "mp_account_in_use");
  assert.equal(rejected?.detail.other_account_id, a);
  assert.equal((await account(a)).mp_token_version, 1);
  // The same account reconnecting to its own seller is fine.
  assertConnected(await connect(a, { user_id: seller }), a);
  // Once A lets the seller go, B may take it.
  assert.equal((await call("mp-revoke", { account_id: a })).status, 200);
  assertConnected(await connect(b, { user_id: seller }), b);
  assert.equal((await account(b)).mp_user_id, Number(seller));
  await closeDbs();
});

Deno.test("connect: two accounts connecting the same seller at once: exactly one wins", async () => {
  const seller = String(newSeller());
  const ids = [await newAccount(), await newAccount(), await newAccount()];
  const backs = await Promise.all(
    ids.map(async (id) => authorize(await start(id), { user_id: seller })),
  );
  const results = await Promise.all(backs.map((back) => callback(back)));
  const won = results.filter((r) => r.searchParams.get("mp") === "connected");
  assert.equal(won.length, 1, results.map((r) => r.search).join(" "));
  for (const r of results) {
    if (r !== won[0]) assertFailed(r, "mp_account_in_use");
  }
  const [{ connected }] = await adminDb()`select count(*)::int as connected from nv_accounts
    where mp_user_id = ${Number(seller)} and mp_connected`;
  assert.equal(connected, 1);
  await closeDbs();
});

Deno.test("mp_save_connection: a concurrent save of the same seller waits for the first, then is refused", async () => {
  const seller = newSeller();
  const a = await newAccount();
  const b = await newAccount();
  const db = adminDb();
  const save = (sql: Sql, id: string) =>
    sql`select result, other_account_id from mp_save_connection(${id}::uuid,
      ${seller}::bigint, 'v1:k:x', 'v1:k:y', 'APP_USR-pk', 100, true, 'read', false)`;
  const first = await db.reserve();
  const second = await db.reserve();
  try {
    await first`begin`;
    const [saved] = await save(first, a);
    assert.equal(saved.result, "connected");
    const [{ pid }] = await second`select pg_backend_pid() as pid`;
    const racing = save(second, b).execute(); // postgres.js sends a query when asked to
    await eventually(async () => {
      const [row] = await db`select wait_event_type from pg_stat_activity where pid = ${pid}`;
      return row?.wait_event_type === "Lock";
    });
    await first`commit`;
    const [refused] = await racing;
    assert.equal(refused.result, "mp_account_in_use");
    assert.equal(refused.other_account_id, a);
  } finally {
    first.release();
    second.release();
  }
  await assertNothingStored(b);
  await closeDbs();
});

Deno.test("connect: a failed sync after the save keeps the connection; the fallback repairs it", async () => {
  const clientId = await newClient();
  const accountId = await newAccount({ clientId });
  const back = await authorize(await start(accountId));
  const backend = cluster("backend");
  await backend.stop();
  let location: URL;
  try {
    location = await callback(back);
  } finally {
    await backend.start();
    await closeDbs();
  }
  assertConnected(location, accountId);
  const row = await account(accountId);
  assert.equal(row.mp_connected, true);
  assert.equal(row.mp_token_version, 1);
  const connected = (await events(accountId)).find((e) => e.event === "connected");
  assert.equal(connected?.detail.sync, "failed");
  assert.match(await stackLog(), /Sync after connect failed/);
  const config = await call("get-mp-config", { client_id: clientId });
  assert.equal(config.status, 200);
  assert.equal(config.body.source, "fallback");
  assert.equal(config.body.token_version, 1);
  const repaired = await call("get-mp-config", { client_id: clientId });
  assert.equal(repaired.body.source, "fast_path");
  await closeDbs();
});

Deno.test("mp-oauth-start: key, input, unknown account, method", async () => {
  const accountId = await newAccount();
  const noKey = await call("mp-oauth-start", { account_id: accountId }, { key: null });
  assert.equal(noKey.status, 401);
  assert.equal(noKey.body.error.code, "unauthorized");
  const badId = await call("mp-oauth-start", { account_id: "nope" });
  assert.equal(badId.status, 400);
  assert.equal(badId.body.error.code, "invalid_request");
  const extra = await call("mp-oauth-start", { account_id: accountId, redirect_uri: "x" });
  assert.equal(extra.status, 400);
  const unknown = await call("mp-oauth-start", { account_id: crypto.randomUUID() });
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, "account_not_found");
  const get = await call("mp-oauth-start", undefined, { query: `?account_id=${accountId}` });
  assert.equal(get.status, 405);
  assert.equal((await stateOf(accountId)).length, 0);
  const post = await fetch(CALLBACK_URL(), { method: "POST", body: "{}" });
  assert.equal(post.status, 405);
  await post.body?.cancel();
  await closeDbs();
});

Deno.test("webhook: a confirmed application.deauthorized revokes every account of the seller; replay is a no-op", async () => {
  const seller = newSeller();
  const one = await provisionedPair(seller);
  const two = await provisionedPair(seller);
  const other = await provisionedPair(newSeller());
  for (const p of [one, two]) {
    assert.equal((await call("get-mp-config", { client_id: p.clientId })).status, 200);
  }

  // The seller removes the application at MercadoPago: its tokens stop working there.
  assert.equal((await sandbox.post("deauthorize", { user_id: seller })).ok, true);
  const note = deauthorization(seller);
  const requestId = crypto.randomUUID();
  const ts = String(Date.now()); // milliseconds are accepted as well as seconds
  const res = await webhook(note, { requestId, ts });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.revoked, 2);
  for (const p of [one, two]) {
    const config = await call("get-mp-config", { client_id: p.clientId });
    assert.equal(config.status, 404);
    assert.equal(config.body.error.code, "mp_not_connected");
    await assertNothingStored(p.accountId, 2);
    const revoked = (await events(p.accountId)).find((e) => e.event === "revoked");
    assert.equal(revoked?.detail.reason, "mp_deauthorized");
  }
  assert.equal((await call("get-mp-config", { client_id: other.clientId })).status, 200);
  const [deauth] = await adminDb()`select detail from mp_credential_events
    where event = 'deauthorized' and (detail->>'mp_user_id')::bigint = ${seller}`;
  assert.equal(deauth.detail.revoked, 2);

  // The seller connects again; the same notification delivered again changes nothing.
  assertConnected(await connect(one.accountId, { user_id: String(seller) }), one.accountId);
  const replay = await webhook(note, { requestId, ts });
  assert.equal(replay.status, 200);
  assert.equal(replay.body.duplicate, true);
  assert.equal((await account(one.accountId)).mp_connected, true);
  assert.equal((await call("get-mp-config", { client_id: one.clientId })).status, 200);

  // application.authorized and other notifications are acknowledged and change nothing.
  const authorized = await webhook({
    ...deauthorization(seller),
    action: "application.authorized",
  });
  assert.equal(authorized.status, 200);
  assert.equal(authorized.body.received, true);
  const payment = await webhook({ action: "payment.created", type: "payment", data: { id: "42" } });
  assert.equal(payment.status, 200);
  assert.equal((await account(one.accountId)).mp_token_version, 3);
  await closeDbs();
});

Deno.test("webhook: bad, stale, missing or misapplied signatures → 401 and nothing changes", async () => {
  const seller = newSeller();
  const pair = await provisionedPair(seller);
  const note = deauthorization(seller);
  const old = String(Math.floor(Date.now() / 1000) - 6 * 60);
  const cases: [string, Parameters<typeof webhook>[1]][] = [
    ["wrong secret", { secret: "not-the-secret" }],
    ["stale ts", { ts: old }],
    ["stale ts in ms", { ts: String(Date.now() - 6 * 60_000) }],
    ["future ts", { ts: String(Math.floor(Date.now() / 1000) + 6 * 60) }],
    ["another data.id", { signedDataId: "123" }],
    ["no header", { header: null }],
    ["malformed header", { header: "v1=abc" }],
    ["garbage v1", { header: `ts=${Math.floor(Date.now() / 1000)},v1=zz` }],
  ];
  for (const [what, opts] of cases) {
    const res = await webhook(note, opts);
    assert.equal(res.status, 401, what);
    assert.equal(res.body.error.code, "unauthorized", what);
  }
  // A valid signature over a different x-request-id than the one sent.
  const ts = String(Math.floor(Date.now() / 1000));
  const v1 = await signManifest(
    stack.webhookSecret,
    signatureManifest({ dataId: String(seller), requestId: "signed-id", ts }),
  );
  const swapped = await call("mp-webhook", note, {
    key: null,
    headers: { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": "another-id" },
    query: `?data.id=${seller}`,
  });
  assert.equal(swapped.status, 401);
  // A malformed body with a bad signature is a 401 too; with a good one, a 400.
  const junk = await call("mp-webhook", "{not json", { key: null, query: `?data.id=${seller}` });
  assert.equal(junk.status, 401);
  const signedJunk = await call("mp-webhook", "{not json", {
    key: null,
    headers: {
      "x-signature": `ts=${ts},v1=${await signManifest(
        stack.webhookSecret,
        signatureManifest({ dataId: String(seller), requestId: "junk-id", ts }),
      )}`,
      "x-request-id": "junk-id",
    },
    query: `?data.id=${seller}`,
  });
  assert.equal(signedJunk.status, 400);
  assert.equal(signedJunk.body.error.code, "invalid_request");

  const row = await account(pair.accountId);
  assert.equal(row.mp_connected, true);
  assert.equal(row.mp_token_version, 1);
  const config = await call("get-mp-config", { client_id: pair.clientId });
  assert.equal(config.status, 200);
  assert.equal(config.body.source, "fast_path");
  assert.equal((await events(pair.accountId)).some((e) => e.event === "revoked"), false);
  await closeDbs();
});

Deno.test("audit: no token, code, verifier or ciphertext anywhere in the credential events", async () => {
  const res = await fetch(`${stack.sandboxUrl}/__sandbox/secrets`);
  const { secrets } = await res.json() as { secrets: string[] };
  assert.ok(secrets.length > 10, "the tests above issued tokens and codes");
  const rows = await adminDb()`select event, detail::text as detail, request_id
    from mp_credential_events`;
  const text = rows.map((r) => `${r.event} ${r.detail} ${r.request_id}`).join("\n");
  for (const secret of secrets) assert.ok(!text.includes(secret), "a secret in the audit trail");
  assert.ok(!/v1:[A-Za-z0-9_-]+:[A-Za-z0-9+/=]{16,}/.test(text), "a ciphertext in the trail");
  await closeDbs();
});
