/**
 * Changes of a seller's connection that span both databases. Revoke clears the master,
 * then the cache at the new version, and only then reports success (SPEC §5 invariant 2).
 */
import { revokeAccount } from "./accounts.ts";
import { writeCache } from "./clients.ts";
import type { Context } from "./context.ts";
import { recordEvent } from "./audit.ts";
import type { Logger } from "./log.ts";

/** Revokes account `accountId` in both databases; false when the account does not exist. */
export async function revokeConnection(
  ctx: Context,
  log: Logger,
  accountId: string,
  opts: { requestId?: string; reason?: string } = {},
): Promise<boolean> {
  const revoked = await ctx.admin((sql) => revokeAccount(sql, accountId));
  if (!revoked) return false;
  const clientId = revoked.backend_client_id;
  if (clientId) {
    await ctx.backend((sql) =>
      writeCache(sql, clientId, {
        accessToken: null,
        publicKey: null,
        version: revoked.mp_token_version,
      })
    );
  }
  if (revoked.changed) {
    await recordEvent(ctx, log, {
      event: "revoked",
      accountId,
      clientId,
      detail: { reason: opts.reason ?? "admin", token_version: revoked.mp_token_version },
      requestId: opts.requestId,
    });
  }
  log.info("MP connection revoked", {
    account_id: accountId,
    client_id: clientId,
    token_version: revoked.mp_token_version,
    changed: revoked.changed,
  });
  return true;
}
