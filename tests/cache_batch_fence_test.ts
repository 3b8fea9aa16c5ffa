/**
 * Invariant 1 at the batched cache write (`writeCacheBatch`, the batched refresh, reconcile's
 * repairs and the backfill): a write at the version the cache already holds is a no-op
 * reported "already current", like an older one — per client, in one batch with writes that
 * do go through. (Mutant "writeCacheBatch fence loosened (< to <=)" in
 * tests/mutation/mutants.ts.)
 */
import assert from "node:assert/strict";
import { backendDb, closeDbs, newClient } from "./_stack.ts";
import { writeCacheBatch } from "../shared/store/clients.ts";

Deno.test.afterAll(closeDbs);

Deno.test("invariant 1: a batched write at the cached version or older changes nothing and is already_current; a newer one syncs", async () => {
  const db = backendDb();
  const [same, older, newer] = [await newClient(), await newClient(), await newClient()];
  for (const id of [same, older, newer]) {
    await db`update clients set mp_access_token = 'APP_USR-batch-held', mp_token_version = 4,
      mp_synced_at = '2000-01-01' where id = ${id}`;
  }
  const results = await writeCacheBatch(db, [
    { clientId: same, accessToken: "APP_USR-batch-same", publicKey: null, version: 4 },
    { clientId: older, accessToken: "APP_USR-batch-older", publicKey: null, version: 3 },
    { clientId: newer, accessToken: "APP_USR-batch-newer", publicKey: null, version: 5 },
  ]);
  assert.deepEqual(results.map((r) => r.result), ["already_current", "already_current", "synced"]);
  const rows = await db`select id, mp_access_token, mp_token_version,
      mp_synced_at = '2000-01-01' as untouched
    from clients where id in (${same}, ${older}, ${newer})`;
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const id of [same, older]) {
    assert.deepEqual(
      [
        byId.get(id)!.mp_access_token,
        Number(byId.get(id)!.mp_token_version),
        byId.get(id)!.untouched,
      ],
      ["APP_USR-batch-held", 4, true],
    );
  }
  assert.deepEqual(
    [byId.get(newer)!.mp_access_token, Number(byId.get(newer)!.mp_token_version)],
    ["APP_USR-batch-newer", 5],
  );
});
