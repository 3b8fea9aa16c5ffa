/**
 * In-memory stand-in for MercadoPago's OAuth endpoints (docs/local-stack.md), speaking
 * MercadoPago's wire format, plus `/__sandbox/*` controls that let tests inject faults and
 * latency. One handler serves both MP_AUTH_URL (`/authorization`) and MP_API_URL
 * (`/oauth/token`, `/users/me`). Faults and latency apply to the next API calls of either
 * kind, `/users/me` included (so the webhook's confirmation can be made to fail), except the
 * faults that strike after a token call is processed (`lose_answer`, `error_500_after`,
 * `malformed_200`, `other_seller`): those concern `/oauth/token` only. `lose_answer` makes the
 * handler reject with {@link DroppedConnection}; serve the sandbox with {@link serveSandbox} to
 * turn that into a connection closed without an answer. It logs nothing.
 *
 * The latch (`POST /__sandbox/hold {"hold":true}`) holds every token call before anything of
 * it is processed, until `{"hold":false}` releases them (or their client goes away); `GET
 * /__sandbox/hold` says how many are held, so a test can wait for the calls it expects and
 * decide what happens meanwhile instead of racing a latency against a timeout.
 *
 * Every token belongs to a grant: the chain of rotations from one code exchange or one seeded
 * grant. Presenting a spent refresh token again (reuse) revokes its whole grant, as MercadoPago
 * does; the seller's other grants keep working.
 */
import { DroppedConnection } from "./sandbox/serve.ts";
import { deauthorizedNotification, deliver } from "./sandbox/notifications.ts";
import {
  digits,
  hex,
  isInt,
  mpError,
  type Params,
  parseObject,
  readParams,
  s256,
} from "./sandbox/wire.ts";

export { DroppedConnection, serveSandbox } from "./sandbox/serve.ts";
export type { SandboxServer, ServeSandboxOptions } from "./sandbox/serve.ts";

/** A MercadoPago token response (what the sandbox grants; tests and bench share it). */
export interface MpGrant {
  access_token: string;
  refresh_token: string;
  public_key: string;
  user_id: number;
  expires_in: number;
  live_mode: boolean;
  scope: string;
}

/** Options for {@link createSandbox}: the one registered application and an optional clock. */
export interface SandboxOptions {
  clientId: string;
  clientSecret: string;
  /** Clock in epoch milliseconds (default `Date.now`): code life and access token expiry. */
  now?: () => number;
  /** The application's webhook secret: `/__sandbox/deauthorize` signs its notification with it. */
  webhookSecret?: string;
}

/**
 * A running sandbox: serve `handler` with {@link serveSandbox} (or call it directly in unit
 * tests, where a lost answer is a rejection with {@link DroppedConnection});
 * `close()` releases held requests.
 */
export interface Sandbox {
  handler: (req: Request) => Promise<Response>;
  close(): void;
}

/** The body of a successful token call. */
type TokenBody = MpGrant & { token_type: string };

/** Faults that fail a call before it is processed (the old modes, also on `/users/me`). */
const BEFORE_MODES = ["error_500", "timeout", "rate_limited", "invalid_grant"] as const;
/** Faults that strike a token call after it is processed (`/oauth/token` only). */
const AFTER_MODES = ["lose_answer", "error_500_after", "malformed_200", "other_seller"] as const;
type FaultMode = typeof BEFORE_MODES[number] | typeof AFTER_MODES[number];
type AfterMode = typeof AFTER_MODES[number];
type Call = "token" | "users_me";

interface PendingCode {
  clientId: string;
  redirectUri: string;
  userId: number;
  codeChallenge?: string;
  issuedAt: number;
}

/** One authorization's chain of rotations; revoking it kills every token descended from it. */
interface Grant {
  userId: number;
  revoked: boolean;
}

interface AccessEntry {
  grant: Grant;
  revoked: boolean;
  expiresAt: number;
}

interface RefreshEntry {
  grant: Grant;
  revoked: boolean;
  used: boolean;
}

const CODE_TTL_MS = 10 * 60 * 1000;
const EXPIRES_IN = 15552000;

/** Creates a fresh sandbox with empty state for the given application credentials. */
export function createSandbox(opts: SandboxOptions): Sandbox {
  const now = opts.now ?? Date.now;
  const codes = new Map<string, PendingCode>();
  const refreshTokens = new Map<string, RefreshEntry>();
  const accessTokens = new Map<string, AccessEntry>();
  const publicKeys = new Map<number, string>(); // seller user_id → stable public key
  const lastTokens = new Map<number | "any", TokenBody>(); // last pair issued, per seller
  const waiters = new Set<() => void>(); // pending latency/timeout waits, released by close()
  const issued = new Set<string>(); // every token, code and verifier seen, for leak scans
  let closed = false;
  let fault: { mode: FaultMode; count: number } | null = null;
  let latencyMs = 0;
  let holding = false; // the latch: token calls wait until the test releases them
  const held = new Set<() => void>(); // releases of the token calls held now
  let stats = newStats();

  /** The given seller, or a new one with an unused random user_id; ensures its public key. */
  function seller(userId?: number): number {
    let id = userId;
    while (id === undefined) {
      const candidate = 100_000_000 + (crypto.getRandomValues(new Uint32Array(1))[0] % 1e9);
      if (!publicKeys.has(candidate)) id = candidate;
    }
    if (!publicKeys.has(id)) publicKeys.set(id, `APP_USR-${crypto.randomUUID()}`);
    return id;
  }

  /** Issues a new access and refresh token on `grant` (a new grant for a seller id). */
  function issueTokens(grant: Grant | number): TokenBody {
    const g = typeof grant === "number" ? { userId: grant, revoked: false } : grant;
    const userId = g.userId;
    const refreshToken = `TG-${hex(12)}-${userId}`;
    refreshTokens.set(refreshToken, { grant: g, used: false, revoked: false });
    const appId = /^\d+$/.test(opts.clientId) ? opts.clientId : digits(16);
    const accessToken = `APP_USR-${appId}-${digits(6)}-${hex(16)}-${userId}`;
    issued.add(accessToken).add(refreshToken);
    accessTokens.set(accessToken, {
      grant: g,
      revoked: false,
      expiresAt: now() + EXPIRES_IN * 1000,
    });
    const body = {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: EXPIRES_IN,
      scope: "offline_access read write",
      user_id: userId,
      refresh_token: refreshToken,
      public_key: publicKeys.get(userId)!,
      live_mode: true,
    };
    lastTokens.set(userId, body).set("any", body);
    return body;
  }

  /** True while a token can be used: neither it nor its grant was revoked. */
  function live(entry: AccessEntry | RefreshEntry): boolean {
    return !entry.revoked && !entry.grant.revoked;
  }

  /** Revokes the live tokens of `tokens` that `match`; returns how many. */
  function revoke<E extends AccessEntry | RefreshEntry>(
    tokens: Map<string, E>,
    match: (entry: E) => boolean,
  ): number {
    let count = 0;
    for (const entry of tokens.values()) {
      if (live(entry) && match(entry)) {
        entry.revoked = true;
        count++;
      }
    }
    return count;
  }

  /** Resolves true after `ms` (null = never), or false early on client abort or close(). */
  function wait(ms: number | null, signal: AbortSignal): Promise<boolean> {
    if (closed || signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (elapsed: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        waiters.delete(onAbort);
        resolve(elapsed);
      };
      const onAbort = () => done(false);
      const timer = ms === null ? undefined : setTimeout(() => done(true), ms);
      signal.addEventListener("abort", onAbort);
      waiters.add(onAbort);
    });
  }

  /**
   * Holds a token call (before anything of it is processed) until the latch opens: true then,
   * false early on client abort or close().
   */
  function hold(signal: AbortSignal): Promise<boolean> {
    if (closed || signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (go: boolean) => {
        signal.removeEventListener("abort", onAbort);
        held.delete(release);
        waiters.delete(onAbort);
        resolve(go);
      };
      const onAbort = () => done(false);
      const release = () => done(true);
      signal.addEventListener("abort", onAbort);
      held.add(release);
      waiters.add(onAbort);
    });
  }

  /** Opens the latch: every held token call goes on, in arrival order. */
  function releaseHeld() {
    holding = false;
    for (const release of [...held]) release();
  }

  function authorize(url: URL): Response {
    const q = Object.fromEntries(url.searchParams);
    if (q.client_id !== opts.clientId) return mpError(400, "invalid_client", "invalid client_id");
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
      const userId = seller(q.user_id === undefined ? undefined : Number(q.user_id));
      const code = `TG-${hex(12)}-${userId}`;
      issued.add(code);
      codes.set(code, {
        clientId: q.client_id,
        redirectUri: q.redirect_uri,
        userId,
        codeChallenge: q.code_challenge || undefined,
        issuedAt: now(),
      });
      stats.authorizations++;
      target.searchParams.set("code", code);
    }
    if (q.state !== undefined) target.searchParams.set("state", q.state);
    return Response.redirect(target, 302);
  }

  /** Takes the fault of the next call (in arrival order), if its mode concerns this call. */
  function takeFault(call: Call): FaultMode | undefined {
    if (!fault || (call !== "token" && isAfterMode(fault.mode))) return undefined;
    const mode = fault.mode;
    if (--fault.count <= 0) fault = null;
    return mode;
  }

  /** Waits out the latency, then fails the call if `mode` fails it before processing. */
  async function failBefore(req: Request, mode?: FaultMode): Promise<Response | undefined> {
    if (latencyMs > 0 && !(await wait(latencyMs, req.signal))) return gone();
    if (mode === "timeout") {
      await wait(null, req.signal);
      return gone();
    }
    if (mode === "error_500") return mpError(500, "internal_error", "internal server error");
    if (mode === "invalid_grant") return mpError(400, "invalid_grant", "invalid_grant");
    if (mode === "rate_limited") {
      return mpError(429, "too_many_requests", "too many requests", { "retry-after": "1" });
    }
  }

  /** The answer to a processed token call, as the fault `mode` (if any) mangles it. */
  function answer(outcome: Response | TokenBody, mode?: FaultMode): Response {
    if (mode === "lose_answer") throw new DroppedConnection();
    if (mode === "error_500_after") return mpError(500, "internal_error", "internal server error");
    if (outcome instanceof Response) return outcome;
    if (mode === "malformed_200") {
      const { access_token: _, ...rest } = outcome;
      return Response.json(rest);
    }
    return Response.json(outcome);
  }

  /** `GET /users/me`: the seller behind a working access token; 401 for any other. */
  async function usersMe(req: Request): Promise<Response> {
    stats.users_me_calls++;
    const fail = await failBefore(req, takeFault("users_me"));
    if (fail) return fail;
    const auth = req.headers.get("authorization") ?? "";
    const token = /^bearer /i.test(auth) ? auth.slice(7).trim() : "";
    const entry = accessTokens.get(token);
    if (!entry || !live(entry) || now() >= entry.expiresAt) {
      return mpError(401, "unauthorized", "invalid access token");
    }
    const id = entry.grant.userId;
    return Response.json({ id, nickname: `TESTUSER${id}`, site_id: "MLA" });
  }

  /** `POST /oauth/token`: a code exchange or a refresh, then the fault of this call, if any. */
  async function token(req: Request): Promise<Response> {
    stats.token_calls++;
    if (holding && !(await hold(req.signal))) return gone();
    const mode = takeFault("token");
    const fail = await failBefore(req, mode);
    if (fail) return fail;
    const body = await readParams(req);
    if (!body) return answer(mpError(400, "invalid_request", "malformed request body"), mode);
    return answer(await grantTokens(body, mode === "other_seller"), mode);
  }

  /** Processes a token request: new tokens, or MercadoPago's error for it. */
  async function grantTokens(body: Params, otherSeller: boolean): Promise<Response | TokenBody> {
    if (body.client_id !== opts.clientId || body.client_secret !== opts.clientSecret) {
      return mpError(401, "invalid_client", "invalid client_id or client_secret");
    }
    if (body.code_verifier) issued.add(body.code_verifier);
    if (body.grant_type === "authorization_code") return await exchangeCode(body, otherSeller);
    if (body.grant_type === "refresh_token") return refresh(body, otherSeller);
    if (!body.grant_type) return mpError(400, "invalid_request", "grant_type is required");
    return mpError(400, "unsupported_grant_type", "unsupported grant_type");
  }

  /** `grant_type=authorization_code`: consumes the code and starts a new grant. */
  async function exchangeCode(body: Params, otherSeller: boolean) {
    const entry = body.code === undefined ? undefined : codes.get(body.code);
    if (!entry) return mpError(400, "invalid_grant", "invalid authorization code");
    codes.delete(body.code!); // single use: any exchange attempt consumes the code
    if (now() - entry.issuedAt > CODE_TTL_MS) {
      return mpError(400, "invalid_grant", "authorization code expired");
    }
    if (entry.clientId !== body.client_id || entry.redirectUri !== body.redirect_uri) {
      return mpError(400, "invalid_grant", "redirect_uri does not match");
    }
    if (entry.codeChallenge !== undefined) {
      if (!body.code_verifier || (await s256(body.code_verifier)) !== entry.codeChallenge) {
        return mpError(400, "invalid_grant", "invalid code_verifier");
      }
    }
    return issueTokens(otherSeller ? seller() : entry.userId);
  }

  /** `grant_type=refresh_token`: spends the token for a new pair; reuse revokes the grant. */
  function refresh(body: Params, otherSeller: boolean): Response | TokenBody {
    const entry = body.refresh_token === undefined
      ? undefined
      : refreshTokens.get(body.refresh_token);
    if (!entry || entry.revoked) return mpError(400, "invalid_grant", "invalid refresh_token");
    if (entry.used) {
      stats.refresh_token_reuse++;
      entry.grant.revoked = true; // every token of this grant stops working
      return mpError(400, "invalid_grant", "refresh_token already used");
    }
    if (entry.grant.revoked) return mpError(400, "invalid_grant", "invalid refresh_token");
    entry.used = true;
    stats.refreshes++;
    return issueTokens(otherSeller ? seller() : entry.grant);
  }

  async function control(path: string, req: Request): Promise<Response> {
    const text = await req.text().catch(() => "{");
    const body = text.trim() === "" ? {} : parseObject(text);
    if (!body) return mpError(400, "invalid_request", "malformed request body");
    if (path === "/__sandbox/faults") return setFault(body);
    if (path === "/__sandbox/latency") {
      if (!isInt(body.ms, 0, 600_000)) return mpError(400, "invalid_request", "invalid ms");
      latencyMs = body.ms as number;
      return Response.json({ ok: true });
    }
    if (path === "/__sandbox/hold") {
      if (typeof body.hold !== "boolean") return mpError(400, "invalid_request", "invalid hold");
      if (body.hold) holding = true;
      else releaseHeld();
      return Response.json({ hold: holding, held: held.size });
    }
    if (path === "/__sandbox/grants") return seedGrants(body);
    if (path === "/__sandbox/invalidate") return invalidate(body);
    if (path === "/__sandbox/deauthorize") return await deauthorize(body);
    return mpError(404, "not_found", `resource ${path} not found`);
  }

  /**
   * `POST /__sandbox/faults {"mode","count"}`: the next `count` calls fail as `mode` says.
   * After processing a token call, `lose_answer` drops and `error_500_after` replaces whatever
   * it answered; `malformed_200` strips `access_token` from, and `other_seller` hands a new
   * seller's pair (a grant of its own) in place of, a successful one.
   */
  function setFault(body: Record<string, unknown>): Response {
    const count = body.count ?? 1;
    const modes: readonly string[] = [...BEFORE_MODES, ...AFTER_MODES];
    if (body.mode === "none" || count === 0) fault = null;
    else if (modes.includes(body.mode as string) && isInt(count, 1, 1e9)) {
      fault = { mode: body.mode as FaultMode, count: count as number };
    } else return mpError(400, "invalid_request", "invalid fault");
    return Response.json({ ok: true });
  }

  /** `POST /__sandbox/grants {"count","user_id"?}`: token sets as if sellers had authorized. */
  function seedGrants(body: Record<string, unknown>): Response {
    const count = body.count ?? 1;
    if (!isInt(count, 1, 10_000) || (body.user_id !== undefined && !isInt(body.user_id, 1))) {
      return mpError(400, "invalid_request", "invalid count or user_id");
    }
    const grants = [];
    for (let i = 0; i < (count as number); i++) {
      grants.push(issueTokens(seller(body.user_id as number | undefined)));
    }
    return Response.json({ grants });
  }

  /**
   * `POST /__sandbox/invalidate {"user_id","scope"}`: MercadoPago silently kills the seller's
   * access tokens (`access`; refreshing still works) or its grants (`grant`: refresh tokens too).
   */
  function invalidate(body: Record<string, unknown>): Response {
    const { user_id: userId, scope } = body;
    if (!isInt(userId, 1) || (scope !== "access" && scope !== "grant")) {
      return mpError(400, "invalid_request", "invalid user_id or scope");
    }
    const mine = (e: AccessEntry | RefreshEntry) => e.grant.userId === userId;
    let invalidated = revoke(accessTokens, mine);
    if (scope === "grant") invalidated += revoke(refreshTokens, (e) => mine(e) && !e.used);
    return Response.json({ ok: true, invalidated });
  }

  /**
   * The seller removes the application: every token of theirs stops working; with
   * `notify_url`, the signed `application.deauthorized` notification is delivered there and
   * its answer's status returned.
   */
  async function deauthorize(body: Record<string, unknown>): Promise<Response> {
    const userId = body.user_id;
    const notifyUrl = body.notify_url;
    if (!isInt(userId, 1) || (notifyUrl !== undefined && !URL.canParse(String(notifyUrl)))) {
      return mpError(400, "invalid_request", "invalid user_id or notify_url");
    }
    const mine = (e: AccessEntry | RefreshEntry) => e.grant.userId === userId;
    const revoked = revoke(accessTokens, mine) + revoke(refreshTokens, mine);
    if (notifyUrl === undefined) return Response.json({ ok: true, revoked });
    if (!opts.webhookSecret) throw new Error("the sandbox has no webhookSecret to sign with");
    const note = await deauthorizedNotification(opts.webhookSecret, userId as number, now());
    return Response.json({ ok: true, revoked, notified: await deliver(String(notifyUrl), note) });
  }

  /** `GET /__sandbox/last_tokens[?user_id=n]`: the last pair issued, even if its answer was lost. */
  function lastIssued(url: URL): Response {
    const userId = url.searchParams.get("user_id");
    const key = userId === null ? "any" : Number(userId);
    return Response.json({ tokens: lastTokens.get(key) ?? null });
  }

  function reset(): Response {
    fault = null;
    latencyMs = 0;
    releaseHeld();
    stats = newStats();
    return Response.json({ ok: true });
  }

  async function handler(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const route = `${req.method} ${url.pathname}`;
    if (route === "GET /authorization") return authorize(url);
    if (route === "POST /oauth/token") return await token(req);
    if (route === "GET /users/me") return await usersMe(req);
    if (route === "GET /__sandbox/stats") return Response.json(stats);
    if (route === "GET /__sandbox/hold") return Response.json({ hold: holding, held: held.size });
    if (route === "GET /__sandbox/secrets") return Response.json({ secrets: [...issued] });
    if (route === "GET /__sandbox/last_tokens") return lastIssued(url);
    if (route === "POST /__sandbox/reset") return reset();
    if (req.method === "POST" && url.pathname.startsWith("/__sandbox/")) {
      return await control(url.pathname, req);
    }
    return mpError(404, "not_found", `resource ${url.pathname} not found`);
  }

  function close() {
    closed = true;
    for (const release of [...waiters]) release();
  }

  return { handler, close };
}

function isAfterMode(mode: FaultMode): mode is AfterMode {
  return (AFTER_MODES as readonly string[]).includes(mode);
}

function newStats() {
  return {
    token_calls: 0,
    refresh_token_reuse: 0,
    authorizations: 0,
    refreshes: 0,
    users_me_calls: 0,
  };
}

/** Answer for a request abandoned by its client (or held until close()); nobody reads it. */
function gone(): Response {
  return mpError(504, "timeout", "request abandoned");
}
