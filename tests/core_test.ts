// deno-lint-ignore-file no-explicit-any
/**
 * The credential core through the gateway: the operators' acceptance steps 1, 2 and 4,
 * provisioning, revoke, the error codes, and the version fence under concurrency.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  eventually,
  functionEnv,
  logLine,
  newAccount,
  newClient,
  sandbox,
  stack,
  stackLog,
  supabase,
} from "./_stack.ts";
import { serveFunction } from "./_serve.ts";
import { createMpConfigClient, type MpConfig, MpConfigError } from "../client/mp_config.ts";
import { writeCache, writeCacheBatch } from "../shared/store/clients.ts";
import { encryptSecret } from "../shared/platform/crypto.ts";
import { keyRing } from "./_stack.ts";

/** The test pools close once, after every test of this file. */
Deno.test.afterAll(closeDbs);

/** Seed of the races' jitter: `JITTER_SEED=<n>` replays a failing interleaving. */
const JITTER_SEED = Number(Deno.env.get("JITTER_SEED") ?? 20261130);

/** mulberry32: a small seeded PRNG, so the jitter of a race can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = seeded(JITTER_SEED);

/** get-mp-config through the checkout client over the supabase-js client `client`. */
function getMpConfig(
  client: ReturnType<typeof supabase>,
  clientId: string,
): Promise<MpConfig> {
  return createMpConfigClient({ supabase: client }).getMpConfig(clientId);
}

async function connectedPair(opts: { link?: boolean } = {}) {
  const [grant] = await sandbox.grants(1);
  const clientId = await newClient();
  const accountId = await newAccount({
    grant,
    clientId: opts.link === false ? undefined : clientId,
  });
  return { grant, clientId, accountId };
}

async function cache(clientId: string) {
  const [row] = await backendDb()`
    select mp_access_token, mp_public_key, mp_token_version from clients where id = ${clientId}`;
  return row;
}

Deno.test("acceptance 1: approving a client whose account is connected fills clients.mp_access_token", async () => {
  const { grant, clientId, accountId } = await connectedPair({ link: false });
  assert.equal((await cache(clientId)).mp_access_token, null);
  const res = await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, {
    account_id: accountId,
    client_id: clientId,
    synced: true,
    token_version: 1,
  });
  const row = await cache(clientId);
  assert.equal(row.mp_access_token, grant.access_token);
  assert.equal(row.mp_public_key, grant.public_key);
  assert.equal(row.mp_token_version, 1);
  const [acc] = await adminDb()`select backend_client_id from nv_accounts where id = ${accountId}`;
  assert.equal(acc.backend_client_id, clientId);
  const line = await logLine("Step 7.1: MP credentials synced to Backend DB", accountId);
  assert.equal(JSON.parse(line).level, "info");
});

Deno.test("provision-step-7-1: repeating is harmless; not connected → synced:false", async () => {
  const { clientId, accountId } = await connectedPair({ link: false });
  for (let i = 0; i < 3; i++) {
    const res = await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
    assert.equal(res.status, 200);
    assert.equal(res.body.synced, true);
    assert.equal(res.body.token_version, 1);
  }
  const bare = await newAccount();
  const client2 = await newClient();
  const res = await call("provision-step-7-1", { account_id: bare, client_id: client2 });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, {
    account_id: bare,
    client_id: client2,
    synced: false,
    reason: "mp_not_connected",
  });
  assert.equal((await cache(client2)).mp_access_token, null);
});

Deno.test("provision-step-7-1: 409 when linked elsewhere, 404 for unknown account or client", async () => {
  const { clientId, accountId } = await connectedPair();
  const other = await newClient();
  const elsewhere = await call("provision-step-7-1", { account_id: accountId, client_id: other });
  assert.equal(elsewhere.status, 409);
  assert.equal(elsewhere.body.error.code, "account_linked_elsewhere");
  const second = await newAccount();
  const taken = await call("provision-step-7-1", { account_id: second, client_id: clientId });
  assert.equal(taken.status, 409);
  assert.equal(taken.body.error.code, "account_linked_elsewhere");
  const [row] = await adminDb()`select backend_client_id from nv_accounts where id = ${second}`;
  assert.equal(row.backend_client_id, null, "a refused link changes nothing");
  const noAccount = await call("provision-step-7-1", {
    account_id: crypto.randomUUID(),
    client_id: other,
  });
  assert.equal(noAccount.status, 404);
  assert.equal(noAccount.body.error.code, "account_not_found");
  const noClient = await call("provision-step-7-1", {
    account_id: second,
    client_id: crypto.randomUUID(),
  });
  assert.equal(noClient.status, 404);
  assert.equal(noClient.body.error.code, "client_not_found");
});

Deno.test("acceptance 2: a synced client takes the fast path through supabase-js, with no Fast-path miss", async () => {
  const { grant, clientId, accountId } = await connectedPair();
  await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  const config = await getMpConfig(supabase(), clientId);
  assert.deepEqual(config, {
    client_id: clientId,
    access_token: grant.access_token,
    public_key: grant.public_key,
    source: "fast_path",
    token_version: 1,
    site_id: "MLA",
  });
  const viaGet = await call("get-mp-config", undefined, { query: `?client_id=${clientId}` });
  assert.equal(viaGet.status, 200);
  assert.equal(viaGet.body.source, "fast_path");
  const legacyKey = await getMpConfig(supabase(Deno.env.get("SERVICE_ROLE_KEY")!), clientId);
  assert.equal(legacyKey.source, "fast_path");
  const misses = (await stackLog()).split("\n").filter((l) =>
    l.includes("Fast-path miss") && l.includes(clientId)
  );
  assert.equal(misses.length, 0);
});

Deno.test("acceptance 2: an empty cache takes the logged fallback, repairs, and the next call is fast path", async () => {
  const { grant, clientId } = await connectedPair();
  assert.equal((await cache(clientId)).mp_access_token, null);
  const first = await getMpConfig(supabase(), clientId);
  assert.equal(first.source, "fallback");
  assert.equal(first.access_token, grant.access_token);
  assert.equal(first.token_version, 1);
  const line = await logLine("Fast-path miss", clientId);
  const parsed = JSON.parse(line);
  assert.equal(parsed.level, "warn");
  assert.equal(parsed.client_id, clientId);
  assert.ok(!line.includes(grant.access_token));
  assert.equal((await cache(clientId)).mp_access_token, grant.access_token);
  const second = await getMpConfig(supabase(), clientId);
  assert.equal(second.source, "fast_path");
  const [event] = await adminDb()`
    select event, detail from mp_credential_events where client_id = ${clientId} and event = 'fast_path_miss'`;
  assert.equal(event.detail.reason, "cache_empty");
});

Deno.test("get-mp-config: 404 mp_not_connected and client_not_found", async () => {
  const clientId = await newClient();
  await newAccount({ clientId });
  const res = await call("get-mp-config", { client_id: clientId });
  assert.equal(res.status, 404);
  assert.equal(res.body.error.code, "mp_not_connected");
  const unlinked = await newClient();
  assert.equal(
    (await call("get-mp-config", { client_id: unlinked })).body.error.code,
    "mp_not_connected",
  );
  const missing = await call("get-mp-config", { client_id: crypto.randomUUID() });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, "client_not_found");
  await assert.rejects(getMpConfig(supabase(), clientId), (err: unknown) => {
    assert.ok(err instanceof MpConfigError);
    assert.equal(err.status, 404);
    assert.equal(err.code, "mp_not_connected");
    return true;
  });
});

Deno.test("acceptance 4: after revoke clients.mp_access_token is NULL and get-mp-config answers 404", async () => {
  const { clientId, accountId } = await connectedPair();
  await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  const res = await call("mp-revoke", { account_id: accountId });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { account_id: accountId, revoked: true });
  const row = await cache(clientId);
  assert.equal(row.mp_access_token, null);
  assert.equal(row.mp_public_key, null);
  assert.equal(row.mp_token_version, 2);
  const [acc] = await adminDb()`
    select mp_connected, mp_access_token_encrypted, mp_refresh_token, mp_token_version
      from nv_accounts where id = ${accountId}`;
  assert.deepEqual({ ...acc }, {
    mp_connected: false,
    mp_access_token_encrypted: null,
    mp_refresh_token: null,
    mp_token_version: 2,
  });
  const after = await call("get-mp-config", { client_id: clientId });
  assert.equal(after.status, 404);
  assert.equal(after.body.error.code, "mp_not_connected");
  const again = await call("mp-revoke", { account_id: accountId });
  assert.equal(again.status, 200, "revoke is idempotent");
  assert.equal((await cache(clientId)).mp_token_version, 2, "a repeated revoke is not a change");
  const unknown = await call("mp-revoke", { account_id: crypto.randomUUID() });
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, "account_not_found");
});

Deno.test("decrypt_failed: a ciphertext moved to another account is a 500 naming no secret", async () => {
  const a = await connectedPair();
  const b = await connectedPair();
  const [row] =
    await adminDb()`select mp_access_token_encrypted from nv_accounts where id = ${a.accountId}`;
  await adminDb()`update nv_accounts set mp_access_token_encrypted = ${row.mp_access_token_encrypted}
                   where id = ${b.accountId}`;
  const res = await call("get-mp-config", { client_id: b.clientId });
  assert.equal(res.status, 500);
  assert.equal(res.body.error.code, "decrypt_failed");
  const line = await logLine("decrypt", b.accountId);
  assert.ok(!line.includes(row.mp_access_token_encrypted));
  const prov = await call("provision-step-7-1", { account_id: b.accountId, client_id: b.clientId });
  assert.equal(prov.body.error.code, "decrypt_failed");
});

Deno.test("docs/contract.md errors: 400, 401, 405, 413 with the error body", async () => {
  const cases: [string, unknown, Record<string, unknown>, number, string][] = [
    ["get-mp-config", "{not json", {}, 400, "invalid_request"],
    ["get-mp-config", {}, {}, 400, "invalid_request"],
    ["get-mp-config", { client_id: 42 }, {}, 400, "invalid_request"],
    ["get-mp-config", { client_id: "not-a-uuid" }, {}, 400, "invalid_request"],
    ["get-mp-config", { client_id: crypto.randomUUID(), extra: 1 }, {}, 400, "invalid_request"],
    ["get-mp-config", [1, 2], {}, 400, "invalid_request"],
    ["provision-step-7-1", { account_id: crypto.randomUUID() }, {}, 400, "invalid_request"],
    ["mp-revoke", { account_id: "'; drop table nv_accounts; --" }, {}, 400, "invalid_request"],
    ["get-mp-config", { client_id: crypto.randomUUID() }, { key: null }, 401, "unauthorized"],
    [
      "get-mp-config",
      { client_id: crypto.randomUUID() },
      { key: "sb_secret_wrong" },
      401,
      "unauthorized",
    ],
    ["mp-revoke", { account_id: crypto.randomUUID() }, { key: "wrong" }, 401, "unauthorized"],
    ["mp-revoke", undefined, { method: "GET" }, 405, "method_not_allowed"],
    ["get-mp-config", undefined, { method: "DELETE" }, 405, "method_not_allowed"],
    [
      "get-mp-config",
      JSON.stringify({ client_id: crypto.randomUUID(), pad: "x".repeat(70_000) }),
      {},
      413,
      "payload_too_large",
    ],
  ];
  for (const [fn, body, opts, status, code] of cases) {
    const res = await call(fn, body, opts as any);
    assert.equal(res.status, status, `${fn} ${JSON.stringify(body)?.slice(0, 60)}`);
    assert.equal(res.body.error.code, code);
    assert.equal(typeof res.body.error.message, "string");
    assert.equal(res.headers.get("content-type"), "application/json");
  }
  const bearer = await fetch(`${Deno.env.get("FUNCTIONS_URL")}/get-mp-config`, {
    method: "POST",
    headers: { authorization: `Bearer ${Deno.env.get("SECRET_KEY")}` },
    body: JSON.stringify({ client_id: crypto.randomUUID() }),
  });
  assert.equal(bearer.status, 404, "Authorization: Bearer <secret key> authenticates");
  await bearer.body?.cancel();
});

Deno.test("misconfigured: a missing variable is a 500 naming it in the log, never its value", async () => {
  const env = functionEnv();
  delete env.MP_TOKEN_KEYS;
  const served = await serveFunction("get-mp-config", 20, env);
  let text: string;
  try {
    const res = await fetch(`${served.url}/`, {
      method: "POST",
      headers: { apikey: stack.secretKey },
      body: JSON.stringify({ client_id: crypto.randomUUID() }),
    });
    assert.equal(res.status, 500);
    assert.equal((await res.json()).error.code, "misconfigured");
    const bad = await fetch(`${served.url}/`, { method: "POST", body: "{}" });
    assert.equal(bad.status, 500, "configuration is checked before anything else runs");
    await bad.body?.cancel();
  } finally {
    text = await served.stop();
  }
  const line = text.split("\n").find((l) => l.includes("misconfigured"));
  assert.ok(line, "a log line reports the misconfiguration");
  assert.equal(JSON.parse(line).variable, "MP_TOKEN_KEYS");
  assert.ok(!text.includes(stack.secretKey));
});

Deno.test("invariant 1: out-of-order syncs and read-repairs never regress the cache", async () => {
  const { clientId, accountId } = await connectedPair();
  const keys = await keyRing();
  const seen: number[] = [];
  let stop = false;
  const watcher = (async () => {
    while (!stop) {
      const row = await cache(clientId);
      if (row.mp_token_version !== null) seen.push(row.mp_token_version);
    }
  })();
  const tokens = new Map<number, string>();
  for (let version = 2; version <= 21; version++) {
    const token = `APP_USR-interleave-${version}-${crypto.randomUUID()}`;
    tokens.set(version, token);
    await adminDb()`update nv_accounts set mp_access_token_encrypted =
        ${await encryptSecret(
      keys,
      accountId,
      "access_token",
      token,
    )}, mp_token_version = ${version}
      where id = ${accountId}`;
    // Each change fans out to racing sync points: provisioning syncs, read-repairs (after the
    // cache is emptied), and a version-fenced write of an older version replayed late.
    const jitter = <T>(f: () => Promise<T>) =>
      new Promise<T>((resolve, reject) =>
        setTimeout(() => f().then(resolve, reject), random() * 8)
      );
    const racers = [
      jitter(() => call("provision-step-7-1", { account_id: accountId, client_id: clientId })),
      jitter(() => call("get-mp-config", { client_id: clientId })),
      jitter(() => call("provision-step-7-1", { account_id: accountId, client_id: clientId })),
      jitter(() =>
        backendDb()`update clients set mp_access_token = null where id = ${clientId}
                      and mp_token_version < ${version}`
      ),
      jitter(() => call("get-mp-config", { client_id: clientId })),
    ];
    const results = await Promise.all(racers);
    for (const r of results as any[]) if (r?.status) assert.equal(r.status, 200);
  }
  await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  stop = true;
  await watcher;
  const row = await cache(clientId);
  assert.equal(row.mp_token_version, 21);
  assert.equal(row.mp_access_token, tokens.get(21));
  for (let i = 1; i < seen.length; i++) {
    assert.ok(seen[i] >= seen[i - 1], `cache went ${seen[i - 1]} → ${seen[i]}`);
  }
});

Deno.test("invariant 2: revoke racing read-repairs and syncs — after its 200 no path returns the token", async () => {
  for (let round = 0; round < 10; round++) {
    const { clientId, accountId, grant } = await connectedPair();
    const inFlight = Array.from(
      { length: 8 },
      (_, i) =>
        i % 2 === 0
          ? call("get-mp-config", { client_id: clientId })
          : call("provision-step-7-1", { account_id: accountId, client_id: clientId }),
    );
    const revoke = await call("mp-revoke", { account_id: accountId });
    assert.equal(revoke.status, 200);
    const after = await Promise.all([
      call("get-mp-config", { client_id: clientId }),
      call("get-mp-config", { client_id: clientId }),
    ]);
    for (const res of after) {
      assert.equal(res.status, 404);
      assert.ok(!JSON.stringify(res.body).includes(grant.access_token));
    }
    await Promise.all(inFlight);
    const row = await cache(clientId);
    assert.equal(row.mp_access_token, null, `round ${round}: a late repair restored the token`);
    assert.equal((await call("get-mp-config", { client_id: clientId })).status, 404);
  }
});

Deno.test("the Backend DB stopped → fallback answers; both stopped → 503; recovery without restarts", async () => {
  const { cluster } = await import("./_stack.ts");
  const { grant, clientId, accountId } = await connectedPair();
  await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  const backend = cluster("backend");
  const admin = cluster("admin");
  try {
    await backend.stop();
    const fallback = await call("get-mp-config", { client_id: clientId });
    assert.equal(fallback.status, 200);
    assert.equal(fallback.body.source, "fallback");
    assert.equal(fallback.body.access_token, grant.access_token);
    await admin.stop();
    const down = await call("get-mp-config", { client_id: clientId });
    assert.equal(down.status, 503);
    assert.equal(down.body.error.code, "unavailable");
  } finally {
    await backend.start();
    await admin.start();
  }
  await closeDbs();
  const back = await eventually(async () => {
    const res = await call("get-mp-config", { client_id: clientId });
    return res.status === 200 && res.body.source === "fast_path" && res;
  }, 20_000);
  assert.equal(back.body.access_token, grant.access_token);
});

Deno.test("invariant 1 (deterministic): an older or duplicate version after a newer one changes nothing", async () => {
  const clientId = await newClient();
  const db = backendDb();
  const newer = await writeCache(db, clientId, {
    accessToken: "APP_USR-fence-newer",
    publicKey: "APP_USR-pk-newer",
    version: 5,
  });
  assert.equal(newer.result, "synced");
  for (const version of [4, 5, 0]) {
    const late = await writeCache(db, clientId, {
      accessToken: `APP_USR-fence-late-${version}`,
      publicKey: null,
      version,
    });
    assert.equal(late.result, "already_current", `version ${version} after 5`);
    assert.equal(late.mp_token_version, 5);
    assert.equal(late.mp_access_token, "APP_USR-fence-newer");
  }
  const [row] = await db`select mp_access_token, mp_token_version from clients
    where id = ${clientId}`;
  assert.deepEqual({ ...row }, { mp_access_token: "APP_USR-fence-newer", mp_token_version: 5 });
  // The batched twin keeps the same fence.
  const [batch] = await writeCacheBatch(db, [{
    clientId,
    accessToken: "APP_USR-fence-batch-old",
    publicKey: null,
    version: 3,
  }]);
  assert.equal(batch.result, "already_current");
  const [after] = await db`select mp_access_token from clients where id = ${clientId}`;
  assert.equal(after.mp_access_token, "APP_USR-fence-newer");
  await closeDbs();
});
