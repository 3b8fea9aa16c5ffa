// deno-lint-ignore-file no-explicit-any
/**
 * Invariant 3 at the save of a refreshed pair: when the compare-and-swap commits but its
 * answer never comes back (the Admin DB answered after the function's database timeout), the
 * retry finds the version moved on — and must recognise its own pair (`readIfHolds`) rather
 * than report the refresh superseded and leave the cache behind. Driven by a row lock the test
 * holds and releases once the first attempt has timed out and the retry waits behind it, so no
 * step depends on machine speed. (Mutant "the save does not check whether a lost-answer attempt
 * committed" in tests/mutation/mutants.ts.)
 */
import assert from "node:assert/strict";
import {
  adminDb,
  call,
  eventually,
  newAccount,
  newClient,
  pauseJobsDuringFile,
  sandbox,
} from "./_stack.ts";

pauseJobsDuringFile(["mp-refresh", "mp-reconcile", "mp-probe"], () => sandbox.latency(0));

/** Backends waiting for a lock while running the save. */
async function savesWaiting(): Promise<number> {
  const [{ n }] = await adminDb()`select count(*)::int as n from pg_stat_activity
    where wait_event_type = 'Lock' and query ilike '%mp_save_refreshed%'`;
  return n;
}

Deno.test("invariant 3: a save that committed while its answer was lost is recognised by the retry — refreshed, cache synced", async () => {
  const { grants: [grant] } = await sandbox.post("grants", { count: 1 });
  const clientId = await newClient();
  const id = await newAccount({ grant, clientId, expiresInDays: 10 });
  assert.equal(
    (await call("provision-step-7-1", { account_id: id, client_id: clientId }))
      .body.synced,
    true,
  );
  const lock = await adminDb().reserve();
  let res: any;
  try {
    // MercadoPago answers only once the test holds the account's row.
    await sandbox.latency(3000);
    const pending = call("mp-refresh", { account_id: id });
    await eventually(async () => {
      const [a] = await adminDb()`select mp_refresh_sends from nv_accounts where id = ${id}`;
      return a.mp_refresh_sends === 1; // counted: the request is on its way
    });
    await lock`begin`;
    await lock`select 1 from nv_accounts where id = ${id} for update`;
    // The first attempt waits, times out (the function's database timeout), and its retry
    // queues behind it: two saves waiting.
    await eventually(async () => (await savesWaiting()) >= 2, 60_000);
    await lock`commit`;
    res = await pending;
  } finally {
    await lock`rollback`.catch(() => {});
    lock.release();
    await sandbox.latency(0);
  }
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.results.map((r: any) => r.status), ["refreshed"]);
  const [row] = await adminDb()`select mp_token_version, mp_refresh_sends from nv_accounts
    where id = ${id}`;
  assert.deepEqual([Number(row.mp_token_version), row.mp_refresh_sends], [2, 0]);
  const config = await call("get-mp-config", { client_id: clientId });
  assert.equal(config.body.source, "fast_path", "the cache was synced");
  assert.equal(config.body.token_version, 2);
  assert.ok(config.body.access_token !== grant.access_token, "the new token");
});
