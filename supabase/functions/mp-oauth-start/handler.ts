import * as v from "valibot";
import { MP_SITES } from "../../../shared/platform/config.ts";
import { DomainError } from "../../../shared/platform/errors.ts";
import { defineFunction, json, uuid } from "../../../shared/platform/http.ts";
import { startOauth } from "../../../shared/oauth/start.ts";

/**
 * mp-oauth-start: the MercadoPago authorization URL the admin panel sends the seller to, with
 * a single-use state (and PKCE when on), through the application of `site` (default: the
 * account's, else the default application); `replace_seller: true` allows a seller change
 * (`shared/oauth/start.ts`).
 */
export const handler = defineFunction({
  name: "mp-oauth-start",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "tokenKeys", "mpClientId", "mpRedirectUri"],
  input: v.strictObject({
    account_id: uuid,
    replace_seller: v.optional(v.boolean("must be a boolean")),
    site: v.optional(v.picklist(MP_SITES, `must be one of ${MP_SITES.join(", ")}`)),
  }),
  async run({ input, ctx, log, requestId }) {
    const started = await startOauth(ctx, log, {
      accountId: input.account_id,
      replaceSeller: input.replace_seller ?? false,
      site: input.site,
      requestId,
    });
    if (!started) throw new DomainError("account_not_found", "no such account");
    return json(200, started);
  },
});
