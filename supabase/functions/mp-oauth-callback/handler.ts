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

/** Whether a callback's answer sends the browser back with `invalid_state` (nothing was used). */
function refusedState(answer: Response): boolean {
  const location = answer.headers.get("location");
  return location !== null && new URL(location).searchParams.get("reason") === "invalid_state";
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
  // A callback without a usable state (`invalid_state`) is refused before anything could change.
  changes: { ...CONNECTION_CHANGES, when: (_input, answer) => !refusedState(answer) },
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
