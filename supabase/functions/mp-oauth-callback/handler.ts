import { defineFunction } from "../../../shared/platform/http.ts";
import { completeCallback, failure } from "../../../shared/oauth/callback.ts";
import type { CallbackResult } from "../../../shared/oauth/result.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";

/** A 302 to APP_RETURN_URL with the result in its query string. */
function redirect(appReturnUrl: string, result: CallbackResult): Response {
  const target = new URL(appReturnUrl);
  for (const [k, val] of Object.entries(result)) target.searchParams.set(k, val);
  return new Response(null, {
    status: 302,
    headers: {
      location: target.href,
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
    },
  });
}

/**
 * mp-oauth-callback: MercadoPago sends the seller's browser here with `code` and `state`
 * (or `error` and `state`). Public: its safety is the single-use state, PKCE and the exact
 * redirect URI (the flow: `shared/oauth/callback.ts`). Always answers 302 to APP_RETURN_URL,
 * errors included (reason in the query).
 */
export const handler = defineFunction({
  name: "mp-oauth-callback",
  methods: ["GET"],
  auth: "public",
  needs: [
    "appReturnUrl",
    "adminDbUrl",
    "backendDbUrl",
    "tokenKeys",
    "mpClientId",
    "mpClientSecret",
    "mpRedirectUri",
  ],
  changes: CONNECTION_CHANGES,
  async run(call) {
    // Errors are logged as every function logs them; the browser still goes back, with the code.
    const { ctx, log, requestId } = call;
    const query = new URL(call.req.url).searchParams;
    const result = await completeCallback({ query, ctx, log, requestId }).catch((err) =>
      failure(err, log)
    );
    return redirect(call.ctx.config.appReturnUrl!, result);
  },
});
