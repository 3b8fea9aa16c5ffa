/**
 * Deterministic tests for the bugs mutation testing found the suite letting through: a revoke
 * retried after the Backend failed, a read-repair held between its Admin read and its cache
 * write while a revoke lands, and the orphan-cache clear racing a link and sync.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  cluster,
  eventually,
  newClient,
  provisionedPair,
} from "./_stack.ts";
import { clearOrphanedCache, writeCache } from "../shared/store/clients.ts";

Deno.test.afterAll(closeDbs);

async function cacheOf(clientId: string) {
  const [row] = await backendDb()`select mp_access_token, mp_public_key, mp_token_version
    from clients where id = ${clientId}`;
  return { ...row };
}

Deno.test("revoke with the Backend down changes nothing; a master revoked behind a full cache is cleared by the retry (invariant 2)", async () => {
  const { clientId, accountId } = await provisionedPair();
  const backend = cluster("backend");
  await backend.stop();
  let failed;
  try {
    failed = await call("mp-revoke", { account_id: accountId });
  } finally {
    await backend.start();
  }
  assert.equal(failed.status, 503, "the cache could not be cleared, so no 200");
  const [master] = await adminDb()`select mp_connected from nv_accounts where id = ${accountId}`;
  assert.equal(master.mp_connected, true, "the cache first: nothing was changed");
  assert.ok((await cacheOf(clientId)).mp_access_token, "the cache still holds the token");

  // A master revoked behind a cache that still holds the token (a revoke cut off between its
  // two writes): the retry finds nothing left to change in the master, and must still clear
  // the cache.
  await adminDb()`select * from mp_revoke_account(${accountId}::uuid, 'admin')`;
  const retry = await call("mp-revoke", { account_id: accountId });
  assert.equal(retry.status, 200);
  assert.deepEqual(await cacheOf(clientId), {
    mp_access_token: null,
    mp_public_key: null,
    mp_token_version: 2,
  });
  const config = await call("get-mp-config", { client_id: clientId });
  assert.equal(config.status, 404);
  assert.equal(config.body.error.code, "mp_not_connected");
});

Deno.test("a read-repair held between its Admin read and its cache write answers 404 once the revoke landed", async () => {
  const { clientId, accountId } = await provisionedPair();
  // An empty cache sends get-mp-config to the fallback: Admin read, then a repair write.
  await backendDb()`update clients set mp_access_token = null, mp_token_version = null
    where id = ${clientId}`;
  const lock = await backendDb().reserve();
  let answer;
  try {
    await lock`begin`;
    // Holds the client's row: the repair's write starts (its snapshot taken) and waits.
    await lock`select 1 from clients where id = ${clientId} for update`;
    const inFlight = call("get-mp-config", { client_id: clientId });
    // Wait until the read-repair has read the master and waits to write the cache.
    await eventually(async () => {
      const rows = await backendDb()`select 1 from pg_stat_activity
        where wait_event_type = 'Lock' and query ilike '%update clients%'`;
      return rows.length > 0;
    });
    // Meanwhile the revoke lands: master revoked, cache cleared at the new version (written
    // here, inside the lock holder, as mp-revoke's own cache write would be).
    const [revoked] = await adminDb()`select * from mp_revoke_account(${accountId}::uuid)`;
    assert.equal(revoked.changed, true);
    await writeCache(lock, clientId, {
      accessToken: null,
      publicKey: null,
      version: Number(revoked.mp_token_version),
    });
    await lock`commit`;
    answer = await inFlight;
  } finally {
    lock.release();
  }
  assert.equal(answer.status, 404, "the pre-revoke token was served"); // never print the token
  assert.equal(answer.body.error.code, "mp_not_connected");
  assert.equal((await cacheOf(clientId)).mp_access_token, null);
});

Deno.test("the orphan-cache clear keeps a cache that was linked and synced after the scan saw it", async () => {
  const clientId = await newClient();
  // An orphan: a cached token no account feeds, seen by the scan at version 1.
  await writeCache(backendDb(), clientId, {
    accessToken: "APP_USR-orphan",
    publicKey: "APP_USR-pk",
    version: 1,
  });
  const seen = [{ id: clientId, version: 1 }];
  // Before the clear runs, an account is linked and synced at a newer version.
  await writeCache(backendDb(), clientId, {
    accessToken: "APP_USR-linked",
    publicKey: "APP_USR-pk",
    version: 2,
  });
  const cleared = await clearOrphanedCache(backendDb(), seen);
  assert.deepEqual(cleared, [], "nothing cleared: the row no longer holds what was seen");
  assert.equal((await cacheOf(clientId)).mp_access_token, "APP_USR-linked");
  // The row still as seen is cleared.
  assert.deepEqual(await clearOrphanedCache(backendDb(), [{ id: clientId, version: 2 }]), [
    clientId,
  ]);
});
