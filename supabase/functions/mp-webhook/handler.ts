import { defineFunction, json, readInput } from "../../../shared/platform/http.ts";
import { DomainError } from "../../../shared/platform/errors.ts";
import { handleNotification } from "../../../shared/connection/webhook.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";

/**
 * mp-webhook: MercadoPago `mp-connect` notifications, verified by a strictly parsed
 * `x-signature` (401 when missing, malformed, wrong or older than 5 minutes). Each delivery
 * (`x-request-id`) is claimed before it is acted on, so a repeat changes nothing.
 * `application.deauthorized` is confirmed with MercadoPago account by account before it
 * revokes anything; 503 when MercadoPago cannot be asked (`shared/connection/webhook.ts`).
 */
export const handler = defineFunction({
  name: "mp-webhook",
  methods: ["POST"],
  auth: "public",
  needs: ["mpWebhookSecret", "adminDbUrl", "backendDbUrl", "tokenKeys", "mpClientId"],
  changes: CONNECTION_CHANGES,
  async run({ req, ctx, log, requestId }) {
    let body: Record<string, unknown> | undefined;
    let malformed: DomainError | undefined;
    try {
      body = await readInput(req);
    } catch (err) {
      if (!(err instanceof DomainError && err.code === "invalid_request")) throw err;
      malformed = err;
    }
    const answer = await handleNotification(ctx, log, {
      signature: req.headers.get("x-signature"),
      mpRequestId: req.headers.get("x-request-id"),
      url: new URL(req.url),
      body,
      malformed,
    }, requestId);
    return json(200, answer);
  },
});
