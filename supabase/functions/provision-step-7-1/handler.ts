import * as v from "valibot";
import { defineFunction, HttpError, json, uuid } from "../../../shared/platform/http.ts";
import { linkAccount } from "../../../shared/store/accounts.ts";
import { readCache } from "../../../shared/store/clients.ts";
import { syncMpCredentialsToBackend } from "../../../shared/sync/sync.ts";
import { recordEvent } from "../../../shared/store/audit.ts";

/** provision-step-7-1: links an approved client to its account and syncs its credentials. */
export const handler = defineFunction({
  name: "provision-step-7-1",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "backendDbUrl", "tokenKeys"],
  input: v.strictObject({ account_id: uuid, client_id: uuid }),
  async run({ input, ctx, log, requestId }) {
    const { account_id, client_id } = input;
    if (!(await ctx.backend((sql) => readCache(sql, client_id)))) {
      throw new HttpError(404, "client_not_found", "no such client in the Backend DB");
    }
    const link = await ctx.admin((sql) => linkAccount(sql, account_id, client_id));
    if (link === "account_not_found") {
      throw new HttpError(404, "account_not_found", "no such account");
    }
    if (link !== "linked") {
      throw new HttpError(
        409,
        "account_linked_elsewhere",
        link === "account_linked_elsewhere"
          ? "the account already feeds another client"
          : "the client is already fed by another account",
      );
    }
    const sync = await syncMpCredentialsToBackend(ctx, account_id, client_id);
    const fields = { account_id, client_id, result: sync.result, token_version: sync.version };
    await recordEvent(ctx, log, {
      event: "provisioned",
      accountId: account_id,
      clientId: client_id,
      detail: { result: sync.result, token_version: sync.version ?? null },
      requestId,
    });
    if (sync.result === "synced" || sync.result === "already_current") {
      log.info("Step 7.1: MP credentials synced to Backend DB", fields);
      return json(200, { account_id, client_id, synced: true, token_version: sync.version });
    }
    if (sync.result === "mp_not_connected") {
      log.info("Step 7.1: account has no MP connection; nothing to sync", fields);
      return json(200, { account_id, client_id, synced: false, reason: "mp_not_connected" });
    }
    if (sync.result === "client_not_found") {
      throw new HttpError(404, "client_not_found", "no such client in the Backend DB");
    }
    throw new HttpError(404, "account_not_found", "no such account");
  },
});
