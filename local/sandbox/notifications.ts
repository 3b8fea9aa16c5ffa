/** The notifications the sandbox sends as MercadoPago does (signed webhooks). */
import { digits } from "./wire.ts";

/** A notification ready to POST: query parameters, signature headers and JSON body. */
interface Notification {
  query: Record<string, string>;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** An `application.deauthorized` notification for `userId`, signed with `secret` at `nowMs`. */
export async function deauthorizedNotification(
  secret: string,
  userId: number,
  nowMs: number,
): Promise<Notification> {
  const dataId = digits(12);
  const requestId = crypto.randomUUID();
  const ts = String(nowMs);
  const manifest = `id:${dataId};request-id:${requestId};ts:${ts};`;
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
  const v1 = [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
  return {
    query: { "data.id": dataId, type: "mp-connect" },
    headers: { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId },
    body: {
      action: "application.deauthorized",
      api_version: "v1",
      data: { id: dataId },
      date_created: new Date(nowMs).toISOString(),
      id: Number(digits(11)) + 1,
      live_mode: true,
      type: "mp-connect",
      user_id: userId,
    },
  };
}

/** POSTs `notification` to `url` as MercadoPago delivers it; returns the answer's status. */
export async function deliver(url: string, notification: Notification): Promise<number> {
  const target = new URL(url);
  for (const [k, v] of Object.entries(notification.query)) target.searchParams.set(k, v);
  const res = await fetch(target, {
    method: "POST",
    headers: { "content-type": "application/json", ...notification.headers },
    body: JSON.stringify(notification.body),
  });
  await res.body?.cancel();
  return res.status;
}
