/**
 * AES-256-GCM for secrets at rest (docs/contract.md, ciphertext format): `v1:<key_id>:<base64(iv ‖ ciphertext ‖ tag)>`,
 * with AAD `mp:<account_id>:<field>` binding each value to its row and column.
 *
 * Two implementations of the same format: WebCrypto (`encryptSecret`, `decryptSecret`: async,
 * for one value at a time) and node:crypto (`encryptSecretSync`, `decryptSecretSync`: about 3×
 * less CPU per value and no thread hop, for the bulk paths: backfill, reconciliation and key
 * rotation). Each decrypts what the other encrypts (tests/crypto_test.ts).
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

/** Imported keys: the first encrypts, every one decrypts. */
export interface KeyRing {
  current: { id: string; key: CryptoKey };
  byId: Map<string, CryptoKey>;
  /** The same keys' raw bytes by id, for the synchronous node:crypto path. */
  raw: Map<string, Uint8Array>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const FORMAT = /^v1:([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/]+={0,2})$/;

/** Imports the configured keys into WebCrypto once. */
export async function importKeyRing(specs: KeySpec[]): Promise<KeyRing> {
  const byId = new Map<string, CryptoKey>();
  const raw = new Map<string, Uint8Array>();
  for (const spec of specs) {
    raw.set(spec.id, spec.raw);
    const key = await crypto.subtle.importKey("raw", spec.raw as BufferSource, "AES-GCM", false, [
      "encrypt",
      "decrypt",
    ]);
    byId.set(spec.id, key);
  }
  return { current: { id: specs[0].id, key: byId.get(specs[0].id)! }, byId, raw };
}

function aad(accountId: string, field: SecretField): Uint8Array {
  return encoder.encode(`mp:${accountId.toLowerCase()}:${field}`);
}

function fromBase64(text: string): Uint8Array {
  // A plain loop: `Uint8Array.from(string, mapFn)` is ~20× slower, which shows in bulk decrypts.
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Encrypts `plaintext` for `field` of `accountId` with the current key. */
export async function encryptSecret(
  ring: KeyRing,
  accountId: string,
  field: SecretField,
  plaintext: string,
): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: aad(accountId, field) as BufferSource },
      ring.current.key,
      encoder.encode(plaintext),
    ),
  );
  const out = new Uint8Array(iv.length + sealed.length);
  out.set(iv);
  out.set(sealed, iv.length);
  return `v1:${ring.current.id}:${toBase64(out)}`;
}

/** Decrypts a value stored for `field` of `accountId`; throws `DecryptError` on any failure. */
export async function decryptSecret(
  ring: KeyRing,
  accountId: string,
  field: SecretField,
  value: string,
): Promise<string> {
  const match = FORMAT.exec(value);
  if (!match) throw new DecryptError(accountId, field, "not in v1 format");
  const key = ring.byId.get(match[1]);
  if (!key) throw new DecryptError(accountId, field, `unknown key id ${match[1]}`);
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(match[2]);
  } catch {
    throw new DecryptError(accountId, field, "not base64");
  }
  if (bytes.length < 12 + 16) throw new DecryptError(accountId, field, "truncated");
  try {
    const plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: bytes.subarray(0, 12) as BufferSource,
        additionalData: aad(accountId, field) as BufferSource,
      },
      key,
      bytes.subarray(12) as BufferSource,
    );
    return decoder.decode(plain);
  } catch {
    throw new DecryptError(accountId, field, "authentication failed");
  }
}

/**
 * `encryptSecret` done synchronously with node:crypto: the same format, key, random IV and
 * AAD, for bulk work (`iv` only for tests: never reuse one).
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

/**
 * `decryptSecret` done synchronously with node:crypto, for bulk work: the same checks, and
 * every failure is a `DecryptError` as there.
 */
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
