import assert from "node:assert/strict";
import { createSandbox, DroppedConnection, type Sandbox, serveSandbox } from "../local/sandbox.ts";

const BASE = "http://mp.test";
const CLIENT_ID = "1234567890123456";
const CLIENT_SECRET = "s3cret";
const REDIRECT = "http://127.0.0.1:54321/functions/v1/mp-oauth-callback";

const ACCESS_RE = /^APP_USR-\d+-\d{6}-[0-9a-f]+-\d+$/;
const REFRESH_RE = /^TG-[0-9a-f]+-\d+$/;
const PUBLIC_RE = /^APP_USR-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// deno-lint-ignore no-explicit-any
type Json = any;

function setup(now?: () => number): Sandbox {
  return createSandbox({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, now });
}

function get(sb: Sandbox, path: string): Promise<Response> {
  return sb.handler(new Request(BASE + path));
}

function post(sb: Sandbox, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return sb.handler(
    new Request(BASE + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
      signal,
    }),
  );
}

async function json(res: Response | Promise<Response>, status: number): Promise<Json> {
  const r = await res;
  assert.equal(r.status, status);
  assert.equal(r.headers.get("content-type"), "application/json");
  return await r.json();
}

async function assertMpError(res: Response | Promise<Response>, status: number, error: string) {
  const body = await json(res, status);
  assert.equal(body.error, error);
  assert.equal(body.status, status);
  assert.deepEqual(body.cause, []);
  assert.equal(typeof body.message, "string");
  return body;
}

function authUrl(extra: Record<string, string> = {}): string {
  const q = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: "code",
    platform_id: "mp",
    state: "st-123",
    redirect_uri: REDIRECT,
    ...extra,
  });
  return `/authorization?${q}`;
}

/** Runs the authorization step and returns the code from the 302 Location. */
async function authorize(sb: Sandbox, extra: Record<string, string> = {}): Promise<string> {
  const res = await get(sb, authUrl(extra));
  assert.equal(res.status, 302);
  const loc = new URL(res.headers.get("location")!);
  assert.equal(loc.origin + loc.pathname, REDIRECT);
  assert.equal(loc.searchParams.get("state"), "st-123");
  const code = loc.searchParams.get("code")!;
  assert.match(code, /^TG-/);
  return code;
}

function exchange(sb: Sandbox, code: string, extra: Record<string, string> = {}) {
  return post(sb, "/oauth/token", {
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_type: "authorization_code",
    code,
    redirect_uri: REDIRECT,
    ...extra,
  });
}

function refresh(sb: Sandbox, token: string, signal?: AbortSignal) {
  return post(sb, "/oauth/token", {
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_type: "refresh_token",
    refresh_token: token,
  }, signal);
}

async function stats(sb: Sandbox): Promise<Json> {
  return await json(get(sb, "/__sandbox/stats"), 200);
}

async function s256(verifier: string): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return btoa(String.fromCharCode(...new Uint8Array(hash)))
    .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function usersMe(sb: Sandbox, token: string): Promise<Response> {
  return sb.handler(
    new Request(`${BASE}/users/me`, { headers: { authorization: `Bearer ${token}` } }),
  );
}

async function fault(sb: Sandbox, mode: string, count = 1): Promise<void> {
  assert.deepEqual(await json(post(sb, "/__sandbox/faults", { mode, count }), 200), { ok: true });
}

/** The last token pair the sandbox issued for `userId` (test control). */
async function lastTokens(sb: Sandbox, userId: number): Promise<Json> {
  return (await json(get(sb, `/__sandbox/last_tokens?user_id=${userId}`), 200)).tokens;
}

/** Asserts the pair works: `/users/me` answers its seller and its refresh token rotates. */
async function assertWorks(sb: Sandbox, pair: Json): Promise<Json> {
  assert.equal((await json(usersMe(sb, pair.access_token), 200)).id, pair.user_id);
  return await json(refresh(sb, pair.refresh_token), 200);
}

/**
 * Asserts `spent` was spent: presenting it again is invalid_grant counted as reuse, and it
 * revokes its grant, so `sameGrant` (a later pair of that grant) stops working too.
 */
async function assertSpent(sb: Sandbox, spent: string, sameGrant: Json): Promise<void> {
  const reuse = (await stats(sb)).refresh_token_reuse;
  await assertMpError(refresh(sb, spent), 400, "invalid_grant");
  assert.equal((await stats(sb)).refresh_token_reuse, reuse + 1);
  await assertMpError(usersMe(sb, sameGrant.access_token), 401, "unauthorized");
  await assertMpError(refresh(sb, sameGrant.refresh_token), 400, "invalid_grant");
}

/** True when the promise is still pending after the macrotask queue has had a turn. */
async function isPending(p: Promise<unknown>): Promise<boolean> {
  const marker = Symbol();
  const timer = new Promise((r) => setTimeout(() => r(marker), 20));
  return (await Promise.race([p, timer])) === marker;
}

Deno.test("authorization approves a new seller each time and redirects with code and state", async () => {
  const sb = setup();
  const a = await json(exchange(sb, await authorize(sb)), 200);
  const b = await json(exchange(sb, await authorize(sb)), 200);
  assert.notEqual(a.user_id, b.user_id);
  assert.notEqual(a.public_key, b.public_key);
  assert.equal((await stats(sb)).authorizations, 2);
});

Deno.test("authorization with user_id approves that existing seller with a stable public key", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb, { user_id: "777000111" })), 200);
  const again = await json(exchange(sb, await authorize(sb, { user_id: "777000111" })), 200);
  assert.equal(first.user_id, 777000111);
  assert.equal(again.user_id, 777000111);
  assert.equal(again.public_key, first.public_key);
  assert.notEqual(again.access_token, first.access_token);
  assert.notEqual(again.refresh_token, first.refresh_token);
});

Deno.test("deny=1 redirects with error=access_denied and the state, no code", async () => {
  const sb = setup();
  const res = await get(sb, authUrl({ deny: "1" }));
  assert.equal(res.status, 302);
  const loc = new URL(res.headers.get("location")!);
  assert.equal(loc.searchParams.get("error"), "access_denied");
  assert.equal(loc.searchParams.get("state"), "st-123");
  assert.equal(loc.searchParams.get("code"), null);
});

Deno.test("authorization rejects unknown client, missing redirect_uri, wrong response_type", async () => {
  const sb = setup();
  await assertMpError(get(sb, authUrl({ client_id: "999" })), 400, "invalid_client");
  const noRedirect = new URLSearchParams({ client_id: CLIENT_ID, response_type: "code" });
  await assertMpError(get(sb, `/authorization?${noRedirect}`), 400, "invalid_request");
  await assertMpError(
    get(sb, authUrl({ response_type: "token" })),
    400,
    "unsupported_response_type",
  );
  await assertMpError(get(sb, authUrl({ user_id: "abc" })), 400, "invalid_request");
});

Deno.test("code exchange returns exactly MercadoPago's token body", async () => {
  const sb = setup();
  const body = await json(exchange(sb, await authorize(sb)), 200);
  assert.deepEqual(Object.keys(body).sort(), [
    "access_token",
    "expires_in",
    "live_mode",
    "public_key",
    "refresh_token",
    "scope",
    "token_type",
    "user_id",
  ]);
  assert.match(body.access_token, ACCESS_RE);
  assert.match(body.refresh_token, REFRESH_RE);
  assert.match(body.public_key, PUBLIC_RE);
  assert.equal(body.token_type, "Bearer");
  assert.equal(body.expires_in, 15552000);
  assert.equal(body.scope, "offline_access read write");
  assert.equal(typeof body.user_id, "number");
  assert.ok(body.access_token.endsWith(`-${body.user_id}`));
  assert.equal(body.live_mode, true);
});

Deno.test("code exchange also accepts application/x-www-form-urlencoded", async () => {
  const sb = setup();
  const code = await authorize(sb);
  const res = await sb.handler(
    new Request(`${BASE}/oauth/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_type: "authorization_code",
        code,
        redirect_uri: REDIRECT,
      }),
    }),
  );
  assert.match((await json(res, 200)).access_token, ACCESS_RE);
});

Deno.test("codes are single-use; unknown codes are invalid_grant", async () => {
  const sb = setup();
  const code = await authorize(sb);
  await json(exchange(sb, code), 200);
  await assertMpError(exchange(sb, code), 400, "invalid_grant");
  await assertMpError(exchange(sb, "TG-nope-1"), 400, "invalid_grant");
});

Deno.test("codes expire after 10 minutes (clock from the now option)", async () => {
  let t = 1_700_000_000_000;
  const sb = setup(() => t);
  const fresh = await authorize(sb);
  const stale = await authorize(sb);
  t += 10 * 60 * 1000 - 1000;
  await json(exchange(sb, fresh), 200);
  t += 2000;
  await assertMpError(exchange(sb, stale), 400, "invalid_grant");
});

Deno.test("redirect_uri must equal the one used at authorization", async () => {
  const sb = setup();
  const code = await authorize(sb);
  await assertMpError(
    exchange(sb, code, { redirect_uri: "http://evil.test/cb" }),
    400,
    "invalid_grant",
  );
  const code2 = await authorize(sb);
  const { redirect_uri: _, ...noRedirect } = {
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_type: "authorization_code",
    code: code2,
    redirect_uri: REDIRECT,
  };
  await assertMpError(post(sb, "/oauth/token", noRedirect), 400, "invalid_grant");
});

Deno.test("PKCE: missing or wrong code_verifier is invalid_grant, the right one works", async () => {
  const sb = setup();
  const verifier = "v".repeat(20) + crypto.randomUUID() + crypto.randomUUID();
  const pkce = { code_challenge: await s256(verifier), code_challenge_method: "S256" };
  await assertMpError(exchange(sb, await authorize(sb, pkce)), 400, "invalid_grant");
  await assertMpError(
    exchange(sb, await authorize(sb, pkce), { code_verifier: verifier + "x" }),
    400,
    "invalid_grant",
  );
  const ok = await json(exchange(sb, await authorize(sb, pkce), { code_verifier: verifier }), 200);
  assert.match(ok.access_token, ACCESS_RE);
  await assertMpError(
    get(sb, authUrl({ code_challenge: "abc", code_challenge_method: "plain" })),
    400,
    "invalid_request",
  );
});

Deno.test("wrong client secret or client id is 401 invalid_client (code not consumed)", async () => {
  const sb = setup();
  const code = await authorize(sb);
  await assertMpError(exchange(sb, code, { client_secret: "wrong" }), 401, "invalid_client");
  await assertMpError(exchange(sb, code, { client_id: "1" }), 401, "invalid_client");
  await json(exchange(sb, code), 200);
});

Deno.test("unsupported grant type, malformed body", async () => {
  const sb = setup();
  await assertMpError(
    post(sb, "/oauth/token", {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_type: "client_credentials",
    }),
    400,
    "unsupported_grant_type",
  );
  await assertMpError(post(sb, "/oauth/token", "{not json"), 400, "invalid_request");
  await assertMpError(post(sb, "/oauth/token", "[1,2]"), 400, "invalid_request");
  await assertMpError(post(sb, "/oauth/token", ""), 400, "invalid_request");
});

Deno.test("refresh tokens rotate; reuse is invalid_grant and counted; unknown is not", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb)), 200);
  const second = await json(refresh(sb, first.refresh_token), 200);
  assert.match(second.refresh_token, REFRESH_RE);
  assert.notEqual(second.refresh_token, first.refresh_token);
  assert.notEqual(second.access_token, first.access_token);
  assert.equal(second.user_id, first.user_id);
  assert.equal(second.public_key, first.public_key);

  await assertMpError(refresh(sb, first.refresh_token), 400, "invalid_grant");
  await assertMpError(refresh(sb, first.refresh_token), 400, "invalid_grant");
  assert.equal((await stats(sb)).refresh_token_reuse, 2);

  await assertMpError(refresh(sb, "TG-unknown-1"), 400, "invalid_grant");
  assert.equal((await stats(sb)).refresh_token_reuse, 2);

  // The reuse revoked the whole grant: the unspent second token no longer works either.
  await assertMpError(refresh(sb, second.refresh_token), 400, "invalid_grant");
  const s = await stats(sb);
  assert.equal(s.refresh_token_reuse, 2, "a revoked token is not a reuse");
  assert.equal(s.refreshes, 1);
  assert.equal(s.token_calls, 6);
});

Deno.test("fault error_500 fails the next n token calls without consuming the code", async () => {
  const sb = setup();
  const code = await authorize(sb);
  assert.deepEqual(
    await json(post(sb, "/__sandbox/faults", { mode: "error_500", count: 2 }), 200),
    { ok: true },
  );
  await assertMpError(exchange(sb, code), 500, "internal_error");
  await assertMpError(exchange(sb, code), 500, "internal_error");
  await json(exchange(sb, code), 200);
  assert.equal((await stats(sb)).token_calls, 3);
});

Deno.test("fault rate_limited answers 429 with Retry-After: 1", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb)), 200);
  await json(post(sb, "/__sandbox/faults", { mode: "rate_limited", count: 1 }), 200);
  const res = await refresh(sb, first.refresh_token);
  assert.equal(res.headers.get("retry-after"), "1");
  await assertMpError(res, 429, "too_many_requests");
  await json(refresh(sb, first.refresh_token), 200);
});

Deno.test("fault invalid_grant answers 400 without consuming the refresh token", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb)), 200);
  await json(post(sb, "/__sandbox/faults", { mode: "invalid_grant", count: 1 }), 200);
  await assertMpError(refresh(sb, first.refresh_token), 400, "invalid_grant");
  await json(refresh(sb, first.refresh_token), 200);
  assert.equal((await stats(sb)).refresh_token_reuse, 0);
});

Deno.test("faults clear with mode none or count 0; bad fault is 400", async () => {
  const sb = setup();
  const code = await authorize(sb);
  await json(post(sb, "/__sandbox/faults", { mode: "error_500", count: 5 }), 200);
  await json(post(sb, "/__sandbox/faults", { mode: "none" }), 200);
  await json(post(sb, "/__sandbox/faults", { mode: "error_500", count: 5 }), 200);
  await json(post(sb, "/__sandbox/faults", { mode: "error_500", count: 0 }), 200);
  await json(exchange(sb, code), 200);
  await assertMpError(post(sb, "/__sandbox/faults", { mode: "boom" }), 400, "invalid_request");
});

Deno.test("fault timeout holds the call until the client aborts; token not consumed", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb)), 200);
  await json(post(sb, "/__sandbox/faults", { mode: "timeout", count: 1 }), 200);
  const ac = new AbortController();
  const held = refresh(sb, first.refresh_token, ac.signal);
  assert.equal(await isPending(held), true);
  ac.abort();
  assert.equal((await held).status, 504);
  await json(refresh(sb, first.refresh_token), 200);
  assert.equal((await stats(sb)).token_calls, 3);
});

Deno.test("fault timeout: close() releases held calls", async () => {
  const sb = setup();
  await json(post(sb, "/__sandbox/faults", { mode: "timeout", count: 2 }), 200);
  const held = [refresh(sb, "TG-a-1"), refresh(sb, "TG-b-2")];
  assert.equal(await isPending(Promise.race(held)), true);
  sb.close();
  for (const r of await Promise.all(held)) assert.equal(r.status, 504);
});

Deno.test("fault timeout over HTTP: fetch with an AbortSignal gives up, call counted", async () => {
  const sb = setup();
  const stop = new AbortController();
  const server = serveSandbox(sb, { port: 0, hostname: "127.0.0.1", signal: stop.signal });
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    await (await fetch(`${base}/__sandbox/faults`, {
      method: "POST",
      body: JSON.stringify({ mode: "timeout", count: 1 }),
    })).body?.cancel();
    await assert.rejects(
      fetch(`${base}/oauth/token`, {
        method: "POST",
        body: "{}",
        signal: AbortSignal.timeout(150),
      }),
      (e: Error) => e.name === "TimeoutError" || e.name === "AbortError",
    );
    const s = await (await fetch(`${base}/__sandbox/stats`)).json();
    assert.equal(s.token_calls, 1);
  } finally {
    stop.abort(); // the front closes every connection, which releases the held call
    await server.finished;
  }
});

Deno.test("latency delays every token call; reset clears it", async () => {
  const sb = setup();
  const code = await authorize(sb);
  // A minute of latency: the call is still unanswered after a moment (no speed is asserted).
  await json(post(sb, "/__sandbox/latency", { ms: 60_000 }), 200);
  let answered = false;
  const held = exchange(sb, code).then((r) => (answered = true, r));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(answered, false, "token call was not delayed");
  await json(post(sb, "/__sandbox/reset", {}), 200);
  // After the reset the next call answers at once (with the latency still on it would wait
  // a minute and the test would time out, not pass); the held one is released by close().
  await assertMpError(exchange(sb, "TG-unknown"), 400, "invalid_grant");
  sb.close();
  await (await held).body?.cancel();
  await assertMpError(post(sb, "/__sandbox/latency", { ms: -1 }), 400, "invalid_request");
});

Deno.test("the latch holds token calls unprocessed until released; an abort lets one go unprocessed", async () => {
  const sb = setup();
  const code = await authorize(sb);
  const other = await authorize(sb);
  assert.deepEqual(await json(post(sb, "/__sandbox/hold", { hold: true }), 200), {
    hold: true,
    held: 0,
  });
  let answered = false;
  const held = exchange(sb, code).then((r) => (answered = true, r));
  const abort = new AbortController();
  const abandoned = post(sb, "/oauth/token", {
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_type: "authorization_code",
    code: other,
    redirect_uri: REDIRECT,
  }, abort.signal);
  // Counted as held only once the handler waits: then nothing of either call was processed.
  for (let i = 0; (await json(get(sb, "/__sandbox/hold"), 200)).held < 2; i++) {
    assert.ok(i < 10_000, "both calls are held");
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.equal(answered, false);
  abort.abort();
  await (await abandoned).body?.cancel();
  assert.equal((await json(get(sb, "/__sandbox/hold"), 200)).held, 1, "the abandoned one left");
  assert.deepEqual(await json(post(sb, "/__sandbox/hold", { hold: false }), 200), {
    hold: false,
    held: 0,
  });
  const res = await held;
  assert.equal(res.status, 200, "released: processed as usual");
  await res.body?.cancel();
  // The abandoned call never consumed its code: it still exchanges.
  const later = await exchange(sb, other);
  assert.equal(later.status, 200);
  await later.body?.cancel();
  await assertMpError(post(sb, "/__sandbox/hold", { hold: "yes" }), 400, "invalid_request");
  sb.close();
});

Deno.test("latency wait is released by client abort without consuming the code", async () => {
  const sb = setup();
  const code = await authorize(sb);
  await json(post(sb, "/__sandbox/latency", { ms: 60_000 }), 200);
  const ac = new AbortController();
  const held = sb.handler(
    new Request(`${BASE}/oauth/token`, {
      method: "POST",
      body: JSON.stringify({
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_type: "authorization_code",
        code,
        redirect_uri: REDIRECT,
      }),
      signal: ac.signal,
    }),
  );
  assert.equal(await isPending(held), true);
  ac.abort();
  assert.equal((await held).status, 504);
  await json(post(sb, "/__sandbox/latency", { ms: 0 }), 200);
  await json(exchange(sb, code), 200);
});

Deno.test("reset clears counters and faults but keeps tokens", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb)), 200);
  await json(post(sb, "/__sandbox/faults", { mode: "error_500", count: 3 }), 200);
  await assertMpError(refresh(sb, first.refresh_token), 500, "internal_error");
  assert.equal((await stats(sb)).token_calls, 2);
  await json(post(sb, "/__sandbox/reset", ""), 200);
  assert.deepEqual(await stats(sb), {
    token_calls: 0,
    refresh_token_reuse: 0,
    authorizations: 0,
    refreshes: 0,
    users_me_calls: 0,
    cross_app_calls: 0,
    apps: {
      [CLIENT_ID]: {
        site_id: "MLA",
        token_calls: 0,
        authorizations: 0,
        refreshes: 0,
        users_me_calls: 0,
        cross_app_calls: 0,
      },
    },
  });
  await json(refresh(sb, first.refresh_token), 200);
});

Deno.test("reset leaves no control set and no last pair, and every issued token still works", async () => {
  const sb = setup();
  const { grants: [grant] } = await json(post(sb, "/__sandbox/grants", { user_id: 4242 }), 200);
  const { grants: [other] } = await json(post(sb, "/__sandbox/grants", { user_id: 4343 }), 200);
  await fault(sb, "error_500", 1_000_000);
  await json(post(sb, "/__sandbox/latency", { ms: 60_000 }), 200);
  await json(post(sb, "/__sandbox/hold", { hold: true }), 200);
  const held = refresh(sb, other.refresh_token);
  assert.deepEqual(await json(get(sb, "/__sandbox/controls"), 200), {
    fault: { mode: "error_500", count: 1_000_000 },
    latency_ms: 60_000,
    hold: true,
    held: 1,
  });
  await json(post(sb, "/__sandbox/reset", ""), 200);
  assert.deepEqual(await json(get(sb, "/__sandbox/controls"), 200), {
    fault: null,
    latency_ms: 0,
    hold: false,
    held: 0,
  });
  // The held call went on, and met neither the fault nor the latency.
  const rotated = await json(held, 200);
  assert.equal(rotated.user_id, 4343);
  assert.equal(await lastTokens(sb, 4242), null, "no last pair remembered");
  // The seeded pair works (no fault, no latency): the databases' accounts keep theirs.
  const next = await assertWorks(sb, grant);
  assert.equal(next.user_id, 4242);
  assert.equal((await lastTokens(sb, 4242)).refresh_token, next.refresh_token);
  // Counters from zero: the held call was counted on arrival, before the reset, and its
  // refresh after it.
  assert.deepEqual(await stats(sb), {
    token_calls: 1,
    refresh_token_reuse: 0,
    authorizations: 0,
    refreshes: 2,
    users_me_calls: 1,
    cross_app_calls: 0,
    apps: {
      [CLIENT_ID]: {
        site_id: "MLA",
        // The held call read its body, and so its application, only after the reset.
        token_calls: 2,
        authorizations: 0,
        refreshes: 2,
        users_me_calls: 1,
        cross_app_calls: 0,
      },
    },
  });
});

Deno.test("grants seed many connected sellers whose refresh tokens work", async () => {
  const sb = setup();
  const { grants } = await json(post(sb, "/__sandbox/grants", { count: 500 }), 200);
  assert.equal(grants.length, 500);
  assert.equal(new Set(grants.map((g: Json) => g.user_id)).size, 500);
  for (const g of grants) {
    assert.match(g.access_token, ACCESS_RE);
    assert.match(g.refresh_token, REFRESH_RE);
    assert.match(g.public_key, PUBLIC_RE);
  }
  const next = await json(refresh(sb, grants[499].refresh_token), 200);
  assert.equal(next.user_id, grants[499].user_id);
  await assertMpError(refresh(sb, grants[499].refresh_token), 400, "invalid_grant");
  assert.equal((await stats(sb)).refresh_token_reuse, 1);

  const one = await json(post(sb, "/__sandbox/grants", ""), 200);
  assert.equal(one.grants.length, 1);
  const mine = await json(post(sb, "/__sandbox/grants", { count: 2, user_id: 42 }), 200);
  assert.deepEqual(mine.grants.map((g: Json) => g.user_id), [42, 42]);
  assert.equal(mine.grants[0].public_key, mine.grants[1].public_key);
  await assertMpError(post(sb, "/__sandbox/grants", { count: 10_001 }), 400, "invalid_request");
});

Deno.test("anything else is 404 not_found in MercadoPago's shape", async () => {
  const sb = setup();
  await assertMpError(get(sb, "/users/mine"), 404, "not_found");
  await assertMpError(get(sb, "/oauth/token"), 404, "not_found");
  await assertMpError(post(sb, "/__sandbox/nope", {}), 404, "not_found");
});

Deno.test("GET /users/me: the seller of a working token; 401 for an unknown one", async () => {
  const sb = setup();
  const grant = await json(exchange(sb, await authorize(sb, { user_id: "4242" })), 200);
  const me = (token: string) =>
    sb.handler(new Request(`${BASE}/users/me`, { headers: { authorization: `Bearer ${token}` } }));
  const ok = await json(me(grant.access_token), 200);
  assert.equal(ok.id, 4242);
  assert.equal(typeof ok.nickname, "string");
  assert.equal(typeof ok.site_id, "string");
  await assertMpError(me("APP_USR-unknown"), 401, "unauthorized");
  await assertMpError(get(sb, "/users/me"), 401, "unauthorized");
  assert.equal((await stats(sb)).users_me_calls, 3);
});

Deno.test("deauthorize: the seller's tokens stop working; the notification is signed as MercadoPago signs it", async () => {
  const secret = "webhook-secret-for-the-sandbox-test";
  const sb = createSandbox({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    webhookSecret: secret,
  });
  const a = await json(exchange(sb, await authorize(sb, { user_id: "777" })), 200);
  const other = await json(exchange(sb, await authorize(sb, { user_id: "778" })), 200);
  let delivered: { url: string; headers: Headers } | undefined;
  let body = "";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    delivered = { url: req.url, headers: new Headers(req.headers) };
    body = await req.text();
    return new Response("ok");
  });
  try {
    const res = await json(
      post(sb, "/__sandbox/deauthorize", {
        user_id: 777,
        notify_url: `http://127.0.0.1:${server.addr.port}/hook`,
      }),
      200,
    );
    assert.equal(res.notified, 200);
    assert.equal(res.revoked, 2, "its access and refresh token");
  } finally {
    await server.shutdown();
  }
  const me = (token: string) =>
    sb.handler(new Request(`${BASE}/users/me`, { headers: { authorization: `Bearer ${token}` } }));
  await assertMpError(me(a.access_token), 401, "unauthorized");
  await assertMpError(refresh(sb, a.refresh_token), 400, "invalid_grant");
  assert.equal((await stats(sb)).refresh_token_reuse, 0, "a revoked token is not a reuse");
  assert.equal((await json(me(other.access_token), 200)).id, 778, "other sellers keep working");

  const url = new URL(delivered!.url);
  assert.equal(url.searchParams.has("app"), false, "the single app's notification names no site");
  const dataId = url.searchParams.get("data.id")!;
  const requestId = delivered!.headers.get("x-request-id")!;
  const [, ts, v1] = /^ts=(\d+),v1=([0-9a-f]{64})$/.exec(delivered!.headers.get("x-signature")!)!;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(
    await crypto.subtle.sign(
      "HMAC",
      key,
      new TextEncoder().encode(`id:${dataId};request-id:${requestId};ts:${ts};`),
    ),
  );
  assert.equal(v1, [...mac].map((b) => b.toString(16).padStart(2, "0")).join(""));
  const note = JSON.parse(body);
  assert.equal(note.action, "application.deauthorized");
  assert.equal(note.user_id, 777);
  assert.equal(note.data.id, dataId);
});

Deno.test("fault lose_answer: the refresh is processed, then the handler rejects with DroppedConnection", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb, { user_id: "5001" })), 200);
  await fault(sb, "lose_answer");
  await assert.rejects(refresh(sb, first.refresh_token), DroppedConnection);
  const lost = await lastTokens(sb, 5001);
  assert.notEqual(lost.refresh_token, first.refresh_token);
  assert.match(lost.access_token, ACCESS_RE);
  const { secrets } = await json(get(sb, "/__sandbox/secrets"), 200);
  assert.ok(secrets.includes(lost.access_token) && secrets.includes(lost.refresh_token));
  const next = await assertWorks(sb, lost);
  await assertSpent(sb, first.refresh_token, next);
  const s = await stats(sb);
  assert.equal(s.refreshes, 2);
  assert.equal(s.token_calls, 5);
});

Deno.test("fault lose_answer on a code exchange consumes the code and issues working tokens", async () => {
  const sb = setup();
  const code = await authorize(sb, { user_id: "5002" });
  await fault(sb, "lose_answer");
  await assert.rejects(exchange(sb, code), DroppedConnection);
  await assertMpError(exchange(sb, code), 400, "invalid_grant");
  const lost = await lastTokens(sb, 5002);
  assert.equal(lost.user_id, 5002);
  await assertWorks(sb, lost);
});

Deno.test("fault error_500_after: 500 in MercadoPago's shape after the refresh is processed", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb, { user_id: "5003" })), 200);
  await fault(sb, "error_500_after");
  await assertMpError(refresh(sb, first.refresh_token), 500, "internal_error");
  const issued = await lastTokens(sb, 5003);
  assert.notEqual(issued.refresh_token, first.refresh_token);
  const next = await assertWorks(sb, issued);
  await assertSpent(sb, first.refresh_token, next);
});

Deno.test("fault malformed_200: 200 without access_token after the refresh is processed", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb, { user_id: "5004" })), 200);
  await fault(sb, "malformed_200");
  const body = await json(refresh(sb, first.refresh_token), 200);
  assert.equal("access_token" in body, false);
  assert.equal(body.user_id, 5004);
  const issued = await lastTokens(sb, 5004);
  assert.equal(issued.refresh_token, body.refresh_token);
  const next = await assertWorks(sb, issued);
  await assertSpent(sb, first.refresh_token, next);
});

Deno.test("fault other_seller: a refresh is answered with another seller's pair; the token is spent", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb, { user_id: "5005" })), 200);
  const sibling = await json(refresh(sb, first.refresh_token), 200);
  await fault(sb, "other_seller");
  const other = await json(refresh(sb, sibling.refresh_token), 200);
  assert.notEqual(other.user_id, 5005);
  assert.notEqual(other.public_key, first.public_key);
  assert.ok(other.access_token.endsWith(`-${other.user_id}`));
  const { secrets } = await json(get(sb, "/__sandbox/secrets"), 200);
  assert.ok(secrets.includes(other.access_token) && secrets.includes(other.refresh_token));
  await assertSpent(sb, sibling.refresh_token, sibling);
  await assertWorks(sb, other); // a grant of its own seller, untouched by that reuse
});

Deno.test("after-processing faults leave /users/me alone and keep their count for token calls", async () => {
  const sb = setup();
  const first = await json(exchange(sb, await authorize(sb, { user_id: "5006" })), 200);
  for (const mode of ["lose_answer", "error_500_after", "malformed_200", "other_seller"]) {
    await fault(sb, mode);
    await json(usersMe(sb, first.access_token), 200);
    await json(usersMe(sb, first.access_token), 200);
  }
  // The last fault set (other_seller, count 1) is still there for the next token call.
  assert.notEqual((await json(refresh(sb, first.refresh_token), 200)).user_id, 5006);
  await fault(sb, "error_500", 1); // the old modes still fail /users/me
  await assertMpError(usersMe(sb, first.access_token), 500, "internal_error");
});

Deno.test("reuse of a spent refresh token revokes its whole grant, not the seller's other grants", async () => {
  const sb = setup();
  const a1 = await json(exchange(sb, await authorize(sb, { user_id: "6001" })), 200);
  const a2 = await json(refresh(sb, a1.refresh_token), 200);
  const a3 = await json(refresh(sb, a2.refresh_token), 200);
  const b = await json(exchange(sb, await authorize(sb, { user_id: "6001" })), 200);
  const { grants: [seeded] } = await json(post(sb, "/__sandbox/grants", { user_id: 6001 }), 200);

  const body = await assertMpError(refresh(sb, a1.refresh_token), 400, "invalid_grant");
  assert.equal(typeof body.message, "string");
  assert.equal((await stats(sb)).refresh_token_reuse, 1);
  for (const pair of [a1, a2, a3]) {
    await assertMpError(usersMe(sb, pair.access_token), 401, "unauthorized");
  }
  await assertMpError(refresh(sb, a3.refresh_token), 400, "invalid_grant");
  assert.equal((await stats(sb)).refresh_token_reuse, 1, "a revoked unspent token is no reuse");
  await assertWorks(sb, b);
  await assertWorks(sb, seeded);

  // A seeded grant is a grant too: its reuse revokes only its own chain.
  const { grants: [c1] } = await json(post(sb, "/__sandbox/grants", { user_id: 6002 }), 200);
  const c2 = await json(refresh(sb, c1.refresh_token), 200);
  await assertSpent(sb, c1.refresh_token, c2);
});

Deno.test("invalidate access: the seller's access tokens die, its refresh tokens still work", async () => {
  const sb = setup();
  const a = await json(exchange(sb, await authorize(sb, { user_id: "7001" })), 200);
  const { grants: [b] } = await json(post(sb, "/__sandbox/grants", { user_id: 7001 }), 200);
  const other = await json(exchange(sb, await authorize(sb, { user_id: "7002" })), 200);
  assert.deepEqual(
    await json(post(sb, "/__sandbox/invalidate", { user_id: 7001, scope: "access" }), 200),
    { ok: true, invalidated: 2 },
  );
  await assertMpError(usersMe(sb, a.access_token), 401, "unauthorized");
  await assertMpError(usersMe(sb, b.access_token), 401, "unauthorized");
  await assertWorks(sb, await json(refresh(sb, a.refresh_token), 200));
  await assertWorks(sb, await json(refresh(sb, b.refresh_token), 200));
  await assertWorks(sb, other);
  assert.equal((await stats(sb)).refresh_token_reuse, 0);
});

Deno.test("invalidate grant: access and refresh tokens die (invalid_grant); bad input is 400", async () => {
  const sb = setup();
  const a = await json(exchange(sb, await authorize(sb, { user_id: "7003" })), 200);
  const a2 = await json(refresh(sb, a.refresh_token), 200);
  const other = await json(exchange(sb, await authorize(sb, { user_id: "7004" })), 200);
  assert.deepEqual(
    await json(post(sb, "/__sandbox/invalidate", { user_id: 7003, scope: "grant" }), 200),
    { ok: true, invalidated: 3 }, // a's and a2's access tokens, a2's unspent refresh token
  );
  await assertMpError(usersMe(sb, a2.access_token), 401, "unauthorized");
  await assertMpError(refresh(sb, a2.refresh_token), 400, "invalid_grant");
  assert.equal((await stats(sb)).refresh_token_reuse, 0);
  await assertWorks(sb, other);
  assert.deepEqual(
    await json(post(sb, "/__sandbox/invalidate", { user_id: 7003, scope: "grant" }), 200),
    { ok: true, invalidated: 0 },
  );
  for (const bad of [{ user_id: 7003 }, { user_id: "7003", scope: "grant" }, { scope: "all" }]) {
    await assertMpError(post(sb, "/__sandbox/invalidate", bad), 400, "invalid_request");
  }
  await assertMpError(post(sb, "/__sandbox/invalidate", "{nope"), 400, "invalid_request");
});

Deno.test("users_me_calls counts every /users/me call; expired access tokens are 401", async () => {
  let t = 1_700_000_000_000;
  const sb = setup(() => t);
  const a = await json(exchange(sb, await authorize(sb, { user_id: "8001" })), 200);
  await json(usersMe(sb, a.access_token), 200);
  await assertMpError(usersMe(sb, "APP_USR-nope"), 401, "unauthorized");
  await fault(sb, "rate_limited");
  await assertMpError(usersMe(sb, a.access_token), 429, "too_many_requests");
  t += 15552000 * 1000;
  await assertMpError(usersMe(sb, a.access_token), 401, "unauthorized");
  const fresh = await json(refresh(sb, a.refresh_token), 200);
  await json(usersMe(sb, fresh.access_token), 200);
  assert.equal((await stats(sb)).users_me_calls, 5);
});

/** Serves a fresh sandbox over TCP on an ephemeral port for `fn`, then shuts it down. */
async function overTcp(fn: (base: string, sb: Sandbox) => Promise<void>): Promise<void> {
  const sb = setup();
  const server = serveSandbox(sb, { hostname: "127.0.0.1", port: 0 });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`, sb);
  } finally {
    sb.close();
    await server.shutdown();
  }
}

async function httpJson(url: string, body?: unknown): Promise<Json> {
  const init = body === undefined ? {} : { method: "POST", body: JSON.stringify(body) };
  return await (await fetch(url, init)).json();
}

function refreshBody(token: string): string {
  return JSON.stringify({
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_type: "refresh_token",
    refresh_token: token,
  });
}

Deno.test("serveSandbox over TCP: lose_answer makes fetch reject with a SendRequest error, not Connect", async () => {
  await overTcp(async (base) => {
    const { grants: [g] } = await httpJson(`${base}/__sandbox/grants`, { user_id: 9001 });
    await httpJson(`${base}/__sandbox/faults`, { mode: "lose_answer", count: 2 });
    // On a connection of its own, then on a kept-alive one with a streaming body: in neither
    // case does Deno's fetch resend the call (see the next test).
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    const err = await fetch(`${base}/oauth/token`, {
      method: "POST",
      body: refreshBody(g.refresh_token),
      client,
    }).then(() => null, (e) => e);
    client.close();
    const lost = (await httpJson(`${base}/__sandbox/last_tokens?user_id=9001`)).tokens;
    const err2 = await fetch(`${base}/oauth/token`, {
      method: "POST",
      body: ReadableStream.from([new TextEncoder().encode(refreshBody(lost.refresh_token))]),
    }).then(() => null, (e) => e);
    for (const e of [err, err2]) {
      assert.ok(e instanceof TypeError, `fetch rejected: ${e}`);
      assert.match(String(e.cause), /client error \(SendRequest\)/);
      assert.doesNotMatch(String(e.cause), /\(Connect\)/);
    }
    // Both calls were processed once: the tokens were spent, the newest pair works.
    const newest = (await httpJson(`${base}/__sandbox/last_tokens?user_id=9001`)).tokens;
    assert.notEqual(newest.refresh_token, lost.refresh_token);
    const me = await fetch(`${base}/users/me`, {
      headers: { authorization: `Bearer ${newest.access_token}` },
    });
    assert.equal((await me.json()).id, 9001);
    const s = await httpJson(`${base}/__sandbox/stats`);
    assert.deepEqual([s.token_calls, s.refreshes, s.refresh_token_reuse], [2, 2, 0]);
  });
});

Deno.test("serveSandbox over TCP: on a kept-alive connection Deno's fetch resends a dropped call once", async () => {
  // Deno (ext/fetch, denoland/deno#36415) retries a request with a non-streaming body once on
  // a new connection when a pooled one closes unanswered, so the sandbox, like MercadoPago,
  // sees the spent refresh token again: a reuse, which revokes the grant.
  await overTcp(async (base) => {
    const { grants: [g] } = await httpJson(`${base}/__sandbox/grants`, { user_id: 9002 });
    await httpJson(`${base}/__sandbox/faults`, { mode: "lose_answer", count: 1 });
    const res = await fetch(`${base}/oauth/token`, {
      method: "POST",
      body: refreshBody(g.refresh_token),
    });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error, "invalid_grant");
    const s = await httpJson(`${base}/__sandbox/stats`);
    assert.deepEqual([s.token_calls, s.refreshes, s.refresh_token_reuse], [2, 1, 1]);
  });
});

// ---------------------------------------------------------------------------------------------
// The ledger (`GET /__sandbox/ledger`): what a checker that only reads learns from the sandbox.

/** The ledger's records changed after `since`. */
async function ledger(sb: Sandbox, since = 0): Promise<Json> {
  return await json(get(sb, `/__sandbox/ledger?since=${since}`), 200);
}

/** The id the ledger gives a token: the first 24 hex digits of its SHA-256. */
async function idOf(token: string): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token));
  return [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, "0")).join("")
    .slice(0, 24);
}

/** The ledger's record of the pair whose refresh token is `refreshToken`. */
async function pairOf(sb: Sandbox, refreshToken: string): Promise<Json> {
  const id = await idOf(refreshToken);
  const rec = (await ledger(sb)).pairs.find((p: Json) => p.refresh_id === id);
  assert.ok(rec, "the ledger has the pair");
  return rec;
}

/** Asserts no token or code of `secrets` appears anywhere in the ledger. */
async function assertNoSecret(sb: Sandbox, secrets: string[]) {
  const text = JSON.stringify(await ledger(sb));
  for (const s of secrets) assert.ok(!text.includes(s), "the ledger names no secret");
}

Deno.test("ledger: each pair with its seller, origin, parent and expiry; each presentation with its answer", async () => {
  const t = 1_700_000_000_000;
  const sb = setup(() => t);
  const { grants: [seed] } = await json(
    post(sb, "/__sandbox/grants", { user_id: 7001, expires_in: 3 * 86_400 }),
    200,
  );
  assert.equal(seed.expires_in, 3 * 86_400);
  const seeded = await pairOf(sb, seed.refresh_token);
  assert.deepEqual(
    [seeded.access_id, seeded.user_id, seeded.client_id, seeded.via, seeded.parent, seeded.answer],
    [await idOf(seed.access_token), 7001, CLIENT_ID, "seed", null, "seeded"],
  );
  assert.equal(seeded.access_expires_at, t + 3 * 86_400 * 1000);
  assert.deepEqual(seeded.presented, []);

  const next = await json(refresh(sb, seed.refresh_token), 200);
  const child = await pairOf(sb, next.refresh_token);
  assert.deepEqual(
    [child.via, child.parent, child.user_id, child.grant, child.answer],
    ["refresh", seeded.refresh_id, 7001, seeded.grant, "delivered"],
  );
  assert.equal(child.access_expires_at, t + 180 * 86_400 * 1000, "MercadoPago's 180 days");
  assert.deepEqual((await pairOf(sb, seed.refresh_token)).presented, [
    { at: t, answer: "issued", issued: child.refresh_id },
  ]);

  // Presented again: reused, and the grant's live tokens are in the kill list (both access
  // tokens, the unspent refresh token).
  await assertMpError(refresh(sb, seed.refresh_token), 400, "invalid_grant");
  const again = await pairOf(sb, seed.refresh_token);
  assert.deepEqual(again.presented.map((p: Json) => p.answer), ["issued", "reused"]);
  const { kills } = await ledger(sb);
  assert.deepEqual(kills.map((k: Json) => [k.cause, k.user_id, k.access_ids, k.refresh_ids]), [
    ["reuse", 7001, [seeded.access_id, child.access_id], [child.refresh_id]],
  ]);

  // A code: its id is the parent, the authorizing seller is kept.
  const code = await authorize(sb, { user_id: "7002" });
  const pair = await json(exchange(sb, code), 200);
  const byCode = await pairOf(sb, pair.refresh_token);
  assert.deepEqual(
    [byCode.via, byCode.parent, byCode.authorized_user_id, byCode.user_id, byCode.answer],
    ["code", await idOf(code), 7002, 7002, "delivered"],
  );
  assert.notEqual(byCode.grant, seeded.grant, "a code starts a grant of its own");
  await assertNoSecret(sb, [
    seed.access_token,
    seed.refresh_token,
    next.access_token,
    next.refresh_token,
    code,
    pair.access_token,
    pair.refresh_token,
    CLIENT_SECRET,
  ]);
});

Deno.test("ledger: a fault is recorded when it fires, not when it is set; every answer as the caller got it", async () => {
  const sb = setup();
  const seller = 7101;
  const { grants: [g] } = await json(post(sb, "/__sandbox/grants", { user_id: seller }), 200);
  await fault(sb, "error_500");
  assert.deepEqual((await ledger(sb)).faults, [], "set, not fired");
  await assertMpError(refresh(sb, g.refresh_token), 500, "internal_error");
  await fault(sb, "rate_limited");
  await assertMpError(refresh(sb, g.refresh_token), 429, "too_many_requests");
  await fault(sb, "invalid_grant");
  await assertMpError(refresh(sb, g.refresh_token), 400, "invalid_grant");
  await fault(sb, "error_500_after");
  await assertMpError(refresh(sb, g.refresh_token), 500, "internal_error");
  const lost = await lastTokens(sb, seller);
  await fault(sb, "malformed_200");
  await json(refresh(sb, lost.refresh_token), 200);
  const unread = await lastTokens(sb, seller);
  await fault(sb, "lose_answer");
  await assert.rejects(refresh(sb, unread.refresh_token), DroppedConnection);
  const dropped = await lastTokens(sb, seller);
  await fault(sb, "other_seller");
  const foreign = await json(refresh(sb, dropped.refresh_token), 200);
  await assertMpError(refresh(sb, "TG-never-issued-1"), 400, "invalid_grant");

  const view = await ledger(sb);
  assert.deepEqual(
    view.faults.map((f: Json) => [f.mode, f.call, f.grant_type]),
    [
      ["error_500", "token", "refresh_token"],
      ["rate_limited", "token", "refresh_token"],
      ["invalid_grant", "token", "refresh_token"],
      ["error_500_after", "token", "refresh_token"],
      ["malformed_200", "token", "refresh_token"],
      ["lose_answer", "token", "refresh_token"],
      ["other_seller", "token", "refresh_token"],
    ],
  );
  const answers = async (token: string) =>
    (await pairOf(sb, token)).presented.map((p: Json) => p.answer);
  assert.deepEqual(await answers(g.refresh_token), [
    "error_500",
    "rate_limited",
    "invalid_grant",
    "error_500_after",
  ]);
  assert.deepEqual(await answers(lost.refresh_token), ["malformed_200"]);
  assert.deepEqual(await answers(unread.refresh_token), ["dropped"]);
  assert.deepEqual(await answers(dropped.refresh_token), ["other_seller"]);
  assert.deepEqual(
    [
      (await pairOf(sb, lost.refresh_token)).answer,
      (await pairOf(sb, unread.refresh_token)).answer,
      (await pairOf(sb, dropped.refresh_token)).answer,
    ],
    ["error_500_after", "malformed_200", "dropped"],
  );
  const other = await pairOf(sb, foreign.refresh_token);
  assert.notEqual(other.user_id, seller, "issued to another seller");
  assert.equal(other.answer, "delivered");
  assert.deepEqual(
    view.unknown_presented.map((u: Json) => [u.refresh_id, u.answer]),
    [[await idOf("TG-never-issued-1"), "invalid_grant"]],
  );
});

Deno.test("ledger: since answers only the records changed after it", async () => {
  const sb = setup();
  const { grants: [g] } = await json(post(sb, "/__sandbox/grants", { user_id: 7201 }), 200);
  const first = await ledger(sb);
  assert.equal(first.pairs.length, 1);
  const quiet = await ledger(sb, first.seq);
  assert.deepEqual(
    [quiet.seq, quiet.pairs, quiet.kills, quiet.users_me, quiet.faults, quiet.unknown_presented],
    [first.seq, [], [], [], [], []],
  );
  const next = await json(refresh(sb, g.refresh_token), 200);
  const delta = await ledger(sb, first.seq);
  assert.deepEqual(
    delta.pairs.map((p: Json) => p.refresh_id).sort(),
    [await idOf(g.refresh_token), await idOf(next.refresh_token)].sort(),
    "the presented pair (changed) and the new one",
  );
  assert.ok(delta.seq > first.seq);
  await assertMpError(get(sb, "/__sandbox/ledger?since=-1"), 400, "invalid_request");
});

Deno.test("ledger: the kill list (invalidate, deauthorize) and every /users/me verdict", async () => {
  const sb = setup();
  const { grants: [a] } = await json(post(sb, "/__sandbox/grants", { user_id: 7301 }), 200);
  const { grants: [b] } = await json(post(sb, "/__sandbox/grants", { user_id: 7302 }), 200);
  const { grants: [c] } = await json(post(sb, "/__sandbox/grants", { user_id: 7303 }), 200);
  await json(usersMe(sb, a.access_token), 200);
  await json(post(sb, "/__sandbox/invalidate", { user_id: 7301, scope: "access" }), 200);
  await assertMpError(usersMe(sb, a.access_token), 401, "unauthorized");
  await json(post(sb, "/__sandbox/invalidate", { user_id: 7302, scope: "grant" }), 200);
  await json(post(sb, "/__sandbox/deauthorize", { user_id: 7303 }), 200);
  // Nothing live is left to kill: no record.
  await json(post(sb, "/__sandbox/invalidate", { user_id: 7301, scope: "access" }), 200);
  await fault(sb, "error_500");
  await assertMpError(usersMe(sb, c.access_token), 500, "internal_error");
  await assertMpError(usersMe(sb, "APP_USR-unknown"), 401, "unauthorized");

  const view = await ledger(sb);
  assert.deepEqual(view.kills.map((k: Json) => [k.cause, k.user_id, k.access_ids, k.refresh_ids]), [
    ["invalidate_access", 7301, [await idOf(a.access_token)], []],
    ["invalidate_grant", 7302, [await idOf(b.access_token)], []],
    ["invalidate_grant", 7302, [], [await idOf(b.refresh_token)]],
    ["deauthorize", 7303, [await idOf(c.access_token)], []],
    ["deauthorize", 7303, [], [await idOf(c.refresh_token)]],
  ]);
  assert.deepEqual(
    view.users_me.map((u: Json) => [u.access_id, u.user_id, u.status, u.delivered]),
    [
      [await idOf(a.access_token), 7301, 200, true],
      [await idOf(a.access_token), 7301, 401, true],
      [await idOf(c.access_token), 7303, 500, true],
      [await idOf("APP_USR-unknown"), null, 401, true],
    ],
  );
  assert.deepEqual(view.faults.map((f: Json) => [f.mode, f.call]), [["error_500", "users_me"]]);
  await assertNoSecret(sb, [a.access_token, b.refresh_token, c.access_token]);
});

Deno.test("ledger: a call its caller gave up on is a presentation answered abandoned, nothing issued", async () => {
  const sb = setup();
  const { grants: [g] } = await json(post(sb, "/__sandbox/grants", { user_id: 7401 }), 200);
  await json(post(sb, "/__sandbox/hold", { hold: true }), 200);
  const ac = new AbortController();
  const held = refresh(sb, g.refresh_token, ac.signal);
  await sb.handler(new Request(`${BASE}/__sandbox/hold`)); // the call is held on arrival
  ac.abort();
  assert.equal((await held).status, 504);
  await json(post(sb, "/__sandbox/hold", { hold: false }), 200);
  await fault(sb, "timeout");
  const ac2 = new AbortController();
  const timing = refresh(sb, g.refresh_token, ac2.signal);
  assert.equal(await isPending(timing), true);
  ac2.abort();
  assert.equal((await timing).status, 504);
  const rec = await pairOf(sb, g.refresh_token);
  assert.deepEqual(rec.presented.map((p: Json) => [p.answer, p.issued]), [
    ["abandoned", null],
    ["timeout", null],
  ]);
  assert.equal((await ledger(sb)).pairs.length, 1, "no pair issued");
});

Deno.test("ledger over TCP: the call Deno's fetch resends after a dropped answer is a second presentation", async () => {
  await overTcp(async (base) => {
    const { grants: [g] } = await httpJson(`${base}/__sandbox/grants`, { user_id: 7501 });
    await httpJson(`${base}/__sandbox/faults`, { mode: "lose_answer", count: 1 });
    await (await fetch(`${base}/oauth/token`, {
      method: "POST",
      body: refreshBody(g.refresh_token),
    })).body?.cancel();
    const view = await httpJson(`${base}/__sandbox/ledger`);
    const id = await idOf(g.refresh_token);
    const rec = view.pairs.find((p: Json) => p.refresh_id === id);
    assert.deepEqual(rec.presented.map((p: Json) => p.answer), ["dropped", "reused"]);
    const child = view.pairs.find((p: Json) => p.refresh_id === rec.presented[0].issued);
    assert.equal(child.answer, "dropped");
  });
});
