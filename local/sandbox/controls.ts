/**
 * The sandbox's test controls (`/__sandbox/*`): faults, latency, the latch, seeded grants,
 * silent invalidation, deauthorization, the last pair issued, and reset.
 */
import { isInt, mpError, parseObject } from "./wire.ts";
import { deauthorizedNotification, deliver } from "./notifications.ts";
import {
  type AccessEntry,
  AFTER_MODES,
  BEFORE_MODES,
  type FaultMode,
  newStats,
  type RefreshEntry,
  type SandboxState,
} from "./state.ts";

/** A `POST /__sandbox/<path>` control. */
export async function control(s: SandboxState, path: string, req: Request): Promise<Response> {
  const text = await req.text().catch(() => "{");
  const body = text.trim() === "" ? {} : parseObject(text);
  if (!body) return mpError(400, "invalid_request", "malformed request body");
  if (path === "/__sandbox/faults") return setFault(s, body);
  if (path === "/__sandbox/latency") {
    if (!isInt(body.ms, 0, 600_000)) return mpError(400, "invalid_request", "invalid ms");
    s.latencyMs = body.ms as number;
    return Response.json({ ok: true });
  }
  if (path === "/__sandbox/hold") {
    if (typeof body.hold !== "boolean") return mpError(400, "invalid_request", "invalid hold");
    if (body.hold) s.holding = true;
    else s.releaseHeld();
    return Response.json({ hold: s.holding, held: s.held.size });
  }
  if (path === "/__sandbox/grants") return seedGrants(s, body);
  if (path === "/__sandbox/invalidate") return invalidate(s, body);
  if (path === "/__sandbox/deauthorize") return await deauthorize(s, body);
  return mpError(404, "not_found", `resource ${path} not found`);
}

/**
 * `POST /__sandbox/faults {"mode","count"}`: the next `count` calls fail as `mode` says.
 * After processing a token call, `lose_answer` drops and `error_500_after` replaces whatever
 * it answered; `malformed_200` strips `access_token` from, and `other_seller` hands a new
 * seller's pair (a grant of its own) in place of, a successful one.
 */
function setFault(s: SandboxState, body: Record<string, unknown>): Response {
  const count = body.count ?? 1;
  const modes: readonly string[] = [...BEFORE_MODES, ...AFTER_MODES];
  if (body.mode === "none" || count === 0) s.fault = null;
  else if (modes.includes(body.mode as string) && isInt(count, 1, 1e9)) {
    s.fault = { mode: body.mode as FaultMode, count: count as number };
  } else return mpError(400, "invalid_request", "invalid fault");
  return Response.json({ ok: true });
}

/**
 * `POST /__sandbox/grants {"count","user_id"?,"expires_in"?}`: token sets as if sellers had
 * authorized (access tokens living `expires_in` seconds, default MercadoPago's 180 days).
 */
function seedGrants(s: SandboxState, body: Record<string, unknown>): Response {
  const count = body.count ?? 1;
  if (!isInt(count, 1, 10_000) || (body.user_id !== undefined && !isInt(body.user_id, 1))) {
    return mpError(400, "invalid_request", "invalid count or user_id");
  }
  if (body.expires_in !== undefined && !isInt(body.expires_in, 1, 10 * 365 * 86_400)) {
    return mpError(400, "invalid_request", "invalid expires_in");
  }
  const grants = [];
  for (let i = 0; i < (count as number); i++) {
    const seller = s.seller(body.user_id as number | undefined);
    grants.push(s.issueTokens(seller, { via: "seed" }, body.expires_in as number | undefined));
  }
  return Response.json({ grants });
}

/**
 * `POST /__sandbox/invalidate {"user_id","scope"}`: MercadoPago silently kills the seller's
 * access tokens (`access`; refreshing still works) or its grants (`grant`: refresh tokens too).
 */
function invalidate(s: SandboxState, body: Record<string, unknown>): Response {
  const { user_id: userId, scope } = body;
  if (!isInt(userId, 1) || (scope !== "access" && scope !== "grant")) {
    return mpError(400, "invalid_request", "invalid user_id or scope");
  }
  const mine = (e: AccessEntry | RefreshEntry) => e.grant.userId === userId;
  const cause = scope === "grant" ? "invalidate_grant" : "invalidate_access";
  let invalidated = s.revoke(s.accessTokens, mine, cause);
  if (scope === "grant") {
    invalidated += s.revoke(s.refreshTokens, (e) => mine(e) && !e.used, cause);
  }
  return Response.json({ ok: true, invalidated });
}

/**
 * The seller removes the application: every token of theirs stops working; with
 * `notify_url`, the signed `application.deauthorized` notification is delivered there and
 * its answer's status returned.
 */
async function deauthorize(s: SandboxState, body: Record<string, unknown>): Promise<Response> {
  const userId = body.user_id;
  const notifyUrl = body.notify_url;
  if (!isInt(userId, 1) || (notifyUrl !== undefined && !URL.canParse(String(notifyUrl)))) {
    return mpError(400, "invalid_request", "invalid user_id or notify_url");
  }
  const mine = (e: AccessEntry | RefreshEntry) => e.grant.userId === userId;
  const revoked = s.revoke(s.accessTokens, mine, "deauthorize") +
    s.revoke(s.refreshTokens, mine, "deauthorize");
  if (notifyUrl === undefined) return Response.json({ ok: true, revoked });
  if (!s.opts.webhookSecret) throw new Error("the sandbox has no webhookSecret to sign with");
  const note = await deauthorizedNotification(s.opts.webhookSecret, userId as number, s.now());
  return Response.json({ ok: true, revoked, notified: await deliver(String(notifyUrl), note) });
}

/** `GET /__sandbox/last_tokens[?user_id=n]`: the last pair issued, even if its answer was lost. */
export function lastIssued(s: SandboxState, url: URL): Response {
  const userId = url.searchParams.get("user_id");
  const key = userId === null ? "any" : Number(userId);
  return Response.json({ tokens: s.lastTokens.get(key) ?? null });
}

/**
 * `POST /__sandbox/reset`: what one test may leave behind for the next is gone — no fault
 * queued, no latency, the latch open (held calls go on), counters at zero, no last pair
 * remembered. Sellers, grants, tokens and pending codes stay: the databases' accounts hold
 * tokens the sandbox issued, and they must keep working.
 */
export function reset(s: SandboxState): Response {
  s.fault = null;
  s.latencyMs = 0;
  s.releaseHeld();
  s.stats = newStats();
  s.lastTokens.clear();
  return Response.json({ ok: true });
}

/** `GET /__sandbox/controls`: the fault queued (mode and calls left), the latency, the latch. */
export function controlsSet(s: SandboxState): Response {
  return Response.json({
    fault: s.fault ? { ...s.fault } : null,
    latency_ms: s.latencyMs,
    hold: s.holding,
    held: s.held.size,
  });
}
