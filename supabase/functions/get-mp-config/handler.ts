import * as v from "valibot";
import { defineFunction, json, uuid } from "../../../shared/platform/http.ts";
import { getMpConfig } from "../../../shared/checkout/get_config.ts";

/**
 * get-mp-config: checkout's MercadoPago credentials for a client — the cache's fast path, or
 * the Admin master's fallback with a read-repair (`shared/checkout/get_config.ts`).
 */
export const handler = defineFunction({
  name: "get-mp-config",
  methods: ["GET", "POST"],
  auth: "server",
  needs: ["backendDbUrl", "adminDbUrl", "tokenKeys"],
  input: v.strictObject({ client_id: uuid }),
  async run({ input, ctx, log, requestId }) {
    return json(200, await getMpConfig(ctx, log, input.client_id, requestId));
  },
});
