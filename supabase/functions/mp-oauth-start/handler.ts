import * as v from "valibot";
import { defineFunction, HttpError, json, uuid } from "../../../shared/platform/http.ts";
import { encryptSecret } from "../../../shared/platform/crypto.ts";
import { authorizationUrl } from "../../../shared/mercadopago/api.ts";
import {
  createState,
  hashState,
  pkceChallenge,
  randomToken,
} from "../../../shared/store/oauth_states.ts";
import { recordEvent } from "../../../shared/store/audit.ts";

/**
 * mp-oauth-start: a single-use, 10-minute state bound to the account (only its hash stored),
 * a PKCE S256 pair when MP_OAUTH_PKCE is on (the verifier stored encrypted), and the
 * MercadoPago authorization URL the admin panel sends the seller to. Only a state started
 * with `replace_seller: true` may connect the account to a seller other than its own.
 */
export const handler = defineFunction({
  name: "mp-oauth-start",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "tokenKeys", "mpClientId", "mpRedirectUri"],
  input: v.strictObject({
    account_id: uuid,
    replace_seller: v.optional(v.boolean("must be a boolean")),
  }),
  async run({ input: { account_id, replace_seller = false }, ctx, log, requestId }) {
    const state = randomToken();
    const verifier = ctx.config.mpOauthPkce ? randomToken() : undefined;
    const verifierEncrypted = verifier
      ? await encryptSecret(await ctx.keys(), account_id, "code_verifier", verifier)
      : null;
    const stateHash = await hashState(state);
    const created = await ctx.admin((sql) =>
      createState(sql, stateHash, account_id, verifierEncrypted, replace_seller)
    );
    if (!created) throw new HttpError(404, "account_not_found", "no such account");
    const url = authorizationUrl(ctx.config, {
      state,
      codeChallenge: verifier ? await pkceChallenge(verifier) : undefined,
    });
    await recordEvent(ctx, log, {
      event: "oauth_started",
      accountId: account_id,
      detail: {
        pkce: !!verifier,
        replace_seller,
        expires_at: created.expires_at.toISOString(),
      },
      requestId,
    });
    log.info("MP OAuth started", { account_id, pkce: !!verifier, replace_seller });
    return json(200, { url, expires_at: created.expires_at.toISOString() });
  },
});
