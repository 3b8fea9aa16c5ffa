/**
 * Checkout's report that MercadoPago rejected (401) the token of version n it was given
 * (get-mp-config step 4; docs/contract.md). The caller is not trusted: when n is the current
 * version, MercadoPago is asked (`GET /users/me` with that token), at most once a minute per
 * account; a report within that minute gets the last verdict. A confirmed dead token is
 * handled as `shared/connection/dead_token.ts` says; a token MercadoPago still accepts is
 * answered again (audit `invalid_report_unconfirmed`); an older n gets the current token.
 * MercadoPago is asked through the account's own application (its site's).
 */
import { appOfSite } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import { DomainError } from "../platform/errors.ts";
import type { Logger } from "../platform/log.ts";
import { readAccountByClient } from "../store/accounts.ts";
import { recordEvent } from "../store/audit.ts";
import { claimTokenCheck, recordVerified } from "../store/verification.ts";
import { handleDeadToken } from "../connection/dead_token.ts";
import { verifyStoredToken } from "../connection/token_check.ts";
import { getMpConfig, type MpConfig } from "./get_config.ts";

/** Handles a report of a rejected token of `version`, then answers as get-mp-config does. */
export async function reportRejectedToken(
  ctx: Context,
  log: Logger,
  clientId: string,
  version: number,
  requestId: string,
): Promise<MpConfig> {
  const account = await ctx.admin((sql) => readAccountByClient(sql, clientId));
  if (
    account?.mp_connected && account.mp_access_token_encrypted &&
    account.mp_token_version === version &&
    (await ctx.admin((sql) => claimTokenCheck(sql, account.id, version))) === "check"
  ) {
    const app = appOfSite(ctx.config, account.mp_site_id);
    const check = app
      ? await verifyStoredToken(ctx, log, app, account.id, account.mp_access_token_encrypted)
      : { verdict: "no_application" as const };
    if (check.verdict === "no_application") {
      log.error("No MercadoPago application for the account's site; answered as stored", {
        account_id: account.id,
        site: account.mp_site_id,
      });
    }
    if (check.verdict === "unknown") {
      log.warn("MercadoPago could not verify a reported token; answered as stored", {
        account_id: account.id,
        error: check.error.kind,
      });
    }
    const verdict = check.verdict;
    if (verdict === "alive") {
      await ctx.admin((sql) => recordVerified(sql, [{ id: account.id, version }]));
      log.warn("Rejected-token report not confirmed: MercadoPago accepts the token", {
        client_id: clientId,
        account_id: account.id,
        token_version: version,
      });
      await recordEvent(ctx, log, {
        event: "invalid_report_unconfirmed",
        accountId: account.id,
        clientId,
        detail: { token_version: version },
        requestId,
      });
    } else if (verdict === "dead") {
      const outcome = await handleDeadToken(ctx, log, account.id, version, {
        requestId,
        source: "report",
      });
      if (outcome === "unavailable") {
        throw new DomainError("unavailable", "the Backend DB could not be reached; retry");
      }
      if (outcome === "busy") {
        throw new DomainError("unavailable", "a refresh of this account is in progress; retry");
      }
    }
  }
  return await getMpConfig(ctx, log, clientId, requestId);
}
