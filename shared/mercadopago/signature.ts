/**
 * MercadoPago webhook signatures: the `x-signature` header (`ts=…,v1=…`) is the hex
 * HMAC-SHA256, keyed with the application's webhook secret, of the manifest
 * `id:<data.id>;request-id:<x-request-id>;ts:<ts>;` (parts whose value is absent are left
 * out, as MercadoPago documents). Parsing is strict — the header is exactly one `ts` and one
 * `v1`, `x-request-id` is required, `data.id` is alphanumeric — so no variation of a signed
 * delivery reads as a new one. Checked in constant time, with a bounded timestamp age.
 * (The deliveries' bookkeeping is `shared/store/webhook_deliveries.ts`.)
 */

/** How far the signed timestamp may be from now, either way (replays beyond it are refused). */
const MAX_SIGNATURE_AGE_MS = 5 * 60 * 1000;

/** Why a signature was refused; `ok` carries the signed time in epoch milliseconds. */
type SignatureCheck =
  | { ok: true; signedAtMs: number }
  | { ok: false; reason: "missing" | "malformed" | "stale" | "mismatch" };

/** What MercadoPago's `x-request-id` looks like; anything else is refused. */
const MP_REQUEST_ID = /^[A-Za-z0-9-]{1,128}$/;

/** What a notification's `data.id` looks like; anything else is refused. */
const DATA_ID = /^[A-Za-z0-9]{1,64}$/;

/**
 * The parts of an `x-signature` header, which must be exactly `ts=<digits>` and
 * `v1=<64 lowercase hex>` separated by one comma (either order), nothing more; else undefined.
 */
export function parseSignature(header: string | null): { ts: string; v1: string } | undefined {
  if (header === null || header.length > 100) return undefined;
  const parts = header.split(",");
  if (parts.length !== 2) return undefined;
  const found: Record<string, string> = {};
  for (const part of parts) {
    const m = /^(ts|v1)=(.+)$/.exec(part);
    if (!m || m[1] in found) return undefined;
    found[m[1]] = m[2];
  }
  if (!/^\d{1,16}$/.test(found.ts ?? "") || !/^[0-9a-f]{64}$/.test(found.v1 ?? "")) {
    return undefined;
  }
  return { ts: found.ts, v1: found.v1 };
}

/** MercadoPago's `ts` in epoch milliseconds; it may come in seconds or in milliseconds. */
export function signedAtMs(ts: string): number | undefined {
  if (!/^\d{1,16}$/.test(ts)) return undefined;
  const n = Number(ts);
  return n >= 1e12 ? n : n * 1000;
}

/** The signed manifest; `dataId` is lowercased, as MercadoPago does for alphanumeric ids. */
export function signatureManifest(
  parts: { dataId?: string | null; requestId?: string | null; ts: string },
): string {
  let manifest = "";
  if (parts.dataId) manifest += `id:${parts.dataId.toLowerCase()};`;
  if (parts.requestId) manifest += `request-id:${parts.requestId};`;
  return `${manifest}ts:${parts.ts};`;
}

function fromHex(hex: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return undefined;
  return Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
}

/** Hex HMAC-SHA256 of the manifest: what MercadoPago puts in `v1` (tests sign with it). */
export async function signManifest(secret: string, manifest: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(manifest)),
  );
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Verifies a notification's `x-signature` against the secret: the HMAC is compared byte by
 * byte without early exit, and a timestamp older (or newer) than 5 minutes is refused.
 */
export async function verifySignature(
  secret: string,
  request: { header: string | null; requestId: string | null; dataId: string | null },
  now = Date.now(),
): Promise<SignatureCheck> {
  if (!request.header) return { ok: false, reason: "missing" };
  const parsed = parseSignature(request.header);
  const at = parsed && signedAtMs(parsed.ts);
  if (!parsed || at === undefined) return { ok: false, reason: "malformed" };
  if (request.requestId === null || !MP_REQUEST_ID.test(request.requestId)) {
    return { ok: false, reason: "malformed" };
  }
  if (request.dataId !== null && !DATA_ID.test(request.dataId)) {
    return { ok: false, reason: "malformed" };
  }
  const manifest = signatureManifest({
    dataId: request.dataId,
    requestId: request.requestId,
    ts: parsed.ts,
  });
  const expected = fromHex(await signManifest(secret, manifest))!;
  const given = fromHex(parsed.v1)!;
  let diff = 0;
  for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ given[i];
  if (diff !== 0) return { ok: false, reason: "mismatch" };
  if (Math.abs(now - at) > MAX_SIGNATURE_AGE_MS) return { ok: false, reason: "stale" };
  return { ok: true, signedAtMs: at };
}

/**
 * Verifies a notification against each of an application's webhook secrets (rotation: the old
 * and the new one while MercadoPago switches): every secret is tried, and the delivery passes
 * when any of them signed it. Otherwise the answer is the refusal the secrets agree on (missing,
 * malformed), `stale` when a secret matched an old timestamp, else `mismatch`.
 */
export async function verifySignatureWithAny(
  secrets: readonly string[],
  request: { header: string | null; requestId: string | null; dataId: string | null },
  now = Date.now(),
): Promise<SignatureCheck> {
  const checks = await Promise.all(secrets.map((s) => verifySignature(s, request, now)));
  return checks.find((c) => c.ok) ??
    checks.find((c) => !c.ok && c.reason === "stale") ??
    checks[0] ?? { ok: false, reason: "mismatch" };
}
