/**
 * MercadoPago webhook signatures: the `x-signature` header (`ts=…,v1=…`) is the hex
 * HMAC-SHA256, keyed with the application's webhook secret, of the manifest
 * `id:<data.id>;request-id:<x-request-id>;ts:<ts>;` (parts whose value is absent are left
 * out, as MercadoPago documents). Checked in constant time, with a bounded timestamp age.
 * Deliveries acted on are remembered (Admin `mp_webhook_deliveries`) so a replay is a no-op.
 */
import type { Sql } from "./db.ts";

/** How far the signed timestamp may be from now, either way (replays beyond it are refused). */
export const MAX_SIGNATURE_AGE_MS = 5 * 60 * 1000;

/** Why a signature was refused; `ok` carries the signed time in epoch milliseconds. */
export type SignatureCheck =
  | { ok: true; signedAtMs: number }
  | { ok: false; reason: "missing" | "malformed" | "stale" | "mismatch" };

/** The parts of an `x-signature` header: `ts` and every `v1` given. */
export function parseSignature(header: string | null): { ts: string; v1: string[] } | undefined {
  if (!header) return undefined;
  let ts: string | undefined;
  const v1: string[] = [];
  for (const part of header.split(",")) {
    const at = part.indexOf("=");
    if (at < 0) continue;
    const key = part.slice(0, at).trim().toLowerCase();
    const value = part.slice(at + 1).trim();
    if (key === "ts") ts = value;
    else if (key === "v1") v1.push(value);
  }
  return ts && v1.length > 0 ? { ts, v1 } : undefined;
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
  const manifest = signatureManifest({
    dataId: request.dataId,
    requestId: request.requestId,
    ts: parsed.ts,
  });
  const expected = fromHex(await signManifest(secret, manifest))!;
  let match = 0;
  for (const candidate of parsed.v1) {
    const given = fromHex(candidate) ?? new Uint8Array(expected.length);
    let diff = fromHex(candidate) ? 0 : 1;
    for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ given[i];
    match |= diff === 0 ? 1 : 0;
  }
  if (match !== 1) return { ok: false, reason: "mismatch" };
  if (Math.abs(now - at) > MAX_SIGNATURE_AGE_MS) return { ok: false, reason: "stale" };
  return { ok: true, signedAtMs: at };
}

/** True when a delivery with this id was already acted on. */
export async function isDeliveryHandled(sql: Sql, deliveryId: string): Promise<boolean> {
  const rows = await sql`select 1 from mp_webhook_deliveries where request_id = ${deliveryId}`;
  return rows.length > 0;
}

/** Remembers a delivery as acted on (a repeat is a no-op); prunes week-old deliveries. */
export async function recordDelivery(
  sql: Sql,
  deliveryId: string,
  action: string,
  mpUserId: number | null,
): Promise<void> {
  await sql`
    insert into mp_webhook_deliveries (request_id, action, mp_user_id)
    values (${deliveryId}, ${action}, ${mpUserId}::bigint)
    on conflict (request_id) do nothing`;
  await sql`delete from mp_webhook_deliveries where received_at < now() - interval '7 days'`;
}
