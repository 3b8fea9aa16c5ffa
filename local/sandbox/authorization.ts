/** The sandbox's `GET /authorization`: the seller approves (or denies) the application. */
import { hex, isInt, isSite, mpError } from "./wire.ts";
import type { SandboxState } from "./state.ts";

/**
 * Redirects to `redirect_uri` with a code bound to application `client_id` (a new seller, or
 * seller `user_id`) and the state, or with `error=access_denied` when the query has `deny=1`. A
 * new seller belongs to the application's site, or to `seller_site`; an existing seller keeps
 * its site (another `seller_site` for it is refused).
 */
export function authorize(s: SandboxState, url: URL): Response {
  const q = Object.fromEntries(url.searchParams);
  const app = s.apps.get(q.client_id ?? "");
  if (!app) return mpError(400, "invalid_client", "invalid client_id");
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
  const siteProblem = sellerSiteProblem(s, q.user_id, q.seller_site);
  if (siteProblem) return mpError(400, "invalid_request", siteProblem);
  const target = new URL(q.redirect_uri);
  if (q.deny === "1") {
    target.searchParams.set("error", "access_denied");
  } else {
    const userId = s.seller(
      q.user_id === undefined ? undefined : Number(q.user_id),
      app,
      q.seller_site ?? app.siteId,
    );
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
    s.appStats(app.clientId)!.authorizations++;
    target.searchParams.set("code", code);
  }
  if (q.state !== undefined) target.searchParams.set("state", q.state);
  return Response.redirect(target, 302);
}

/**
 * Why `seller_site` cannot apply (a site MercadoPago does not run, or not the site of existing
 * seller `userId`), or undefined when it can (or is absent).
 */
export function sellerSiteProblem(
  s: SandboxState,
  userId: string | number | undefined,
  sellerSite: unknown,
): string | undefined {
  if (sellerSite === undefined) return undefined;
  if (!isSite(sellerSite)) return "invalid seller_site";
  const existing = userId === undefined ? undefined : s.sellers.get(Number(userId));
  if (existing && existing.siteId !== sellerSite) {
    return `seller ${userId} belongs to site ${existing.siteId}`;
  }
}
