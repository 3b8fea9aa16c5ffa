import assert from "node:assert/strict";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { parseKeyRing } from "../shared/platform/config.ts";
import {
  DecryptError,
  decryptSecret,
  decryptSecretSync,
  encryptSecret,
  encryptSecretSync,
  importKeyRing,
} from "../shared/platform/crypto.ts";

const KEY_A = randomBytes(32);
const KEY_B = randomBytes(32);
const ACCOUNT = "3f2b8c1e-9d4a-4e6b-8a1c-2d3e4f5a6b7c";
const OTHER = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const ring = () =>
  importKeyRing(parseKeyRing(`a:${KEY_A.toString("base64")},b:${KEY_B.toString("base64")}`));

/** Encrypts with node:crypto, an implementation independent of ours (WebCrypto). */
function nodeEncrypt(key: Buffer, keyId: string, accountId: string, field: string, text: string) {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(`mp:${accountId}:${field}`));
  const body = Buffer.concat([cipher.update(text, "utf8"), cipher.final(), cipher.getAuthTag()]);
  return `v1:${keyId}:${Buffer.concat([iv, body]).toString("base64")}`;
}

async function assertDecryptFails(
  value: string,
  accountId = ACCOUNT,
  field = "access_token" as const,
) {
  const r = await ring();
  const check = (err: unknown) => {
    assert.ok(err instanceof DecryptError);
    assert.equal(err.code, "decrypt_failed");
    assert.equal(err.accountId, accountId);
    return true;
  };
  await assert.rejects(decryptSecret(await ring(), accountId, field, value), check);
  // The synchronous bulk path refuses exactly the same values.
  assert.throws(() => decryptSecretSync(r, accountId, field, value), check);
}

Deno.test("round trip with the first key; the value has the v1 format", async () => {
  const value = await encryptSecret(await ring(), ACCOUNT, "access_token", "APP_USR-1-secret");
  assert.match(value, /^v1:a:[A-Za-z0-9+/]+=*$/);
  const raw = Buffer.from(value.split(":")[2], "base64");
  assert.equal(raw.length, 12 + "APP_USR-1-secret".length + 16);
  assert.equal(
    await decryptSecret(await ring(), ACCOUNT, "access_token", value),
    "APP_USR-1-secret",
  );
});

Deno.test("two encryptions of the same value differ (random IV)", async () => {
  const r = await ring();
  const [x, y] = await Promise.all([
    encryptSecret(r, ACCOUNT, "refresh_token", "TG-1"),
    encryptSecret(r, ACCOUNT, "refresh_token", "TG-1"),
  ]);
  assert.notEqual(x, y);
});

Deno.test("a known-answer vector made with node:crypto decrypts, with any key of the ring", async () => {
  const a = nodeEncrypt(KEY_A, "a", ACCOUNT, "refresh_token", "TG-node-vector");
  const b = nodeEncrypt(KEY_B, "b", ACCOUNT, "code_verifier", "verifier-ñ-✓");
  assert.equal(await decryptSecret(await ring(), ACCOUNT, "refresh_token", a), "TG-node-vector");
  assert.equal(await decryptSecret(await ring(), ACCOUNT, "code_verifier", b), "verifier-ñ-✓");
});

Deno.test('our ciphertext decrypts with node:crypto given the AAD of docs/contract.md, "Ciphertext format"', async () => {
  const value = await encryptSecret(await ring(), ACCOUNT, "access_token", "APP_USR-x");
  const raw = Buffer.from(value.split(":")[2], "base64");
  const decipher = createDecipheriv("aes-256-gcm", KEY_A, raw.subarray(0, 12));
  decipher.setAAD(Buffer.from(`mp:${ACCOUNT}:access_token`));
  decipher.setAuthTag(raw.subarray(raw.length - 16));
  const plain = Buffer.concat([
    decipher.update(raw.subarray(12, raw.length - 16)),
    decipher.final(),
  ]);
  assert.equal(plain.toString("utf8"), "APP_USR-x");
});

Deno.test("the synchronous path: same format; each path decrypts what the other encrypts", async () => {
  const r = await ring();
  const sync = encryptSecretSync(r, ACCOUNT, "access_token", "APP_USR-sync-ñ");
  assert.match(sync, /^v1:a:[A-Za-z0-9+/]+=*$/);
  assert.equal(Buffer.from(sync.split(":")[2], "base64").length, 12 + 15 + 16);
  assert.equal(await decryptSecret(r, ACCOUNT, "access_token", sync), "APP_USR-sync-ñ");
  assert.equal(decryptSecretSync(r, ACCOUNT, "access_token", sync), "APP_USR-sync-ñ");
  const webcrypto = await encryptSecret(r, ACCOUNT, "refresh_token", "TG-web");
  assert.equal(decryptSecretSync(r, ACCOUNT, "refresh_token", webcrypto), "TG-web");
  const b = nodeEncrypt(KEY_B, "b", ACCOUNT, "code_verifier", "v-b");
  assert.equal(decryptSecretSync(r, ACCOUNT, "code_verifier", b), "v-b");
  assert.equal(
    decryptSecretSync(
      r,
      ACCOUNT,
      "access_token",
      encryptSecretSync(r, ACCOUNT.toUpperCase(), "access_token", "t"),
    ),
    "t",
  );
  assert.notEqual(
    encryptSecretSync(r, ACCOUNT, "access_token", "same"),
    encryptSecretSync(r, ACCOUNT, "access_token", "same"),
  );
  // A fixed IV gives the very bytes WebCrypto gives for that IV, key and AAD.
  const iv = randomBytes(12);
  const key = await crypto.subtle.importKey("raw", new Uint8Array(KEY_A), "AES-GCM", false, [
    "encrypt",
  ]);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      {
        name: "AES-GCM",
        iv: new Uint8Array(iv),
        additionalData: new TextEncoder().encode(`mp:${ACCOUNT}:refresh_token`),
      },
      key,
      new TextEncoder().encode("TG-fixed"),
    ),
  );
  assert.equal(
    encryptSecretSync(r, ACCOUNT, "refresh_token", "TG-fixed", iv),
    `v1:a:${Buffer.concat([iv, sealed]).toString("base64")}`,
  );
  await assertDecryptFails(sync, OTHER);
});

Deno.test("the account id is lowercased in the AAD", async () => {
  const value = await encryptSecret(await ring(), ACCOUNT.toUpperCase(), "access_token", "t");
  assert.equal(await decryptSecret(await ring(), ACCOUNT, "access_token", value), "t");
});

Deno.test("a value moved to another account or field fails with decrypt_failed", async () => {
  const value = await encryptSecret(await ring(), ACCOUNT, "access_token", "APP_USR-moved");
  await assertDecryptFails(value, OTHER);
  await assert.rejects(decryptSecret(await ring(), ACCOUNT, "refresh_token", value), DecryptError);
});

Deno.test("a flipped bit, an unknown key id, a truncated or malformed value fail", async () => {
  const value = await encryptSecret(await ring(), ACCOUNT, "access_token", "APP_USR-tamper");
  const raw = Buffer.from(value.split(":")[2], "base64");
  for (const i of [0, 12, raw.length - 1]) {
    const flipped = Buffer.from(raw);
    flipped[i] ^= 1;
    await assertDecryptFails(`v1:a:${flipped.toString("base64")}`);
  }
  await assertDecryptFails(value.replace("v1:a:", "v1:zz:"));
  await assertDecryptFails(`v1:a:${raw.subarray(0, 20).toString("base64")}`);
  await assertDecryptFails(`v1:a:${raw.subarray(0, raw.length - 1).toString("base64")}`);
  await assertDecryptFails("APP_USR-plaintext-not-encrypted");
  await assertDecryptFails("v2:a:AAAA");
});

Deno.test("the key ring rejects malformed specs without echoing key material", () => {
  assert.throws(() => parseKeyRing("a:" + randomBytes(16).toString("base64")), /not 32 bytes/);
  assert.throws(() => parseKeyRing("bad id!:" + KEY_A.toString("base64")), /id:base64key/);
  assert.throws(
    () => parseKeyRing(`a:${KEY_A.toString("base64")},a:${KEY_B.toString("base64")}`),
    /repeating/,
  );
  assert.throws(() => parseKeyRing(""), /empty/);
  const short = randomBytes(20).toString("base64");
  assert.throws(
    () => parseKeyRing(`a:${short}`),
    (err: Error) => /not 32 bytes/.test(err.message) && !err.message.includes(short),
    "a malformed key is refused without echoing it",
  );
});
