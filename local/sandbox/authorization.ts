/** The sandbox's `GET /authorization`: the seller approves (or denies) the application. */
import { hex, isInt, mpError } from "./wire.ts";
import type { SandboxState } from "./state.ts";

/**
 * Redirects to `redirect_uri` with a code (a new seller, or seller `user_id`) and the state,
 * or with `error=access_denied` when the query has `deny=1`.
 */
export function authorize(s: SandboxState, url: URL): Response {
  const q = Object.fromEntries(url.searchParams);
  if (q.client_id !== s.opts.clientId) return mpError(400, "invalid_client", "invalid client_id");
  if (q.response_type !== "code") {
    return mpError(400, "unsupported_response_type", "response_type must be code");
  }
  if (!q.redirect_uri || !URL.canParse(q.redirect_uri)) {
    return mpError(400, "invalid_request", "redirect_uri is required");
  }
  if (q.code_challenge && q.code_challenge_method !== "S256") {
    return mpError(400, "invalid_request", "code_challenge_method must be S256");
  }
  if (q.user_id !== undefined && !(/^\d+$/.test(q.user_id) && isInt(Number(q.user_id), 1))) {
    return mpError(400, "invalid_request", "invalid user_id");
  }
  const target = new URL(q.redirect_uri);
  if (q.deny === "1") {
    target.searchParams.set("error", "access_denied");
  } else {
    const userId = s.seller(q.user_id === undefined ? undefined : Number(q.user_id));
    const code = `TG-${hex(12)}-${userId}`;
    s.issued.add(code);
    s.codes.set(code, {
      clientId: q.client_id,
      redirectUri: q.redirect_uri,
      userId,
      codeChallenge: q.code_challenge || undefined,
      issuedAt: s.now(),
    });
    s.stats.authorizations++;
    target.searchParams.set("code", code);
  }
  if (q.state !== undefined) target.searchParams.set("state", q.state);
  return Response.redirect(target, 302);
}
