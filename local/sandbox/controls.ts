/**
 * The sandbox's test controls (`/__sandbox/*`): faults, latency, the latch, seeded grants,
 * silent invalidation, deauthorization, the last pair issued, and reset. Every control takes an
 * optional `"client_id"` limiting it to one application: a fault, latency or latch of its own
 * (which takes precedence over the one of every call), grants of that application, only its
 * tokens invalidated or deauthorized.
 */
import { isInt, mpError, parseObject } from "./wire.ts";
import { sellerSiteProblem } from "./authorization.ts";
import { deauthorizedNotification, deliver } from "./notifications.ts";
import {
  type AccessEntry,
  AFTER_MODES,
  BEFORE_MODES,
  type FaultMode,
  newStats,
  type RefreshEntry,
  type SandboxApp,
  type SandboxState,
} from "./state.ts";

/** A `POST /__sandbox/<path>` control. */
export async function control(s: SandboxState, path: string, req: Request): Promise<Response> {
  const text = await req.text().catch(() => "{");
  const body = text.trim() === "" ? {} : parseObject(text);
  if (!body) return mpError(400, "invalid_request", "malformed request body");
  const app = appOf(s, body);
  if (app === null) return mpError(400, "invalid_request", "unknown client_id");
  if (path === "/__sandbox/faults") return setFault(s, body, app);
  if (path === "/__sandbox/latency") {
    if (!isInt(body.ms, 0, 600_000)) return mpError(400, "invalid_request", "invalid ms");
    if (app) s.controlsOf(app.clientId).latencyMs = body.ms as number;
    else s.latencyMs = body.ms as number;
    return Response.json({ ok: true });
  }
  if (path === "/__sandbox/hold") return setHold(s, body, app);
  if (path === "/__sandbox/grants") return seedGrants(s, body, app);
  if (path === "/__sandbox/invalidate") return invalidate(s, body, app);
  if (path === "/__sandbox/deauthorize") return await deauthorize(s, body, app);
  return mpError(404, "not_found", `resource ${path} not found`);
}

/**
 * The application a control's `"client_id"` names: undefined when absent (every application),
 * null when the sandbox knows no such application.
 */
function appOf(s: SandboxState, body: Record<string, unknown>): SandboxApp | undefined | null {
  const id = body.client_id;
  if (id === undefined) return undefined;
  if (typeof id !== "string" && typeof id !== "number") return null;
  return s.apps.get(String(id)) ?? null;
}

/**
 * `POST /__sandbox/faults {"mode","count","client_id"?}`: the next `count` calls (of that
 * application only, with `client_id`) fail as `mode` says. After processing a token call,
 * `lose_answer` drops and `error_500_after` replaces whatever it answered; `malformed_200` strips
 * `access_token` from, and `other_seller` hands a new seller's pair (a grant of its own) in place
 * of, a successful one. `"mode":"none"` or `"count":0` clears that fault (the application's or
 * every call's, not both).
 */
function setFault(s: SandboxState, body: Record<string, unknown>, app?: SandboxApp): Response {
  const count = body.count ?? 1;
  const modes: readonly string[] = [...BEFORE_MODES, ...AFTER_MODES];
  const holder = app ? s.controlsOf(app.clientId) : s;
  if (body.mode === "none" || count === 0) holder.fault = null;
  else if (modes.includes(body.mode as string) && isInt(count, 1, 1e9)) {
    holder.fault = { mode: body.mode as FaultMode, count: count as number };
  } else return mpError(400, "invalid_request", "invalid fault");
  return Response.json({ ok: true });
}

/**
 * `POST /__sandbox/hold {"hold","client_id"?}`: closes or opens the latch of every token call,
 * or the application's own (holding only its calls; opening it releases only what it held).
 */
function setHold(s: SandboxState, body: Record<string, unknown>, app?: SandboxApp): Response {
  if (typeof body.hold !== "boolean") return mpError(400, "invalid_request", "invalid hold");
  if (!body.hold) s.releaseHeld(app?.clientId);
  else if (app) s.controlsOf(app.clientId).holding = true;
  else s.holding = true;
  return Response.json(holdState(s, app?.clientId));
}

/** What a latch says: whether it holds, and how many calls it holds (every call's: all held). */
function holdState(s: SandboxState, clientId?: string): { hold: boolean; held: number } {
  if (clientId === undefined) return { hold: s.holding, held: s.heldCount() };
  return { hold: s.appHolding(clientId), held: s.heldCount(clientId) };
}

/** `GET /__sandbox/hold[?client_id=…]`: the latch of every call, or of one application. */
export function holdView(s: SandboxState, url: URL): Response {
  const id = url.searchParams.get("client_id");
  if (id === null) return Response.json(holdState(s));
  if (!s.apps.has(id)) return mpError(400, "invalid_request", "unknown client_id");
  return Response.json(holdState(s, id));
}

/**
 * `POST /__sandbox/grants {"count","user_id"?,"expires_in"?,"client_id"?,"seller_site"?}`: token
 * sets as if sellers had authorized the application (`client_id`, default the first one; access
 * tokens living `expires_in` seconds, default MercadoPago's 180 days). New sellers belong to the
 * application's site, or to `seller_site`.
 */
function seedGrants(s: SandboxState, body: Record<string, unknown>, app?: SandboxApp): Response {
  const count = body.count ?? 1;
  if (!isInt(count, 1, 10_000) || (body.user_id !== undefined && !isInt(body.user_id, 1))) {
    return mpError(400, "invalid_request", "invalid count or user_id");
  }
  if (body.expires_in !== undefined && !isInt(body.expires_in, 1, 10 * 365 * 86_400)) {
    return mpError(400, "invalid_request", "invalid expires_in");
  }
  const siteProblem = sellerSiteProblem(s, body.user_id as number | undefined, body.seller_site);
  if (siteProblem) return mpError(400, "invalid_request", siteProblem);
  const issuer = app ?? s.defaultApp;
  const site = (body.seller_site as string | undefined) ?? issuer.siteId;
  const grants = [];
  for (let i = 0; i < (count as number); i++) {
    const seller = s.seller(body.user_id as number | undefined, issuer, site);
    const grant = s.newGrant(seller, issuer.clientId);
    grants.push(s.issueTokens(grant, { via: "seed" }, body.expires_in as number | undefined));
  }
  return Response.json({ grants });
}

/**
 * `POST /__sandbox/invalidate {"user_id","scope","client_id"?}`: MercadoPago silently kills the
 * seller's access tokens (`access`; refreshing still works) or its grants (`grant`: refresh
 * tokens too), of every application or of `client_id`'s only.
 */
function invalidate(s: SandboxState, body: Record<string, unknown>, app?: SandboxApp): Response {
  const { user_id: userId, scope } = body;
  if (!isInt(userId, 1) || (scope !== "access" && scope !== "grant")) {
    return mpError(400, "invalid_request", "invalid user_id or scope");
  }
  const mine = (e: AccessEntry | RefreshEntry) =>
    e.grant.userId === userId && (!app || e.grant.clientId === app.clientId);
  const cause = scope === "grant" ? "invalidate_grant" : "invalidate_access";
  let invalidated = s.revoke(s.accessTokens, mine, cause);
  if (scope === "grant") {
    invalidated += s.revoke(s.refreshTokens, (e) => mine(e) && !e.used, cause);
  }
  return Response.json({ ok: true, invalidated });
}

/**
 * `POST /__sandbox/deauthorize {"user_id","notify_url"?,"client_id"?}`: the seller removes the
 * application (`client_id`'s; without it, the seller's own application, and every token of the
 * seller stops working, whichever application it was issued to). With `notify_url`, the
 * `application.deauthorized` notification is delivered there, signed with that application's
 * first webhook secret, and its answer's status returned; when the sandbox knows its
 * applications as a list (`MP_APPS`), the URL also carries `app=<site>` (unless it has `app`),
 * as each application's notification URL names its site.
 */
async function deauthorize(
  s: SandboxState,
  body: Record<string, unknown>,
  app?: SandboxApp,
): Promise<Response> {
  const userId = body.user_id;
  const notifyUrl = body.notify_url;
  if (!isInt(userId, 1) || (notifyUrl !== undefined && !URL.canParse(String(notifyUrl)))) {
    return mpError(400, "invalid_request", "invalid user_id or notify_url");
  }
  const mine = (e: AccessEntry | RefreshEntry) =>
    e.grant.userId === userId && (!app || e.grant.clientId === app.clientId);
  const revoked = s.revoke(s.accessTokens, mine, "deauthorize") +
    s.revoke(s.refreshTokens, mine, "deauthorize");
  if (notifyUrl === undefined) return Response.json({ ok: true, revoked });
  const removed = app ?? s.apps.get(s.sellers.get(userId as number)?.clientId ?? "") ??
    s.defaultApp;
  const secret = removed.webhookSecrets[0];
  if (!secret) throw new Error("the application has no webhook secret to sign with");
  const note = await deauthorizedNotification(secret, userId as number, s.now());
  const target = new URL(String(notifyUrl));
  if (s.multiApp && !target.searchParams.has("app")) note.query.app = removed.siteId;
  return Response.json({ ok: true, revoked, notified: await deliver(target.href, note) });
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
  for (const clientId of [...s.appControls.keys()]) s.releaseHeld(clientId);
  s.appControls.clear();
  s.stats = newStats(s.apps.values());
  s.lastTokens.clear();
  return Response.json({ ok: true });
}

/**
 * `GET /__sandbox/controls`: the fault queued (mode and calls left), the latency, the latch; and
 * under `apps`, keyed by client id, those of every application with a control of its own set
 * (`apps` is absent when none has).
 */
export function controlsSet(s: SandboxState): Response {
  const apps = Object.fromEntries(
    [...s.appControls].flatMap(([clientId, c]) => {
      const held = s.heldCount(clientId);
      if (!c.fault && c.latencyMs === 0 && !c.holding && held === 0) return [];
      const view = { fault: c.fault && { ...c.fault }, latency_ms: c.latencyMs, hold: c.holding };
      return [[clientId, { ...view, held }]];
    }),
  );
  return Response.json({
    fault: s.fault ? { ...s.fault } : null,
    latency_ms: s.latencyMs,
    hold: s.holding,
    held: s.heldCount(),
    ...(Object.keys(apps).length > 0 ? { apps } : {}),
  });
}
