import * as v from "valibot";
import { DomainError } from "../../../shared/platform/errors.ts";
import { defineFunction, json, uuid } from "../../../shared/platform/http.ts";
import { revokeConnection } from "../../../shared/connection/connection.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";

/** mp-revoke: clears an account's MercadoPago credentials in both databases; idempotent. */
export const handler = defineFunction({
  name: "mp-revoke",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "backendDbUrl"],
  changes: CONNECTION_CHANGES,
  input: v.strictObject({ account_id: uuid }),
  async run({ input, ctx, log, requestId }) {
    if (!(await revokeConnection(ctx, log, input.account_id, { requestId }))) {
      throw new DomainError("account_not_found", "no such account");
    }
    return json(200, { account_id: input.account_id, revoked: true });
  },
});
