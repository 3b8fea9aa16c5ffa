/**
 * The start of an OAuth connect (docs/contract.md, mp-oauth-start): the application of the
 * site asked for (else the account's, else the default one), a single-use, 10-minute state
 * bound to the account and that site (only its hash stored), a PKCE S256 pair when that
 * application uses PKCE (the verifier stored encrypted), and its authorization URL. Only a state
 * started with `replaceSeller` may connect the account to a seller other than its own.
 */
import { appOfSite, type MpApp } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import { encryptSecret } from "../platform/crypto.ts";
import { DomainError } from "../platform/errors.ts";
import type { Logger } from "../platform/log.ts";
import { authorizationUrl } from "../mercadopago/api.ts";
import { readAccountSite } from "../store/accounts.ts";
import { recordEvent } from "../store/audit.ts";
import { createState } from "../store/oauth_states.ts";
import { hashState, pkceChallenge, randomToken } from "./state_token.ts";

/**
 * The application a connect goes through: the one of `site` when given, else of the account's
 * stored site, else the default one; `invalid_request` when that site has no application in
 * this configuration. Pure.
 */
export function connectApp(
  config: Context["config"],
  site: string | undefined,
  accountSite: string | null,
): MpApp {
  const app = appOfSite(config, site ?? accountSite);
  if (app) return app;
  throw new DomainError(
    "invalid_request",
    site === undefined
      ? "site: the account's site has no MercadoPago application here; give one"
      : "site: no MercadoPago application for this site",
  );
}

/**
 * Starts a connect for `accountId` in `site` (see {@link connectApp}): the URL to send the seller
 * to and its expiry; undefined when no such account.
 */
export async function startOauth(
  ctx: Context,
  log: Logger,
  opts: { accountId: string; replaceSeller: boolean; requestId: string; site?: string },
): Promise<{ url: string; expires_at: string } | undefined> {
  const { accountId, replaceSeller } = opts;
  let accountSite: string | null = null;
  if (opts.site === undefined) {
    const stored = await ctx.admin((sql) => readAccountSite(sql, accountId));
    if (stored === undefined) return undefined;
    accountSite = stored;
  }
  const app = connectApp(ctx.config, opts.site, accountSite);
  const state = randomToken();
  const verifier = app.pkce ? randomToken() : undefined;
  const verifierEncrypted = verifier
    ? await encryptSecret(await ctx.keys(), accountId, "code_verifier", verifier)
    : null;
  const stateHash = await hashState(state);
  const created = await ctx.admin((sql) =>
    createState(sql, stateHash, accountId, verifierEncrypted, replaceSeller, app.site)
  );
  if (!created) return undefined;
  const url = authorizationUrl(app, {
    state,
    codeChallenge: verifier ? await pkceChallenge(verifier) : undefined,
  });
  await recordEvent(ctx, log, {
    event: "oauth_started",
    accountId,
    detail: {
      pkce: !!verifier,
      replace_seller: replaceSeller,
      site: app.site,
      expires_at: created.expires_at.toISOString(),
    },
    requestId: opts.requestId,
  });
  log.info("MP OAuth started", {
    account_id: accountId,
    site: app.site,
    pkce: !!verifier,
    replace_seller: replaceSeller,
  });
  return { url, expires_at: created.expires_at.toISOString() };
}
