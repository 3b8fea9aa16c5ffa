// deno-lint-ignore-file no-explicit-any
/**
 * Invariant 2 (docs/invariants.md) against an in-flight refresh: mp-refresh's MercadoPago call
 * is held by the sandbox's latch while mp-revoke answers 200; then MercadoPago answers (it
 * spends the refresh token and issues a new pair). After the refresh completes, get-mp-config
 * answers 404 for the client — neither the fast path nor the fallback returns a token —, the
 * master stays revoked, the cache empty, and the new pair is served nowhere, not even by a
 * later refresh run.
 */
import assert from "node:assert/strict";
import { decryptSecret } from "../shared/platform/crypto.ts";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  keyRing,
  provisionedPair,
  sandbox,
  withCronPaused,
} from "./_stack.ts";

Deno.test("invariant 2: revoke racing an in-flight refresh — after its 200 no path returns a token", async () => {
  await withCronPaused("mp-refresh", async () => {
    const { accountId, clientId, grant, seller } = await provisionedPair();
    const served = await call("get-mp-config", { client_id: clientId });
    assert.equal(served.status, 200);
    assert.equal(served.body.source, "fast_path");

    await sandbox.hold(true);
    let refresh;
    try {
      const refreshing = call("mp-refresh", { account_id: accountId, force: true });
      await sandbox.awaitHeld(1); // the refresh token is at MercadoPago, not yet processed

      const revoked = await call("mp-revoke", { account_id: accountId });
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
      assert.deepEqual(revoked.body, { account_id: accountId, revoked: true });
      const during = await call("get-mp-config", { client_id: clientId });
      assert.equal(during.status, 404, "while the refresh is in flight");
      assert.equal(during.body.error.code, "mp_not_connected");

      await sandbox.hold(false); // MercadoPago processes the refresh and answers a new pair
      refresh = await refreshing;
    } finally {
      await sandbox.hold(false);
    }
    assert.equal(refresh.status, 200, JSON.stringify(refresh.body));
    assert.deepEqual(refresh.body.results, [
      { account_id: accountId, status: "superseded", error: "superseded" },
    ], "the refreshed pair lost to the revoke");
    const issued = await sandbox.lastTokens(seller);
    assert.ok(issued, "MercadoPago issued a new pair");
    assert.ok(issued.access_token !== grant.access_token, "a new access token");

    const assertRevoked = async (when: string) => {
      const after = await call("get-mp-config", { client_id: clientId });
      assert.equal(after.status, 404, `${when}: ${JSON.stringify(after.body.error)}`);
      assert.equal(after.body.error.code, "mp_not_connected");
      assert.ok(!JSON.stringify(after.body).includes(issued.access_token), "no new token");
      const [master]: any[] = await adminDb()`select mp_connected, mp_access_token_encrypted,
        mp_refresh_token, mp_token_version from nv_accounts where id = ${accountId}`;
      assert.equal(master.mp_connected, false, `${when}: the master stays revoked`);
      assert.equal(master.mp_access_token_encrypted, null);
      assert.equal(master.mp_refresh_token, null);
      assert.equal(master.mp_token_version, 2, `${when}: connect 1, revoke 2, nothing after`);
      const [cache]: any[] = await backendDb()`select mp_access_token, mp_token_version
        from clients where id = ${clientId}`;
      assert.equal(cache.mp_access_token, null, `${when}: the cache stays empty`);
      assert.ok(cache.mp_token_version === null || cache.mp_token_version >= 2);
      // The pair MercadoPago issued is not waiting anywhere to be applied later.
      const escrow = await backendDb()`select access_token_encrypted from mp_refresh_escrow
        where account_id = ${accountId}`;
      for (const row of escrow) {
        const token = await decryptSecret(
          await keyRing(),
          accountId,
          "access_token",
          row.access_token_encrypted,
        ).catch(() => null);
        assert.ok(token !== issued.access_token, `${when}: the new pair is not escrowed`);
      }
    };
    await assertRevoked("after the refresh");

    // A later run (forced) finds nothing to refresh and changes nothing.
    const later = await call("mp-refresh", { account_id: accountId, force: true });
    assert.equal(later.status, 200);
    assert.equal(later.body.refreshed, 0, JSON.stringify(later.body));
    await assertRevoked("after a later refresh run");
  });
  await closeDbs();
});
