/** The sandbox's `GET /users/me`: who a working access token belongs to. */
import { mpError } from "./wire.ts";
import { failBefore } from "./faults.ts";
import type { SandboxState } from "./state.ts";

/** The seller behind a working access token; 401 for any other. Every verdict is in the ledger. */
export async function usersMe(s: SandboxState, req: Request): Promise<Response> {
  s.stats.users_me_calls++;
  const auth = req.headers.get("authorization") ?? "";
  const token = /^bearer /i.test(auth) ? auth.slice(7).trim() : "";
  const entry = s.accessTokens.get(token);
  const appStats = s.appStats(entry?.grant.clientId);
  if (appStats) appStats.users_me_calls++;
  const res = await verdict(s, req, token);
  s.ledger.checked(token || null, entry?.grant.userId ?? null, res.status, !req.signal.aborted);
  return res;
}

/**
 * The answer for `token`: a fault or latency of its application (the one that issued it) or of
 * every call first; then its seller's id, nickname and site, or 401.
 */
async function verdict(s: SandboxState, req: Request, token: string): Promise<Response> {
  const app = s.accessTokens.get(token)?.grant.clientId;
  const fail = await failBefore(s, req, s.takeFault("users_me", null, app), app);
  if (fail) return fail;
  const entry = s.accessTokens.get(token);
  if (!entry || !s.live(entry) || s.now() >= entry.expiresAt) {
    return mpError(401, "unauthorized", "invalid access token");
  }
  const id = entry.grant.userId;
  const siteId = s.sellers.get(id)?.siteId ?? s.defaultApp.siteId;
  return Response.json({ id, nickname: `TESTUSER${id}`, site_id: siteId });
}
