import * as v from "valibot";
import { defineFunction, json, uuid } from "../../../shared/platform/http.ts";
import { provisionClient } from "../../../shared/connection/provision.ts";

/** provision-step-7-1: links an approved client to its account and syncs its credentials. */
export const handler = defineFunction({
  name: "provision-step-7-1",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "backendDbUrl", "tokenKeys"],
  input: v.strictObject({ account_id: uuid, client_id: uuid }),
  async run({ input: { account_id, client_id }, ctx, log, requestId }) {
    const done = await provisionClient(ctx, log, {
      accountId: account_id,
      clientId: client_id,
      requestId,
    });
    return json(200, { account_id, client_id, ...done });
  },
});
