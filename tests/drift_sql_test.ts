/**
 * The Backend's drift comparison (`findCacheDrift`, SQL) and `driftOf` (TypeScript, used by
 * `deno task status`) are one rule written twice: on every combination of account and cache
 * state they must give the same answer.
 */
import assert from "node:assert/strict";
import { type AccountState, driftOf } from "../shared/reconcile/drift.ts";
import { type CacheState, findCacheDrift } from "../shared/store/clients.ts";
import { backendDb, closeDbs, newClient } from "./_stack.ts";

Deno.test.afterAll(closeDbs);

Deno.test("findCacheDrift (SQL) and driftOf agree on every account and cache state", async () => {
  const versions = [null, 1, 2, 3];
  const caches: { version: number | null; token: boolean; publicKey: boolean }[] = [];
  for (const version of versions) {
    for (const token of [false, true]) {
      for (const publicKey of [false, true]) caches.push({ version, token, publicKey });
    }
  }
  const cases: { account: AccountState; cache?: CacheState }[] = [];
  for (const connected of [false, true]) {
    for (const accountVersion of [0, 2]) {
      // A client row that does not exist.
      cases.push({
        account: {
          id: crypto.randomUUID(),
          backend_client_id: crypto.randomUUID(),
          connected,
          mp_token_version: accountVersion,
        },
      });
      for (const c of caches) {
        const clientId = await newClient();
        await backendDb()`update clients set mp_token_version = ${c.version},
          mp_access_token = ${c.token ? "APP_USR-drift-sql" : null},
          mp_public_key = ${c.publicKey ? "APP_USR-pk-drift-sql" : null} where id = ${clientId}`;
        cases.push({
          account: {
            id: crypto.randomUUID(),
            backend_client_id: clientId,
            connected,
            mp_token_version: accountVersion,
          },
          cache: {
            id: clientId,
            mp_token_version: c.version,
            has_token: c.token,
            has_public_key: c.publicKey,
          },
        });
      }
    }
  }
  const page = JSON.stringify(
    cases.map(({ account: a }) => [a.id, a.backend_client_id, a.mp_token_version, a.connected]),
  );
  const found = new Map((await findCacheDrift(backendDb(), page)).map((r) => [r.account_id, r]));
  let drifted = 0;
  for (const { account, cache } of cases) {
    const expected = driftOf(account, cache);
    const row = found.get(account.id);
    assert.equal(row?.kind ?? null, expected, JSON.stringify({ account, cache }));
    if (row) {
      drifted++;
      assert.equal(row.client_id, account.backend_client_id);
      assert.equal(row.account_version, account.mp_token_version);
      assert.equal(row.connected, account.connected);
      assert.deepEqual(row.cache, cache ?? null);
    }
  }
  assert.equal(found.size, drifted, "only drifted accounts come back");
  assert.ok(drifted > 0 && drifted < cases.length, "the cases cover both answers");
  const ids = [...found.keys()];
  assert.deepEqual(ids, [...ids].sort(), "ordered by account id");
});
