/**
 * In-memory stand-in for MercadoPago's OAuth endpoints (docs/local-stack.md), speaking
 * MercadoPago's wire format, plus `/__sandbox/*` controls that let tests inject faults and
 * latency. One handler serves both MP_AUTH_URL (`/authorization`) and MP_API_URL
 * (`/oauth/token`, `/users/me`). Faults and latency apply to the next API calls of either
 * kind, `/users/me` included (so the webhook's confirmation can be made to fail). It logs
 * nothing.
 */

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
  /** Clock in epoch milliseconds (default `Date.now`); used for the 10-minute code life. */
  now?: () => number;
  /** The application's webhook secret: `/__sandbox/deauthorize` signs its notification with it. */
  webhookSecret?: string;
}

/** A running sandbox: mount `handler` with `Deno.serve`; `close()` releases held requests. */
export interface Sandbox {
  handler: (req: Request) => Promise<Response>;
  close(): void;
}

type FaultMode = "error_500" | "timeout" | "rate_limited" | "invalid_grant";
type Params = Record<string, string | undefined>;

interface PendingCode {
  clientId: string;
  redirectUri: string;
  userId: number;
  codeChallenge?: string;
  issuedAt: number;
}

const CODE_TTL_MS = 10 * 60 * 1000;
const EXPIRES_IN = 15552000;
const FAULT_MODES = ["error_500", "timeout", "rate_limited", "invalid_grant"];

/** Creates a fresh sandbox with empty state for the given application credentials. */
export function createSandbox(opts: SandboxOptions): Sandbox {
  const now = opts.now ?? Date.now;
  const codes = new Map<string, PendingCode>();
  const refreshTokens = new Map<string, { userId: number; used: boolean; revoked?: boolean }>();
  const accessTokens = new Map<string, { userId: number; revoked: boolean }>();
  const publicKeys = new Map<number, string>(); // seller user_id → stable public key
  const waiters = new Set<() => void>(); // pending latency/timeout waits, released by close()
  const issued = new Set<string>(); // every token, code and verifier seen, for leak scans
  let closed = false;
  let fault: { mode: FaultMode; count: number } | null = null;
  let latencyMs = 0;
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

  function issueTokens(userId: number) {
    const refreshToken = `TG-${hex(12)}-${userId}`;
    refreshTokens.set(refreshToken, { userId, used: false });
    const appId = /^\d+$/.test(opts.clientId) ? opts.clientId : digits(16);
    const accessToken = `APP_USR-${appId}-${digits(6)}-${hex(16)}-${userId}`;
    issued.add(accessToken).add(refreshToken);
    accessTokens.set(accessToken, { userId, revoked: false });
    return {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: EXPIRES_IN,
      scope: "offline_access read write",
      user_id: userId,
      refresh_token: refreshToken,
      public_key: publicKeys.get(userId)!,
      live_mode: true,
    };
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

  /** The injected fault or latency of the next API call, as a response; undefined: none. */
  async function injected(req: Request): Promise<Response | undefined> {
    const mode = fault?.mode; // faults go to the next n calls in arrival order
    if (fault && --fault.count <= 0) fault = null;
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

  /** `GET /users/me`: the seller behind a working access token; 401 for any other. */
  async function usersMe(req: Request): Promise<Response> {
    stats.users_me_calls++;
    const fail = await injected(req);
    if (fail) return fail;
    const auth = req.headers.get("authorization") ?? "";
    const token = /^bearer /i.test(auth) ? auth.slice(7).trim() : "";
    const entry = accessTokens.get(token);
    if (!entry || entry.revoked) return mpError(401, "unauthorized", "invalid access token");
    return Response.json({ id: entry.userId, nickname: `TESTUSER${entry.userId}`, site_id: "MLA" });
  }

  async function token(req: Request): Promise<Response> {
    stats.token_calls++;
    const fail = await injected(req);
    if (fail) return fail;
    const body = await readParams(req);
    if (!body) return mpError(400, "invalid_request", "malformed request body");
    if (body.client_id !== opts.clientId || body.client_secret !== opts.clientSecret) {
      return mpError(401, "invalid_client", "invalid client_id or client_secret");
    }
    if (body.code_verifier) issued.add(body.code_verifier);
    if (body.grant_type === "authorization_code") {
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
      return Response.json(issueTokens(entry.userId));
    }
    if (body.grant_type === "refresh_token") {
      const entry = body.refresh_token === undefined
        ? undefined
        : refreshTokens.get(body.refresh_token);
      if (!entry || entry.revoked) return mpError(400, "invalid_grant", "invalid refresh_token");
      if (entry.used) {
        stats.refresh_token_reuse++;
        return mpError(400, "invalid_grant", "refresh_token already used");
      }
      entry.used = true;
      stats.refreshes++;
      return Response.json(issueTokens(entry.userId));
    }
    if (!body.grant_type) return mpError(400, "invalid_request", "grant_type is required");
    return mpError(400, "unsupported_grant_type", "unsupported grant_type");
  }

  async function control(path: string, req: Request): Promise<Response> {
    const text = await req.text().catch(() => "{");
    const body = text.trim() === "" ? {} : parseObject(text);
    if (!body) return mpError(400, "invalid_request", "malformed request body");
    if (path === "/__sandbox/faults") {
      const count = body.count ?? 1;
      if (body.mode === "none" || count === 0) fault = null;
      else if (FAULT_MODES.includes(body.mode as string) && isInt(count, 1, 1e9)) {
        fault = { mode: body.mode as FaultMode, count: count as number };
      } else return mpError(400, "invalid_request", "invalid fault");
      return Response.json({ ok: true });
    }
    if (path === "/__sandbox/latency") {
      if (!isInt(body.ms, 0, 600_000)) return mpError(400, "invalid_request", "invalid ms");
      latencyMs = body.ms as number;
      return Response.json({ ok: true });
    }
    if (path === "/__sandbox/grants") {
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
    if (path === "/__sandbox/deauthorize") return await deauthorize(body);
    return mpError(404, "not_found", `resource ${path} not found`);
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
    let revoked = 0;
    for (const tokens of [accessTokens, refreshTokens]) {
      for (const entry of tokens.values()) {
        if (entry.userId === userId && !entry.revoked) {
          entry.revoked = true;
          revoked++;
        }
      }
    }
    if (notifyUrl === undefined) return Response.json({ ok: true, revoked });
    const notification = await deauthorizedNotification(userId as number);
    const target = new URL(String(notifyUrl));
    for (const [k, v] of Object.entries(notification.query)) target.searchParams.set(k, v);
    const res = await fetch(target, {
      method: "POST",
      headers: { "content-type": "application/json", ...notification.headers },
      body: JSON.stringify(notification.body),
    });
    await res.body?.cancel();
    return Response.json({ ok: true, revoked, notified: res.status });
  }

  /** An `application.deauthorized` notification as MercadoPago signs and sends it. */
  async function deauthorizedNotification(userId: number) {
    if (!opts.webhookSecret) throw new Error("the sandbox has no webhookSecret to sign with");
    const dataId = digits(12);
    const requestId = crypto.randomUUID();
    const ts = String(now());
    const manifest = `id:${dataId};request-id:${requestId};ts:${ts};`;
    const key = await crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(opts.webhookSecret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const mac = new Uint8Array(
      await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(manifest)),
    );
    const v1 = [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
    return {
      query: { "data.id": dataId, type: "mp-connect" },
      headers: { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId },
      body: {
        action: "application.deauthorized",
        api_version: "v1",
        data: { id: dataId },
        date_created: new Date(now()).toISOString(),
        id: Number(digits(11)) + 1,
        live_mode: true,
        type: "mp-connect",
        user_id: userId,
      },
    };
  }

  function reset(): Response {
    fault = null;
    latencyMs = 0;
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
    if (route === "GET /__sandbox/secrets") return Response.json({ secrets: [...issued] });
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

function newStats() {
  return {
    token_calls: 0,
    refresh_token_reuse: 0,
    authorizations: 0,
    refreshes: 0,
    users_me_calls: 0,
  };
}

/** MercadoPago error body: `{"message","error","status","cause":[]}` with that HTTP status. */
function mpError(
  status: number,
  error: string,
  message: string,
  headers?: Record<string, string>,
): Response {
  return Response.json({ message, error, status, cause: [] }, { status, headers });
}

/** Answer for a request abandoned by its client (or held until close()); nobody reads it. */
function gone(): Response {
  return mpError(504, "timeout", "request abandoned");
}

/** Token request parameters from a JSON or form body; null when malformed. */
async function readParams(req: Request): Promise<Params | null> {
  const text = await req.text().catch(() => null);
  if (text === null) return null;
  if ((req.headers.get("content-type") ?? "").includes("application/x-www-form-urlencoded")) {
    return Object.fromEntries(new URLSearchParams(text));
  }
  const json = parseObject(text);
  if (!json) return null;
  const out: Params = {};
  for (const [k, v] of Object.entries(json)) out[k] = typeof v === "string" ? v : undefined;
  return out;
}

/** A JSON object parsed from text; null when malformed or not an object. */
function parseObject(text: string): Record<string, unknown> | null {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

function isInt(v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): boolean {
  return Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
}

async function s256(verifier: string): Promise<string> {
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)),
  );
  return btoa(String.fromCharCode(...hash)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

function hex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

function digits(n: number): string {
  return [...crypto.getRandomValues(new Uint8Array(n))].map((b) => String(b % 10)).join("");
}
