/**
 * Provisioning step 7.1 (docs/contract.md, provision-step-7-1): link an approved client to
 * its account, then sync the account's credentials to the client's cache; repeating it is
 * harmless.
 */
import type { Context } from "../platform/context.ts";
import { DomainError } from "../platform/errors.ts";
import type { Logger } from "../platform/log.ts";
import { linkAccount } from "../store/connections.ts";
import { recordEvent } from "../store/audit.ts";
import { readCache } from "../store/clients.ts";
import { syncMpCredentialsToBackend } from "../sync/sync.ts";

/** What step 7.1 did: synced at a version, or nothing to sync (DomainError otherwise). */
type Provisioned =
  | { synced: true; token_version: number | undefined }
  | { synced: false; reason: "mp_not_connected" };

/** Links `accountId` to `clientId` and syncs its credentials to the cache. */
export async function provisionClient(
  ctx: Context,
  log: Logger,
  opts: { accountId: string; clientId: string; requestId: string },
): Promise<Provisioned> {
  const { accountId: account_id, clientId: client_id } = opts;
  if (!(await ctx.backend((sql) => readCache(sql, client_id)))) {
    throw new DomainError("client_not_found", "no such client in the Backend DB");
  }
  const link = await ctx.admin((sql) => linkAccount(sql, account_id, client_id));
  if (link === "account_not_found") {
    throw new DomainError("account_not_found", "no such account");
  }
  if (link !== "linked") {
    throw new DomainError(
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
    requestId: opts.requestId,
  });
  if (sync.result === "synced" || sync.result === "already_current") {
    log.info("Step 7.1: MP credentials synced to Backend DB", fields);
    return { synced: true, token_version: sync.version };
  }
  if (sync.result === "mp_not_connected") {
    log.info("Step 7.1: account has no MP connection; nothing to sync", fields);
    return { synced: false, reason: "mp_not_connected" };
  }
  if (sync.result === "client_not_found") {
    throw new DomainError("client_not_found", "no such client in the Backend DB");
  }
  throw new DomainError("account_not_found", "no such account");
}
