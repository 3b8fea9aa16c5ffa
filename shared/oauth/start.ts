/**
 * The start of an OAuth connect (docs/contract.md, mp-oauth-start): a single-use, 10-minute
 * state bound to the account (only its hash stored), a PKCE S256 pair when MP_OAUTH_PKCE is on
 * (the verifier stored encrypted), and the MercadoPago authorization URL. Only a state started
 * with `replaceSeller` may connect the account to a seller other than its own.
 */
import type { Context } from "../platform/context.ts";
import { encryptSecret } from "../platform/crypto.ts";
import type { Logger } from "../platform/log.ts";
import { authorizationUrl } from "../mercadopago/api.ts";
import { recordEvent } from "../store/audit.ts";
import { createState } from "../store/oauth_states.ts";
import { hashState, pkceChallenge, randomToken } from "./state_token.ts";

/** Starts a connect for `accountId`: the URL to send the seller to and its expiry; undefined when no such account. */
export async function startOauth(
  ctx: Context,
  log: Logger,
  opts: { accountId: string; replaceSeller: boolean; requestId: string },
): Promise<{ url: string; expires_at: string } | undefined> {
  const { accountId, replaceSeller } = opts;
  const state = randomToken();
  const verifier = ctx.config.mpOauthPkce ? randomToken() : undefined;
  const verifierEncrypted = verifier
    ? await encryptSecret(await ctx.keys(), accountId, "code_verifier", verifier)
    : null;
  const stateHash = await hashState(state);
  const created = await ctx.admin((sql) =>
    createState(sql, stateHash, accountId, verifierEncrypted, replaceSeller)
  );
  if (!created) return undefined;
  const url = authorizationUrl(ctx.config, {
    state,
    codeChallenge: verifier ? await pkceChallenge(verifier) : undefined,
  });
  await recordEvent(ctx, log, {
    event: "oauth_started",
    accountId,
    detail: {
      pkce: !!verifier,
      replace_seller: replaceSeller,
      expires_at: created.expires_at.toISOString(),
    },
    requestId: opts.requestId,
  });
  log.info("MP OAuth started", {
    account_id: accountId,
    pkce: !!verifier,
    replace_seller: replaceSeller,
  });
  return { url, expires_at: created.expires_at.toISOString() };
}
