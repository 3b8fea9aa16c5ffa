/**
 * Invariant 7 (and 6) at the escrow: an escrowed pair whose every other part is genuine is
 * still refused for one bad part — a refresh token that does not decrypt under the account's
 * AAD, an expiry MercadoPago could not have given — and a genuine pair reaches the master
 * with only its ciphertexts and expiry: the seller, public key, mode and scope stay as stored.
 * (Mutants of verifyEscrow/applyEscrow in tests/mutation/mutants.ts.)
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  keyRing,
  type MpGrant,
  provisionedPair,
  sandbox,
} from "./_stack.ts";
import { decryptSecret, encryptSecret } from "../shared/platform/crypto.ts";

Deno.test.afterAll(closeDbs);

const DAY_S = 86_400;

/** Escrows a pair for `accountId` at its current version, the parts given by `parts`. */
async function escrow(
  accountId: string,
  parts: {
    accessTokenEncrypted: string;
    refreshTokenEncrypted: string;
    userId: number | null;
    expiresIn: number;
    publicKey?: string;
  },
) {
  const [acc] = await adminDb()`select mp_token_version from nv_accounts where id = ${accountId}`;
  await backendDb()`insert into mp_refresh_escrow ${
    backendDb()({
      account_id: accountId,
      base_version: acc.mp_token_version,
      access_token_encrypted: parts.accessTokenEncrypted,
      refresh_token_encrypted: parts.refreshTokenEncrypted,
      expires_in: parts.expiresIn,
      token_expires_at: new Date(Date.now() + parts.expiresIn * 1000),
      user_id: parts.userId,
      public_key: parts.publicKey ?? "APP_USR-escrowed-unverified",
      live_mode: false,
      scope: "escrowed-scope",
    })
  }`;
}

/** A second genuine grant of `seller` at the sandbox: a pair MercadoPago could have given. */
async function anotherGrant(seller: number): Promise<MpGrant> {
  const { grants: [grant] } = await sandbox.post("grants", { count: 1, user_id: seller });
  return grant;
}

async function rejection(accountId: string): Promise<string | undefined> {
  const [e] = await adminDb()`select detail from mp_credential_events
    where account_id = ${accountId} and event = 'escrow_rejected'`;
  return e?.detail?.reason;
}

/** `grant`'s pair encrypted under `accountId`'s AAD, as the functions escrow it. */
async function encryptedPair(
  accountId: string,
  grant: { access_token: string; refresh_token: string },
) {
  const ring = await keyRing();
  return {
    accessTokenEncrypted: await encryptSecret(ring, accountId, "access_token", grant.access_token),
    refreshTokenEncrypted: await encryptSecret(
      ring,
      accountId,
      "refresh_token",
      grant.refresh_token,
    ),
  };
}

Deno.test("invariant 7: an escrowed pair whose refresh token fails the account's AAD is refused, the master unchanged", async () => {
  const pair = await provisionedPair();
  const ring = await keyRing();
  const fresh = await anotherGrant(pair.seller);
  const [before] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
  await escrow(pair.accountId, {
    accessTokenEncrypted: await encryptSecret(
      ring,
      pair.accountId,
      "access_token",
      fresh.access_token,
    ),
    // Genuine ciphertext, but of another account: must not decrypt here.
    refreshTokenEncrypted: await encryptSecret(
      ring,
      crypto.randomUUID(),
      "refresh_token",
      fresh.refresh_token,
    ),
    userId: pair.seller,
    expiresIn: 180 * DAY_S,
  });
  const res = await call("mp-refresh", { account_id: pair.accountId });
  assert.deepEqual(res.body.results, [
    { account_id: pair.accountId, status: "failed", error: "escrow_rejected" },
  ]);
  assert.equal(await rejection(pair.accountId), "decrypt_failed");
  const [after] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
  assert.ok(after.mp_refresh_token === before.mp_refresh_token, "refresh token unchanged");
  assert.ok(after.mp_access_token_encrypted === before.mp_access_token_encrypted);
  assert.equal(after.mp_token_version, before.mp_token_version);
});

Deno.test("invariant 7: an escrowed pair claiming a longer life than MercadoPago gives (201 days) is refused", async () => {
  const pair = await provisionedPair();
  const fresh = await anotherGrant(pair.seller);
  const [before] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
  await escrow(pair.accountId, {
    ...(await encryptedPair(pair.accountId, fresh)),
    userId: pair.seller,
    expiresIn: 201 * DAY_S,
  });
  const res = await call("mp-refresh", { account_id: pair.accountId });
  assert.deepEqual(res.body.results, [
    { account_id: pair.accountId, status: "failed", error: "escrow_rejected" },
  ]);
  assert.equal(await rejection(pair.accountId), "implausible_expiry");
  const [after] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
  assert.ok(after.mp_access_token_encrypted === before.mp_access_token_encrypted);
  assert.deepEqual(after.mp_token_expires_at, before.mp_token_expires_at);
});

Deno.test("invariants 6 and 7: a genuine escrowed pair reaches the master with its tokens and expiry only", async () => {
  const pair = await provisionedPair();
  const ring = await keyRing();
  const fresh = await anotherGrant(pair.seller);
  const [before] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
  await escrow(pair.accountId, {
    ...(await encryptedPair(pair.accountId, fresh)),
    userId: pair.seller,
    expiresIn: 180 * DAY_S,
    publicKey: "APP_USR-escrowed-unverified",
  });
  const res = await call("mp-refresh", { account_id: pair.accountId });
  assert.deepEqual(res.body.results.map((r: { status: string }) => r.status), [
    "escrow_applied",
  ]);
  const [after] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
  const served = await decryptSecret(
    ring,
    pair.accountId,
    "access_token",
    after.mp_access_token_encrypted,
  );
  assert.ok(served === fresh.access_token, "the escrowed access token is the master's now");
  assert.equal(after.mp_token_version, before.mp_token_version + 1);
  assert.equal(after.mp_public_key, before.mp_public_key, "public key as stored");
  assert.equal(after.mp_scope, before.mp_scope, "scope as stored");
  assert.equal(after.mp_live_mode, before.mp_live_mode, "mode as stored");
  assert.equal(Number(after.mp_user_id), pair.seller);
});
