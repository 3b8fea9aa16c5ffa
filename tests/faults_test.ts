// deno-lint-ignore-file no-explicit-any
/**
 * Database faults through the gateway (docs/invariants.md, invariants 2 and 3): a stopped Backend DB, a stopped Admin DB,
 * both, their return without restarting the functions, and databases that hang (SIGSTOP)
 * instead of refusing. Every test puts the clusters back in a `finally`.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  cluster,
  eventually,
  newAccount,
  newClient,
  sandbox,
} from "./_stack.ts";

/** The test pools close once, after every test of this file. */
Deno.test.afterAll(closeDbs);

/** A connected account linked to a client whose cache is filled (fast path). */
async function syncedPair() {
  const [grant] = await sandbox.grants(1);
  const clientId = await newClient();
  const accountId = await newAccount({ grant, clientId });
  const res = await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  assert.equal(res.status, 200);
  assert.equal(res.body.synced, true);
  return { grant, clientId, accountId };
}

/** A connected account linked to a client whose cache is empty (fallback). */
async function unsyncedPair() {
  const [grant] = await sandbox.grants(1);
  const clientId = await newClient();
  const accountId = await newAccount({ grant, clientId });
  return { grant, clientId, accountId };
}

/** Stops the named clusters; the returned function starts exactly those again. */
async function stopped(...which: ("backend" | "admin")[]) {
  const down: ReturnType<typeof cluster>[] = [];
  try {
    for (const w of which) {
      const c = cluster(w);
      await c.stop();
      down.push(c);
    }
  } catch (err) {
    await Promise.all(down.map((c) => c.start()));
    throw err;
  }
  return async () => {
    await Promise.all(down.map((c) => c.start()));
    await closeDbs();
  };
}

function assertUnavailable(res: { status: number; body: any }, what: string) {
  assert.equal(res.status, 503, what);
  assert.equal(res.body.error.code, "unavailable", what);
  assert.equal(typeof res.body.error.message, "string");
}

/** Everything answers normally again, without restarting the functions. */
async function assertRecovered(
  synced: { grant: { access_token: string }; clientId: string },
  unsynced: { grant: { access_token: string }; clientId: string; accountId: string },
) {
  const fast = await eventually(async () => {
    const res = await call("get-mp-config", { client_id: synced.clientId });
    return res.status === 200 && res.body.source === "fast_path" && res;
  }, 30_000);
  assert.equal(fast.body.access_token, synced.grant.access_token);
  const miss = await eventually(async () => {
    const res = await call("get-mp-config", { client_id: unsynced.clientId });
    return res.status === 200 && res;
  }, 30_000);
  assert.equal(miss.body.access_token, unsynced.grant.access_token);
  const repaired = await call("get-mp-config", { client_id: unsynced.clientId });
  assert.equal(repaired.status, 200);
  assert.equal(repaired.body.source, "fast_path", "the read-repair reached the Backend DB");
  const [row] = await backendDb()`
    select mp_access_token from clients where id = ${unsynced.clientId}`;
  assert.equal(row.mp_access_token, unsynced.grant.access_token);
  const other = await unsyncedPair();
  const prov = await call("provision-step-7-1", {
    account_id: other.accountId,
    client_id: other.clientId,
  });
  assert.equal(prov.status, 200, "a write to both databases works again");
  assert.equal(prov.body.synced, true);
}

Deno.test("Backend DB stopped → get-mp-config answers from the fallback, then recovers", async () => {
  const synced = await syncedPair();
  const unsynced = await unsyncedPair();
  const restore = await stopped("backend");
  try {
    for (const pair of [synced, unsynced]) {
      const res = await call("get-mp-config", { client_id: pair.clientId });
      assert.equal(res.status, 200);
      assert.equal(res.body.source, "fallback");
      assert.equal(res.body.access_token, pair.grant.access_token);
      assert.equal(res.body.token_version, 1);
    }
    const unknown = await call("get-mp-config", { client_id: crypto.randomUUID() });
    assert.equal(unknown.status, 404, "no account feeds an unknown client: not found, not 5xx");
    const prov = await call("provision-step-7-1", {
      account_id: unsynced.accountId,
      client_id: unsynced.clientId,
    });
    assertUnavailable(prov, "provisioning needs the Backend DB");
  } finally {
    await restore();
  }
  await assertRecovered(synced, unsynced);
});

Deno.test("Admin DB stopped → the fast path is unaffected and the fallback answers 503", async () => {
  const synced = await syncedPair();
  const unsynced = await unsyncedPair();
  const restore = await stopped("admin");
  try {
    for (let i = 0; i < 5; i++) {
      const res = await call("get-mp-config", { client_id: synced.clientId });
      assert.equal(res.status, 200);
      assert.equal(res.body.source, "fast_path");
      assert.equal(res.body.access_token, synced.grant.access_token);
    }
    assertUnavailable(
      await call("get-mp-config", { client_id: unsynced.clientId }),
      "an empty cache needs the Admin DB",
    );
    assertUnavailable(
      await call("mp-revoke", { account_id: synced.accountId }),
      "revoke needs the Admin DB",
    );
  } finally {
    await restore();
  }
  await assertRecovered(synced, unsynced);
});

Deno.test("both databases stopped → 503 unavailable; both back → everything recovers", async () => {
  const synced = await syncedPair();
  const unsynced = await unsyncedPair();
  const restore = await stopped("backend", "admin");
  try {
    for (const pair of [synced, unsynced]) {
      assertUnavailable(await call("get-mp-config", { client_id: pair.clientId }), "both down");
    }
    assertUnavailable(
      await call("provision-step-7-1", {
        account_id: unsynced.accountId,
        client_id: unsynced.clientId,
      }),
      "provisioning, both down",
    );
  } finally {
    await restore();
  }
  await assertRecovered(synced, unsynced);
});

/** Calls get-mp-config with an overall bound: an answer must arrive, whatever it is. */
async function boundedCall(clientId: string) {
  const signal = AbortSignal.timeout(30_000);
  const res = await fetch(`${Deno.env.get("FUNCTIONS_URL")}/get-mp-config`, {
    method: "POST",
    headers: { apikey: Deno.env.get("SECRET_KEY")!, "content-type": "application/json" },
    body: JSON.stringify({ client_id: clientId }),
    signal,
  });
  return { status: res.status, body: await res.json() };
}

async function frozen<T>(which: ("backend" | "admin")[], work: () => Promise<T>): Promise<T> {
  const clusters = which.map((w) => cluster(w));
  try {
    for (const c of clusters) await c.freeze(true);
    return await work();
  } finally {
    for (const c of clusters) await c.freeze(false);
  }
}

Deno.test("a hanging Backend DB (SIGSTOP) → get-mp-config answers from the fallback", async () => {
  const synced = await syncedPair();
  const unsynced = await unsyncedPair();
  const answers = await frozen(
    ["backend"],
    () => Promise.all([boundedCall(synced.clientId), boundedCall(unsynced.clientId)]),
  );
  // docs/contract.md: a Backend DB that fails (here: does not answer within the time bound)
  // sends the read to the Admin fallback, which is up, so the answer is 200 — never 503.
  for (const [i, res] of answers.entries()) {
    const pair = [synced, unsynced][i];
    assert.equal(res.status, 200, `a hanging Backend DB: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.source, "fallback");
    assert.ok(res.body.access_token === pair.grant.access_token, "the master's token");
  }
  await closeDbs();
  await assertRecovered(synced, unsynced);
});

Deno.test("a hanging Admin DB → the fast path answers; the fallback answers 503, not never", async () => {
  const synced = await syncedPair();
  const unsynced = await unsyncedPair();
  const [fast, miss] = await frozen(
    ["admin"],
    () => Promise.all([boundedCall(synced.clientId), boundedCall(unsynced.clientId)]),
  );
  assert.equal(fast.status, 200);
  assert.equal(fast.body.source, "fast_path");
  assertUnavailable(miss, "a hanging Admin DB behind an empty cache");
  await closeDbs();
  await assertRecovered(synced, unsynced);
});

Deno.test("both databases hanging → 503 within the bound, then everything recovers", async () => {
  const synced = await syncedPair();
  const unsynced = await unsyncedPair();
  const answers = await frozen(
    ["backend", "admin"],
    () => Promise.all([boundedCall(synced.clientId), boundedCall(unsynced.clientId)]),
  );
  for (const res of answers) assertUnavailable(res, "both hanging");
  await closeDbs();
  await assertRecovered(synced, unsynced);
});

Deno.test("invariant 2 with the Backend DB down: mp-revoke answers 503 and changes nothing; once it is back the revoke completes", async () => {
  const { clientId, accountId } = await syncedPair();
  const start = await stopped("backend");
  let res;
  try {
    res = await call("mp-revoke", { account_id: accountId });
  } finally {
    await start();
  }
  assertUnavailable(res, "mp-revoke with the Backend DB down");
  const [row] = await adminDb()`select mp_connected, mp_token_version from nv_accounts
    where id = ${accountId}`;
  assert.deepEqual({ ...row }, { mp_connected: true, mp_token_version: 1 }, "nothing changed");
  const again = await call("mp-revoke", { account_id: accountId });
  assert.equal(again.status, 200);
  const read = await call("get-mp-config", { client_id: clientId });
  assert.equal(read.status, 404);
  const [cache] = await backendDb()`select mp_access_token from clients where id = ${clientId}`;
  assert.equal(cache.mp_access_token, null);
});
