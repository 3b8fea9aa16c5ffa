/**
 * AES-256-GCM for secrets at rest (docs/contract.md, ciphertext format): `v1:<key_id>:<base64(iv ‖ ciphertext ‖ tag)>`,
 * with AAD `mp:<account_id>:<field>` binding each value to its row and column.
 *
 * One implementation, node:crypto (`encryptSecretSync`, `decryptSecretSync`): about 3× less
 * CPU per value than WebCrypto and no thread hop, which counts against the edge runtime's CPU
 * limit on the refresh and reconcile paths (docs/scale.md). `encryptSecret`/`decryptSecret`
 * are the same as promises. tests/crypto_test.ts checks the bytes against WebCrypto.
 */
import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, randomFillSync } from "node:crypto";
import type { KeySpec } from "./config.ts";
import type { Fields, Logger } from "./log.ts";

/** The columns whose values are encrypted; part of the AAD. */
export type SecretField = "access_token" | "refresh_token" | "code_verifier";

/** A value that cannot be decrypted (wrong row or column, unknown key, tampered, malformed). */
export class DecryptError extends Error {
  readonly code = "decrypt_failed";
  constructor(readonly accountId: string, readonly field: SecretField, reason: string) {
    super(`cannot decrypt ${field} of account ${accountId}: ${reason}`);
    this.name = "DecryptError";
  }
}

/** The configured keys: the first encrypts, every one decrypts. */
export interface KeyRing {
  current: { id: string };
  /** Each key's raw bytes by id. */
  raw: Map<string, Uint8Array>;
}

const FORMAT = /^v1:([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/]+={0,2})$/;

/** Builds the key ring from the configured keys (the first one encrypts). */
export function importKeyRing(specs: KeySpec[]): Promise<KeyRing> {
  const raw = new Map(specs.map((spec) => [spec.id, spec.raw]));
  return Promise.resolve({ current: { id: specs[0].id }, raw });
}

function aad(accountId: string, field: SecretField): Buffer {
  return Buffer.from(`mp:${accountId.toLowerCase()}:${field}`, "utf8");
}

/** Encrypts `plaintext` for `field` of `accountId` with the current key (`encryptSecretSync` as a promise). */
export function encryptSecret(
  ring: KeyRing,
  accountId: string,
  field: SecretField,
  plaintext: string,
): Promise<string> {
  return Promise.resolve(encryptSecretSync(ring, accountId, field, plaintext));
}

/** Decrypts a value stored for `field` of `accountId`; rejects with `DecryptError` on any failure. */
export function decryptSecret(
  ring: KeyRing,
  accountId: string,
  field: SecretField,
  value: string,
): Promise<string> {
  try {
    return Promise.resolve(decryptSecretSync(ring, accountId, field, value));
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * Encrypts `plaintext` for `field` of `accountId` with the current key: random 12-byte IV,
 * AAD `mp:<account_id>:<field>` (`iv` only for tests: never reuse one).
 */
export function encryptSecretSync(
  ring: KeyRing,
  accountId: string,
  field: SecretField,
  plaintext: string,
  iv: Uint8Array = randomFillSync(new Uint8Array(12)),
): string {
  const cipher = createCipheriv("aes-256-gcm", ring.raw.get(ring.current.id)!, iv);
  cipher.setAAD(aad(accountId, field));
  const head = cipher.update(plaintext, "utf8");
  const tail = cipher.final();
  const sealed = Buffer.concat([iv, head, tail, cipher.getAuthTag()]);
  return `v1:${ring.current.id}:${sealed.toString("base64")}`;
}

/** Decrypts a value stored for `field` of `accountId`; throws `DecryptError` on any failure. */
export function decryptSecretSync(
  ring: KeyRing,
  accountId: string,
  field: SecretField,
  value: string,
): string {
  const match = FORMAT.exec(value);
  if (!match) throw new DecryptError(accountId, field, "not in v1 format");
  const key = ring.raw.get(match[1]);
  if (!key) throw new DecryptError(accountId, field, `unknown key id ${match[1]}`);
  const bytes = Buffer.from(match[2], "base64");
  if (bytes.length < 12 + 16) throw new DecryptError(accountId, field, "truncated");
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, bytes.subarray(0, 12), {
      authTagLength: 16,
    });
    decipher.setAAD(aad(accountId, field));
    decipher.setAuthTag(bytes.subarray(bytes.length - 16));
    return decipher.update(bytes.subarray(12, bytes.length - 16), undefined, "utf8") +
      decipher.final("utf8");
  } catch {
    throw new DecryptError(accountId, field, "authentication failed");
  }
}

/** Encrypts an access and refresh token pair for an account's master columns. */
export async function encryptTokenPair(
  keys: KeyRing,
  accountId: string,
  tokens: { access_token: string; refresh_token: string },
): Promise<{ accessTokenEncrypted: string; refreshTokenEncrypted: string }> {
  return {
    accessTokenEncrypted: await encryptSecret(keys, accountId, "access_token", tokens.access_token),
    refreshTokenEncrypted: await encryptSecret(
      keys,
      accountId,
      "refresh_token",
      tokens.refresh_token,
    ),
  };
}

/** Logs the one error line of a stored credential that will not decrypt: account and field, never the value. */
export function logDecryptFailure(
  log: Logger,
  accountId: string,
  field: SecretField,
  extra: Fields = {},
): void {
  log.error("Stored MP credential failed to decrypt", { account_id: accountId, field, ...extra });
}
