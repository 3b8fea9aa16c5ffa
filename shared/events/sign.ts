/**
 * Standard Webhooks signing of a delivery (standardwebhooks.com) with the `standardwebhooks`
 * library: `webhook-id` (the event id), `webhook-timestamp` (seconds) and `webhook-signature`,
 * one `v1,<base64>` per secret of `PLATFORM_WEBHOOK_SECRETS`, space-separated, so a platform
 * that rotates its secret accepts deliveries signed under either.
 */
import { Webhook } from "standardwebhooks";

/** The signers of a list of `whsec_` secrets (build once per isolate). */
export function signers(secrets: string[]): Webhook[] {
  return secrets.map((s) => new Webhook(s));
}

/** The three Standard Webhooks headers of `body` sent as event `id` at `at`. */
export function signatureHeaders(
  webhooks: Webhook[],
  id: string,
  at: Date,
  body: string,
): Record<"webhook-id" | "webhook-timestamp" | "webhook-signature", string> {
  return {
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": webhooks.map((w) => w.sign(id, at, body)).join(" "),
  };
}
