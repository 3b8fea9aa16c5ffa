/**
 * MercadoPago's `application.deauthorized` notification is a claim, not a command: its
 * signature does not cover the body, so the seller it names is checked with MercadoPago
 * before anything is revoked. For each connected account of that seller the stored access
 * token is tried (`GET /users/me`): only a 401 confirms the deauthorization (or an earlier
 * 401 that already cleared the token), and the account is then revoked exactly as mp-revoke
 * does. A token that still works is left alone. Only the accounts connected through the
 * application the notification is for are its concern, each asked about through that
 * application.
 */
import { connectedAccountsOfSeller } from "../store/accounts.ts";
import { recordEvent } from "../store/audit.ts";
import { revokeConnection } from "./connection.ts";
import type { MpApp } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import { verifyStoredToken } from "./token_check.ts";

/** What checking a deauthorization did, per account. */
interface DeauthorizationOutcome {
  revoked: string[];
  unconfirmed: string[];
  /** Accounts whose stored token could not be decrypted (left alone, logged). */
  undecryptable: string[];
}

/**
 * Confirms with MercadoPago, account by account, that seller `mpUserId` removed the
 * application `app`, and revokes the confirmed ones. Throws MpError when MercadoPago could not be
 * asked (the caller answers 503 so MercadoPago delivers again); accounts revoked before that
 * stay revoked (a revoke is idempotent).
 */
export async function confirmDeauthorization(
  ctx: Context,
  log: Logger,
  app: MpApp,
  mpUserId: number,
  requestId: string,
): Promise<DeauthorizationOutcome> {
  const out: DeauthorizationOutcome = { revoked: [], unconfirmed: [], undecryptable: [] };
  const isDefault = app.site === ctx.config.mpDefaultSite;
  const accounts = await ctx.admin((sql) =>
    connectedAccountsOfSeller(sql, mpUserId, { site: app.site, isDefault })
  );
  for (const account of accounts) {
    // Connected without an access token: MercadoPago already confirmed it dead (a 401 found by
    // mp-probe or a report, `dead_token.ts`), which is the confirmation this claim needs.
    const check = account.mp_access_token_encrypted === null
      ? { verdict: "dead" as const }
      : await verifyStoredToken(ctx, log, app, account.id, account.mp_access_token_encrypted);
    if (check.verdict === "undecryptable") {
      out.undecryptable.push(account.id);
      continue;
    }
    if (check.verdict === "unknown") throw check.error;
    if (check.verdict === "dead") {
      await revokeConnection(ctx, log, account.id, { requestId, reason: "mp_deauthorized" });
      out.revoked.push(account.id);
    } else {
      log.warn("MP deauthorization not confirmed: the stored token still works", {
        account_id: account.id,
        mp_user_id: mpUserId,
      });
      await recordEvent(ctx, log, {
        event: "deauthorization_unconfirmed",
        accountId: account.id,
        detail: { mp_user_id: mpUserId },
        requestId,
      });
      out.unconfirmed.push(account.id);
    }
  }
  return out;
}
