// deno-lint-ignore-file no-explicit-any
/**
 * Invariant 3 (and 1) at the save of a refreshed pair, the other way round from
 * tests/save_answer_lost_test.ts: the first save attempt's answer is lost and it did NOT commit
 * — a connect of a new grant landed first (version 2, the lease cleared). The retry must see
 * that the account no longer holds its refresh token (`readIfHolds`) and report the refresh
 * superseded: the pair is not taken for saved, and the cache is not given the refreshed token
 * under the connect's version. Driven by a row lock the test holds until the first attempt
 * has timed out and the retry waits behind it, so no step depends on machine speed.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  eventually,
  keyRing,
  newAccount,
  newClient,
  pauseJobsDuringFile,
  sandbox,
} from "./_stack.ts";
import { encryptSecret } from "../shared/platform/crypto.ts";

pauseJobsDuringFile(["mp-refresh", "mp-reconcile", "mp-probe"], () => sandbox.latency(0));

/** Backends waiting for a lock while running the save. */
async function savesWaiting(): Promise<number> {
  const [{ n }] = await adminDb()`select count(*)::int as n from pg_stat_activity
    where wait_event_type = 'Lock' and query ilike '%mp_save_refreshed%'`;
  return n;
}

Deno.test("invariant 3: a save whose answer was lost and that lost to a connect is superseded — not taken for saved, the cache not given its token", async () => {
  const { grants: [grant, next] } = await sandbox.post("grants", { count: 2 });
  const clientId = await newClient();
  const id = await newAccount({ grant, clientId, expiresInDays: 10 });
  assert.equal(
    (await call("provision-step-7-1", { account_id: id, client_id: clientId })).body.synced,
    true,
  );
  const keys = await keyRing();
  const lock = await adminDb().reserve();
  let res: any;
  try {
    await sandbox.latency(3000);
    const pending = call("mp-refresh", { account_id: id });
    await eventually(async () => {
      const [a] = await adminDb()`select mp_refresh_sends from nv_accounts where id = ${id}`;
      return a.mp_refresh_sends === 1; // counted: the request is on its way
    });
    await lock`begin`;
    await lock`select 1 from nv_accounts where id = ${id} for update`;
    // The first attempt waits and times out; its retry queues behind it.
    await eventually(async () => (await savesWaiting()) >= 2, 60_000);
    // Meanwhile a connect of a new grant lands first (version 2, the lease cleared).
    const [saved] = await lock`select result from mp_save_connection(${id}::uuid,
      ${grant.user_id}::bigint,
      ${await encryptSecret(keys, id, "access_token", next.access_token)}::text,
      ${await encryptSecret(keys, id, "refresh_token", next.refresh_token)}::text,
      ${next.public_key}::text, ${next.expires_in}::integer, null::boolean, null::text,
      false)`;
    assert.equal(saved.result, "connected");
    await lock`commit`;
    res = await pending;
  } finally {
    await lock`rollback`.catch(() => {});
    lock.release();
    await sandbox.latency(0);
  }
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.results.map((r: any) => r.status), ["superseded"]);
  const [row] = await adminDb()`select mp_token_version from nv_accounts where id = ${id}`;
  assert.equal(Number(row.mp_token_version), 2, "the connect's version");
  const [cache] = await backendDb()`select mp_access_token, mp_token_version from clients
    where id = ${clientId}`;
  assert.equal(Number(cache.mp_token_version), 1, "the refresh wrote no cache");
  assert.ok(cache.mp_access_token === grant.access_token);
});
