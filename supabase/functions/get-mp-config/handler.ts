import * as v from "valibot";
import { defineFunction, json, uuid } from "../../../shared/platform/http.ts";
import { getMpConfig } from "../../../shared/checkout/get_config.ts";
import { reportRejectedToken } from "../../../shared/checkout/report.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";

/**
 * get-mp-config: checkout's MercadoPago credentials for a client — the cache's fast path, or
 * the Admin master's fallback with a read-repair (`shared/checkout/get_config.ts`); with
 * `rejected_token_version`, checkout's report that MercadoPago rejected that token
 * (`shared/checkout/report.ts`).
 */
export const handler = defineFunction({
  name: "get-mp-config",
  methods: ["GET", "POST"],
  auth: "server",
  needs: ["backendDbUrl", "adminDbUrl", "tokenKeys"],
  // A report may change the connection (answered 200 or 404 mp_reauth_required); a read never.
  changes: {
    ...CONNECTION_CHANGES,
    when: (input) => input.rejected_token_version !== undefined,
  },
  input: v.strictObject({
    client_id: uuid,
    rejected_token_version: v.optional(
      v.pipe(v.number(), v.safeInteger(), v.minValue(0, "must be a non-negative integer")),
    ),
  }),
  async run({ input, ctx, log, requestId }) {
    if (input.rejected_token_version !== undefined) {
      const answer = await reportRejectedToken(
        ctx,
        log,
        input.client_id,
        input.rejected_token_version,
        requestId,
      );
      return json(200, answer);
    }
    return json(200, await getMpConfig(ctx, log, input.client_id, requestId));
  },
});
