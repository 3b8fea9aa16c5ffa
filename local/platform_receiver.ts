/**
 * The local platform's event receiver (`/platform/events` on the gateway, the default
 * PLATFORM_WEBHOOK_URL of `deno task dev`): verifies every delivery with the same
 * `standardwebhooks` library the platform would use, under each configured secret, logs one
 * line per delivery and keeps the last 200 in memory (`GET /platform/events` lists them).
 */
import { Webhook } from "standardwebhooks";
import type { Logger } from "../shared/platform/log.ts";

/** One delivery as the receiver saw it. */
export interface ReceivedEvent {
  id: string;
  verified: boolean;
  received_at: string;
  type?: string;
  account_id?: string;
}

/** A receiver that verifies with `secrets` (space-separated `whsec_…`). */
export function createPlatformReceiver(secrets: string, log: Logger) {
  const hooks = secrets.split(/\s+/).filter(Boolean).map((s) => new Webhook(s));
  const received: ReceivedEvent[] = [];
  return {
    received,
    async fetch(req: Request): Promise<Response> {
      if (req.method === "GET") return Response.json({ events: received.slice().reverse() });
      if (req.method !== "POST") return new Response(null, { status: 405 });
      const body = await req.text();
      const headers = Object.fromEntries(req.headers);
      let event: { type?: string; data?: { account_id?: string } } | undefined;
      for (const hook of hooks) {
        try {
          event = hook.verify(body, headers) as typeof event;
          break;
        } catch { /* try the next secret */ }
      }
      const entry: ReceivedEvent = {
        id: headers["webhook-id"] ?? "",
        verified: !!event,
        received_at: new Date().toISOString(),
        type: event?.type,
        account_id: event?.data?.account_id,
      };
      received.push(entry);
      if (received.length > 200) received.shift();
      log.info("Platform event received", { ...entry });
      return event
        ? Response.json({ received: true })
        : Response.json({ error: "signature" }, { status: 401 });
    },
  };
}
