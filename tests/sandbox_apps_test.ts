/**
 * The MercadoPago sandbox with several applications, one per country site (docs/local-stack.md,
 * "Applications and sites"): sellers of each app's site (or `seller_site`), `/users/me`'s
 * `site_id`, codes and refresh tokens bound to the application that issued them (another app's
 * credentials: `invalid_grant`, unprocessed, counted in `cross_app_calls`), per-app counters,
 * controls limited to one application, deauthorization signed with the seller's own app's first
 * webhook secret. Handler-level tests on a sandbox of three apps; then a stack of all seven
 * (`launchMultiAppStack`): its `stack.env`, its sandbox, one connect end to end.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createSandbox, type Sandbox, type SandboxApp } from "../local/sandbox.ts";
import { sandboxApps, stackSites, throwawayApps } from "../local/mp_apps.ts";
import { parseEnvFile } from "../tooling/env_file.ts";
import { ALL_SITES, testPort, useMultiAppStack } from "./_stack.ts";

const BASE = "http://mp.test";
const REDIRECT = "http://127.0.0.1:54321/functions/v1/mp-oauth-callback";

// deno-lint-ignore no-explicit-any
type Json = any;

const MLA: SandboxApp = {
  siteId: "MLA",
  clientId: "1111111111111111",
  clientSecret: "secret-of-the-argentine-app",
  webhookSecrets: ["mla-webhook-secret-0001"],
};
const MLB: SandboxApp = {
  siteId: "MLB",
  clientId: "2222222222222222",
  clientSecret: "secret-of-the-brazilian-app",
  webhookSecrets: ["mlb-webhook-secret-new-0002", "mlb-webhook-secret-old-0003"],
};
const MLM: SandboxApp = {
  siteId: "MLM",
  clientId: "3333333333333333",
  clientSecret: "secret-of-the-mexican-app",
  webhookSecrets: ["mlm-webhook-secret-0004"],
};

function setup(): Sandbox {
  return createSandbox({ apps: [MLA, MLB, MLM] });
}

function get(sb: Sandbox, path: string): Promise<Response> {
  return sb.handler(new Request(BASE + path));
}

function post(sb: Sandbox, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return sb.handler(
    new Request(BASE + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal,
    }),
  );
}

async function json(res: Response | Promise<Response>, status: number): Promise<Json> {
  const r = await res;
  const body = await r.json();
  assert.equal(r.status, status, JSON.stringify(body));
  return body;
}

async function assertMpError(res: Response | Promise<Response>, status: number, error: string) {
  const body = await json(res, status);
  assert.equal(body.error, error);
  assert.equal(body.status, status);
  assert.deepEqual(body.cause, []);
  return body;
}

/** The seller approves `app`; answers the code (and the redirect's query). */
async function authorize(
  sb: Sandbox,
  app: SandboxApp,
  extra: Record<string, string> = {},
): Promise<string> {
  const q = new URLSearchParams({
    client_id: app.clientId,
    response_type: "code",
    platform_id: "mp",
    state: "st",
    redirect_uri: REDIRECT,
    ...extra,
  });
  const res = await get(sb, `/authorization?${q}`);
  assert.equal(res.status, 302, await res.text());
  return new URL(res.headers.get("location")!).searchParams.get("code")!;
}

/** A code exchange with `app`'s credentials. */
function exchange(sb: Sandbox, app: SandboxApp, code: string) {
  return post(sb, "/oauth/token", {
    client_id: app.clientId,
    client_secret: app.clientSecret,
    grant_type: "authorization_code",
    code,
    redirect_uri: REDIRECT,
  });
}

/** A refresh with `app`'s credentials. */
function refresh(sb: Sandbox, app: SandboxApp, token: string, signal?: AbortSignal) {
  return post(sb, "/oauth/token", {
    client_id: app.clientId,
    client_secret: app.clientSecret,
    grant_type: "refresh_token",
    refresh_token: token,
  }, signal);
}

/** A seller of `app` connected through it (authorization and exchange). */
async function connect(sb: Sandbox, app: SandboxApp, extra: Record<string, string> = {}) {
  return await json(exchange(sb, app, await authorize(sb, app, extra)), 200);
}

function usersMe(sb: Sandbox, token: string): Promise<Response> {
  return sb.handler(
    new Request(`${BASE}/users/me`, { headers: { authorization: `Bearer ${token}` } }),
  );
}

async function stats(sb: Sandbox): Promise<Json> {
  return await json(get(sb, "/__sandbox/stats"), 200);
}

/** The ledger's id of a token: the first 24 hex digits of its SHA-256. */
function tokenId(token: string): string {
  return createHash("sha256").update(token).digest("hex").slice(0, 24);
}

/** The hex HMAC-SHA256 of MercadoPago's signature manifest under `secret`. */
async function hmac(secret: string, manifest: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(manifest)),
  );
  return [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("authorization: each app's sellers belong to its site, or to seller_site; /users/me answers the site", async () => {
  const sb = setup();
  const ar = await connect(sb, MLA);
  const br = await connect(sb, MLB);
  const mx = await connect(sb, MLM);
  const brOnArgentineApp = await connect(sb, MLA, { seller_site: "MLB" });
  const sites = [];
  for (const pair of [ar, br, mx, brOnArgentineApp]) {
    const me = await json(usersMe(sb, pair.access_token), 200);
    assert.deepEqual(Object.keys(me).sort(), ["id", "nickname", "site_id"]);
    assert.equal(me.id, pair.user_id);
    sites.push(me.site_id);
  }
  assert.deepEqual(sites, ["MLA", "MLB", "MLM", "MLB"]);
  // Each access token names the application that issued it, as MercadoPago's do.
  assert.ok(ar.access_token.startsWith(`APP_USR-${MLA.clientId}-`));
  assert.ok(br.access_token.startsWith(`APP_USR-${MLB.clientId}-`));
  assert.ok(brOnArgentineApp.access_token.startsWith(`APP_USR-${MLA.clientId}-`));
  // An existing seller keeps its site, through any app; another seller_site for it is refused.
  const again = await connect(sb, MLM, { user_id: String(br.user_id) });
  assert.equal((await json(usersMe(sb, again.access_token), 200)).site_id, "MLB");
  const q = (extra: Record<string, string>) =>
    `/authorization?${new URLSearchParams({
      client_id: MLA.clientId,
      response_type: "code",
      redirect_uri: REDIRECT,
      ...extra,
    })}`;
  await assertMpError(
    get(sb, q({ user_id: String(br.user_id), seller_site: "MLA" })),
    400,
    "invalid_request",
  );
  await assertMpError(get(sb, q({ seller_site: "MLX" })), 400, "invalid_request");
  await assertMpError(get(sb, q({ client_id: "9999" })), 400, "invalid_client");
  const s = await stats(sb);
  assert.equal(s.authorizations, 5);
  assert.deepEqual(
    Object.fromEntries(
      Object.entries(s.apps).map(([id, a]: [string, Json]) => [id, [a.site_id, a.authorizations]]),
    ),
    {
      [MLA.clientId]: ["MLA", 2],
      [MLB.clientId]: ["MLB", 1],
      [MLM.clientId]: ["MLM", 2],
    },
  );
});

Deno.test("a code presented with another app's credentials is invalid_grant, unspent, counted in cross_app_calls", async () => {
  const sb = setup();
  const code = await authorize(sb, MLA);
  const refused = await assertMpError(exchange(sb, MLB, code), 400, "invalid_grant");
  assert.match(refused.message, /belongs to another client/);
  let s = await stats(sb);
  assert.equal(s.cross_app_calls, 1);
  assert.equal(
    s.apps[MLB.clientId].cross_app_calls,
    1,
    "counted for the app whose credentials came",
  );
  assert.equal(s.apps[MLA.clientId].cross_app_calls, 0);
  // Refused without processing: the code still exchanges once with its own app.
  const pair = await json(exchange(sb, MLA, code), 200);
  assert.ok(pair.access_token.startsWith(`APP_USR-${MLA.clientId}-`));
  await assertMpError(exchange(sb, MLA, code), 400, "invalid_grant");
  s = await stats(sb);
  assert.equal(s.cross_app_calls, 1, "a spent code of its own app is no cross-app call");
  assert.equal(s.token_calls, 3);
  assert.equal(s.apps[MLA.clientId].token_calls, 2);
  assert.equal(s.apps[MLB.clientId].token_calls, 1);
  assert.equal(s.apps[MLM.clientId].token_calls, 0);
  // Another app's id with this app's secret is no application at all: invalid_client.
  const code2 = await authorize(sb, MLA);
  await assertMpError(
    post(sb, "/oauth/token", {
      client_id: MLB.clientId,
      client_secret: MLA.clientSecret,
      grant_type: "authorization_code",
      code: code2,
      redirect_uri: REDIRECT,
    }),
    401,
    "invalid_client",
  );
  assert.equal((await stats(sb)).cross_app_calls, 1);
});

Deno.test("a refresh token presented with another app's credentials is invalid_grant: not spent, no reuse, counted", async () => {
  const sb = setup();
  const first = await connect(sb, MLB);
  const refused = await assertMpError(refresh(sb, MLA, first.refresh_token), 400, "invalid_grant");
  assert.match(refused.message, /belongs to another client/);
  // Not spent: its own app rotates it.
  const second = await json(refresh(sb, MLB, first.refresh_token), 200);
  assert.equal(second.user_id, first.user_id);
  assert.ok(second.access_token.startsWith(`APP_USR-${MLB.clientId}-`));
  // A spent token presented by another app is refused unprocessed too: no reuse revokes the grant.
  await assertMpError(refresh(sb, MLM, first.refresh_token), 400, "invalid_grant");
  assert.equal((await json(usersMe(sb, second.access_token), 200)).id, first.user_id);
  const s = await stats(sb);
  assert.equal(s.cross_app_calls, 2);
  assert.equal(s.refresh_token_reuse, 0);
  assert.equal(s.refreshes, 1);
  assert.equal(s.apps[MLA.clientId].cross_app_calls, 1);
  assert.equal(s.apps[MLM.clientId].cross_app_calls, 1);
  assert.equal(s.apps[MLB.clientId].refreshes, 1);
  // The grant still rotates with its own app.
  await json(refresh(sb, MLB, second.refresh_token), 200);
  // The ledger: each pair's application, each cross-app presentation answered as such.
  const ledger = await json(get(sb, "/__sandbox/ledger"), 200);
  const rec = ledger.pairs.find((p: Json) => p.refresh_id === tokenId(first.refresh_token));
  assert.equal(rec.client_id, MLB.clientId);
  assert.deepEqual(rec.presented.map((p: Json) => p.answer), ["cross_app", "issued", "cross_app"]);
});

Deno.test("grants seed sellers of an app (its site, or seller_site) whose tokens only that app refreshes", async () => {
  const sb = setup();
  const { grants } = await json(
    post(sb, "/__sandbox/grants", { count: 2, client_id: MLM.clientId }),
    200,
  );
  const { grants: [other] } = await json(
    post(sb, "/__sandbox/grants", { client_id: MLM.clientId, seller_site: "MLC" }),
    200,
  );
  const { grants: [plain] } = await json(post(sb, "/__sandbox/grants", {}), 200);
  const site = async (g: Json) => (await json(usersMe(sb, g.access_token), 200)).site_id;
  assert.deepEqual(
    [await site(grants[0]), await site(grants[1]), await site(other), await site(plain)],
    ["MLM", "MLM", "MLC", "MLA"],
    "without client_id, the first application's",
  );
  await assertMpError(refresh(sb, MLA, grants[0].refresh_token), 400, "invalid_grant");
  await json(refresh(sb, MLM, grants[0].refresh_token), 200);
  await json(refresh(sb, MLA, plain.refresh_token), 200);
  await assertMpError(
    post(sb, "/__sandbox/grants", { client_id: "404" }),
    400,
    "invalid_request",
  );
  const s = await stats(sb);
  assert.equal(s.cross_app_calls, 1);
  assert.equal(
    s.apps[MLM.clientId].users_me_calls,
    3,
    "each /users/me counted for the token's app",
  );
  assert.equal(s.apps[MLA.clientId].users_me_calls, 1);
});

Deno.test("a fault with client_id strikes only that app's calls, token and /users/me, before the fault of every call", async () => {
  const sb = setup();
  const ar = await connect(sb, MLA);
  const br = await connect(sb, MLB);
  assert.deepEqual(
    await json(
      post(sb, "/__sandbox/faults", { mode: "error_500", count: 3, client_id: MLA.clientId }),
      200,
    ),
    { ok: true },
  );
  // Brazil works while Argentina's MercadoPago answers 500.
  const brNext = await json(refresh(sb, MLB, br.refresh_token), 200);
  await json(usersMe(sb, brNext.access_token), 200);
  await assertMpError(refresh(sb, MLA, ar.refresh_token), 500, "internal_error");
  await assertMpError(usersMe(sb, ar.access_token), 500, "internal_error");
  assert.deepEqual(await json(get(sb, "/__sandbox/controls"), 200), {
    fault: null,
    latency_ms: 0,
    hold: false,
    held: 0,
    apps: {
      [MLA.clientId]: {
        fault: { mode: "error_500", count: 1 },
        latency_ms: 0,
        hold: false,
        held: 0,
      },
    },
  });
  // The app's own fault goes first; the fault of every call then strikes any app.
  await json(post(sb, "/__sandbox/faults", { mode: "rate_limited", count: 2 }), 200);
  await assertMpError(refresh(sb, MLA, ar.refresh_token), 500, "internal_error");
  await assertMpError(refresh(sb, MLA, ar.refresh_token), 429, "too_many_requests");
  await assertMpError(refresh(sb, MLB, brNext.refresh_token), 429, "too_many_requests");
  const arNext = await json(refresh(sb, MLA, ar.refresh_token), 200);
  assert.equal(arNext.user_id, ar.user_id, "no fault spent the token");
  // Clearing an app's fault leaves the other's; a fault for an unknown app is refused.
  await json(
    post(sb, "/__sandbox/faults", { mode: "error_500", count: 5, client_id: MLB.clientId }),
    200,
  );
  await json(post(sb, "/__sandbox/faults", { mode: "none", client_id: MLA.clientId }), 200);
  await assertMpError(refresh(sb, MLB, brNext.refresh_token), 500, "internal_error");
  await json(post(sb, "/__sandbox/faults", { mode: "none", client_id: MLB.clientId }), 200);
  await json(refresh(sb, MLB, brNext.refresh_token), 200);
  await assertMpError(
    post(sb, "/__sandbox/faults", { mode: "error_500", client_id: "404" }),
    400,
    "invalid_request",
  );
  // The ledger says which app each fault was limited to.
  const fired = (await json(get(sb, "/__sandbox/ledger"), 200)).faults;
  assert.deepEqual(
    fired.map((f: Json) => [f.mode, f.call, f.client_id]),
    [
      ["error_500", "token", MLA.clientId],
      ["error_500", "users_me", MLA.clientId],
      ["error_500", "token", MLA.clientId],
      ["rate_limited", "token", null],
      ["rate_limited", "token", null],
      ["error_500", "token", MLB.clientId],
    ],
  );
});

Deno.test("faults after processing, with client_id: lose_answer for one app, the others answered", async () => {
  const sb = setup();
  const ar = await connect(sb, MLA);
  const mx = await connect(sb, MLM);
  await json(post(sb, "/__sandbox/faults", { mode: "other_seller", client_id: MLM.clientId }), 200);
  const arNext = await json(refresh(sb, MLA, ar.refresh_token), 200);
  assert.equal(arNext.user_id, ar.user_id);
  const swapped = await json(refresh(sb, MLM, mx.refresh_token), 200);
  assert.notEqual(swapped.user_id, mx.user_id, "MLM's call took the fault");
  assert.equal((await json(usersMe(sb, swapped.access_token), 200)).site_id, "MLM");
  await json(refresh(sb, MLM, swapped.refresh_token), 200);
});

Deno.test("latency and the latch with client_id hold only that app's token calls", async () => {
  const sb = setup();
  const ar = await connect(sb, MLA);
  const br = await connect(sb, MLB);
  // The latch of MLA: its call waits unprocessed while MLB's is answered.
  assert.deepEqual(
    await json(post(sb, "/__sandbox/hold", { hold: true, client_id: MLA.clientId }), 200),
    { hold: true, held: 0 },
  );
  let answered = false;
  const held = refresh(sb, MLA, ar.refresh_token).then((r) => (answered = true, r));
  for (
    let i = 0;
    (await json(get(sb, `/__sandbox/hold?client_id=${MLA.clientId}`), 200)).held < 1;
    i++
  ) {
    assert.ok(i < 10_000, "the MLA call is held");
    await new Promise((r) => setTimeout(r, 1));
  }
  const brNext = await json(refresh(sb, MLB, br.refresh_token), 200);
  assert.equal(answered, false);
  assert.deepEqual(await json(get(sb, "/__sandbox/hold"), 200), { hold: false, held: 1 });
  assert.deepEqual(await json(get(sb, `/__sandbox/hold?client_id=${MLB.clientId}`), 200), {
    hold: false,
    held: 0,
  });
  // Opening the latch of every call does not open MLA's.
  await json(post(sb, "/__sandbox/hold", { hold: false }), 200);
  assert.equal(answered, false);
  assert.deepEqual(
    await json(post(sb, "/__sandbox/hold", { hold: false, client_id: MLA.clientId }), 200),
    { hold: false, held: 0 },
  );
  const arNext = await json(held, 200);
  assert.equal(arNext.user_id, ar.user_id);
  // MLB's latency: its call waits (until its client gives up), MLA's is answered meanwhile.
  await json(post(sb, "/__sandbox/latency", { ms: 600_000, client_id: MLB.clientId }), 200);
  const abort = new AbortController();
  let late = false;
  const slow = refresh(sb, MLB, brNext.refresh_token, abort.signal).then((r) => (late = true, r));
  await json(refresh(sb, MLA, arNext.refresh_token), 200);
  assert.equal(late, false);
  abort.abort();
  assert.equal((await slow).status, 504);
  await json(post(sb, "/__sandbox/reset", {}), 200);
  assert.deepEqual(await json(get(sb, "/__sandbox/controls"), 200), {
    fault: null,
    latency_ms: 0,
    hold: false,
    held: 0,
  });
  // Abandoned before processing: the token still rotates, with no latency left.
  await json(refresh(sb, MLB, brNext.refresh_token), 200);
  await assertMpError(
    get(sb, "/__sandbox/hold?client_id=404"),
    400,
    "invalid_request",
  );
});

Deno.test("deauthorize: signed with the first webhook secret of the seller's own app, notify URL naming its site", async () => {
  const sb = setup();
  const br = await connect(sb, MLB);
  // The same seller also authorized the Mexican app.
  const brOnMx = await connect(sb, MLM, { user_id: String(br.user_id) });
  const other = await connect(sb, MLB);
  const received: { url: URL; headers: Headers; body: Json }[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: testPort(77), onListen: () => {} },
    async (req) => {
      received.push({ url: new URL(req.url), headers: req.headers, body: await req.json() });
      return new Response("ok");
    },
  );
  try {
    const hook = `http://127.0.0.1:${server.addr.port}/functions/v1/mp-webhook`;
    // Only the Mexican app is removed: its tokens die, the Brazilian app's live on.
    const mx = await json(
      post(sb, "/__sandbox/deauthorize", {
        user_id: br.user_id,
        notify_url: hook,
        client_id: MLM.clientId,
      }),
      200,
    );
    assert.deepEqual(mx, { ok: true, revoked: 2, notified: 200 });
    await assertMpError(usersMe(sb, brOnMx.access_token), 401, "unauthorized");
    await json(usersMe(sb, br.access_token), 200);
    // Without client_id: the seller's own app (MLB, which created it), every token of theirs.
    const own = await json(
      post(sb, "/__sandbox/deauthorize", { user_id: br.user_id, notify_url: hook }),
      200,
    );
    assert.deepEqual(own, { ok: true, revoked: 2, notified: 200 });
    await assertMpError(usersMe(sb, br.access_token), 401, "unauthorized");
    await json(usersMe(sb, other.access_token), 200);
    // A notify URL that names its app already keeps it.
    await json(
      post(sb, "/__sandbox/deauthorize", { user_id: other.user_id, notify_url: `${hook}?app=MLA` }),
      200,
    );
  } finally {
    await server.shutdown();
  }
  assert.deepEqual(received.map((r) => r.url.searchParams.get("app")), ["MLM", "MLB", "MLA"]);
  const secrets = [MLM.webhookSecrets[0], MLB.webhookSecrets[0], MLB.webhookSecrets[0]];
  for (const [i, r] of received.entries()) {
    const [, ts, v1] = /^ts=(\d+),v1=([0-9a-f]{64})$/.exec(r.headers.get("x-signature")!)!;
    const manifest = `id:${r.url.searchParams.get("data.id")};request-id:${
      r.headers.get("x-request-id")
    };ts:${ts};`;
    assert.equal(
      v1,
      await hmac(secrets[i], manifest),
      `notification ${i} signed with its app's first secret`,
    );
    assert.notEqual(v1, await hmac(MLA.webhookSecrets[0], manifest));
    assert.equal(r.body.action, "application.deauthorized");
    assert.equal(r.body.user_id, i < 2 ? br.user_id : other.user_id);
  }
});

Deno.test("invalidate with client_id kills only that app's tokens of the seller", async () => {
  const sb = setup();
  const ar = await connect(sb, MLA);
  const arOnBr = await connect(sb, MLB, { user_id: String(ar.user_id) });
  const res = await json(
    post(sb, "/__sandbox/invalidate", {
      user_id: ar.user_id,
      scope: "grant",
      client_id: MLB.clientId,
    }),
    200,
  );
  assert.deepEqual(res, { ok: true, invalidated: 2 });
  await assertMpError(usersMe(sb, arOnBr.access_token), 401, "unauthorized");
  await assertMpError(refresh(sb, MLB, arOnBr.refresh_token), 400, "invalid_grant");
  await json(usersMe(sb, ar.access_token), 200);
  await json(refresh(sb, MLA, ar.refresh_token), 200);
});

Deno.test("reset zeroes every app's counters and clears every app's controls", async () => {
  const sb = setup();
  const br = await connect(sb, MLB);
  await json(
    post(sb, "/__sandbox/faults", { mode: "error_500", count: 9, client_id: MLB.clientId }),
    200,
  );
  await json(post(sb, "/__sandbox/latency", { ms: 60_000, client_id: MLM.clientId }), 200);
  await json(post(sb, "/__sandbox/hold", { hold: true, client_id: MLA.clientId }), 200);
  await json(post(sb, "/__sandbox/reset", {}), 200);
  const s = await stats(sb);
  assert.equal(s.cross_app_calls, 0);
  for (const app of [MLA, MLB, MLM]) {
    assert.deepEqual(s.apps[app.clientId], {
      site_id: app.siteId,
      token_calls: 0,
      authorizations: 0,
      refreshes: 0,
      users_me_calls: 0,
      cross_app_calls: 0,
    });
  }
  assert.equal((await json(get(sb, "/__sandbox/controls"), 200)).apps, undefined);
  await json(refresh(sb, MLB, br.refresh_token), 200);
});

Deno.test("the stack's applications: STACK_MP_SITES, throwaway apps, MP_APPS read back as the sandbox's", () => {
  assert.deepEqual(stackSites(undefined, "dev"), ["MLA", "MLB"]);
  assert.deepEqual(stackSites(undefined, "test"), []);
  assert.deepEqual(stackSites("single", "dev"), []);
  assert.deepEqual(stackSites("MLB, MPE", "test"), ["MLB", "MPE"]);
  assert.throws(() => stackSites("MLA,XXX", "dev"), /^Error: STACK_MP_SITES: "XXX"/);
  assert.throws(() => stackSites("MLA,MLA", "dev"), /STACK_MP_SITES: a site is repeated/);
  // The random source repeats an id: the second app draws again.
  const ids = ["100", "100", "101", "102"];
  let n = 0;
  const apps = throwawayApps(["MLA", "MLB", "MLM"], {
    redirectUri: REDIRECT,
    authUrl: "http://127.0.0.1:1",
    random: { id: () => ids.shift()!, secret: () => `s${n++}` },
  });
  assert.deepEqual(Object.keys(apps), ["MLA", "MLB", "MLM"]);
  assert.deepEqual(Object.values(apps).map((a) => a.client_id), ["100", "101", "102"]);
  assert.deepEqual(Object.values(apps).map((a) => a.webhook_secrets.length), [1, 2, 1]);
  assert.equal(apps.MLB.redirect_uri, REDIRECT);
  assert.equal(apps.MLB.pkce, true);
  const read = sandboxApps((name) => ({ MP_APPS: JSON.stringify(apps) } as Json)[name]);
  assert.equal(read.multi, true);
  assert.deepEqual(read.apps.map((a) => [a.siteId, a.clientId]), [
    ["MLA", apps.MLA.client_id],
    ["MLB", apps.MLB.client_id],
    ["MLM", apps.MLM.client_id],
  ]);
  const single = sandboxApps((name) =>
    ({ MP_CLIENT_ID: "1", MP_CLIENT_SECRET: "x", MP_WEBHOOK_SECRET: "w" } as Json)[name]
  );
  assert.deepEqual(single, {
    apps: [{ siteId: "MLA", clientId: "1", clientSecret: "x", webhookSecrets: ["w"] }],
    multi: false,
  });
  const bad = (value: unknown) => () =>
    sandboxApps((name) => name === "MP_APPS" ? JSON.stringify(value) : undefined);
  assert.throws(
    bad({ MLB: { client_id: "1", webhook_secrets: [] } }),
    /^Error: MP_APPS\.MLB\.client_secret: missing$/,
  );
  assert.throws(bad({ XX: { client_id: "1" } }), /^Error: MP_APPS\.XX: not a MercadoPago site$/);
  assert.throws(bad({}), /MP_APPS: no application/);
});

// A stack of all seven applications, beside the test stack.
const multi = useMultiAppStack(ALL_SITES);

Deno.test("multi-app stack: stack.env carries MP_APPS of seven apps intact for a shell and dotenv", async () => {
  const m = multi();
  const apps = m.apps;
  assert.deepEqual(Object.keys(apps), [...ALL_SITES]);
  assert.equal(new Set(Object.values(apps).map((a) => a.client_id)).size, 7);
  for (const [site, app] of Object.entries(apps)) {
    assert.equal(app.webhook_secrets.length, site === "MLB" ? 2 : 1, site);
    assert.equal(app.redirect_uri, `${m.functionsUrl}/mp-oauth-callback`);
    assert.equal(app.auth_url, m.sandboxUrl);
    assert.equal(app.pkce, true);
  }
  // The single-app variables name the first application.
  assert.equal(m.env.MP_CLIENT_ID, apps.MLA.client_id);
  assert.equal(m.env.MP_CLIENT_SECRET, apps.MLA.client_secret);
  assert.equal(m.env.MP_WEBHOOK_SECRET, apps.MLA.webhook_secrets[0]);
  const folder = `${Deno.env.get("STACK_LOG")!.replace(/\/[^/]*$/, "")}-apps`;
  const text = await Deno.readTextFile(`${folder}/stack.env`);
  assert.equal(parseEnvFile(text).MP_APPS, m.env.MP_APPS);
  const out = await new Deno.Command("bash", {
    args: ["-c", 'set -a; . "$1"; set +a; printf "%s" "$MP_APPS"', "bash", `${folder}/stack.env`],
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0);
  assert.equal(new TextDecoder().decode(out.stdout), m.env.MP_APPS, "byte for byte from bash");
});

Deno.test("multi-app stack: its sandbox knows every app, with sellers of each site, faults per app", async () => {
  const m = multi();
  const s0 = await m.sandbox.stats();
  assert.deepEqual(
    Object.fromEntries(Object.entries(s0.apps).map(([id, a]) => [a.site_id, id])),
    Object.fromEntries(Object.entries(m.apps).map(([site, a]) => [site, a.client_id])),
  );
  const pairs: Record<string, Json> = {};
  for (const site of ALL_SITES) {
    [pairs[site]] = await m.sandbox.grants(1, { clientId: m.clientId(site) });
    const me = await fetch(`${m.sandboxUrl}/users/me`, {
      headers: { authorization: `Bearer ${pairs[site].access_token}` },
    });
    assert.equal((await me.json()).site_id, site);
  }
  const refreshAt = async (site: string, token: string) => {
    const res = await fetch(`${m.sandboxUrl}/oauth/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        client_id: m.apps[site].client_id,
        client_secret: m.apps[site].client_secret,
        grant_type: "refresh_token",
        refresh_token: token,
      }),
    });
    return { status: res.status, body: await res.json() };
  };
  // Mexico's MercadoPago answers 500; every other site refreshes.
  await m.sandbox.faults("error_500", 1_000, m.clientId("MLM"));
  for (const site of ALL_SITES) {
    const { status } = await refreshAt(site, pairs[site].refresh_token);
    assert.equal(status, site === "MLM" ? 500 : 200, site);
  }
  const wrong = await refreshAt("MLA", pairs.MLM.refresh_token);
  assert.equal(wrong.status, 400);
  assert.equal(wrong.body.error, "invalid_grant");
  const s = await m.sandbox.stats();
  assert.equal(s.cross_app_calls, 1);
  assert.equal(s.apps[m.clientId("MLA")].cross_app_calls, 1);
  assert.equal(s.apps[m.clientId("MLM")].token_calls, 1);
  assert.equal(s.apps[m.clientId("MLA")].token_calls, 2);
  assert.deepEqual((await m.sandbox.controls()).apps, {
    [m.clientId("MLM")]: {
      fault: { mode: "error_500", count: 999 },
      latency_ms: 0,
      hold: false,
      held: 0,
    },
  });
  await m.sandbox.reset();
  assert.equal((await m.sandbox.stats()).cross_app_calls, 0);
});

Deno.test("multi-app stack: a seller connects end to end through the stack's functions, with no cross-app call", async () => {
  const m = multi();
  await m.sandbox.reset();
  const accountId = await m.newAccount();
  const start = await m.call("mp-oauth-start", { account_id: accountId });
  assert.equal(start.status, 200, JSON.stringify(start.body));
  const url = new URL(start.body.url);
  const app = Object.entries(m.apps).find(([, a]) =>
    a.client_id === url.searchParams.get("client_id")
  );
  assert.ok(app, "the authorization URL names one of the stack's applications");
  const approved = await fetch(url, { redirect: "manual" });
  await approved.body?.cancel();
  assert.equal(approved.status, 302);
  const back = await fetch(approved.headers.get("location")!, { redirect: "manual" });
  await back.body?.cancel();
  assert.equal(back.status, 302);
  assert.equal(new URL(back.headers.get("location")!).searchParams.get("mp"), "connected");
  const [row] = await m
    .adminDb()`select mp_connected, mp_user_id from nv_accounts where id = ${accountId}`;
  assert.equal(row.mp_connected, true);
  const s = await m.sandbox.stats();
  assert.equal(s.cross_app_calls, 0);
  assert.equal(s.apps[app[1].client_id].token_calls, 1, "the code exchange, with its own app");
  const me = await fetch(`${m.sandboxUrl}/__sandbox/last_tokens?user_id=${row.mp_user_id}`);
  assert.ok((await me.json()).tokens.access_token.startsWith(`APP_USR-${app[1].client_id}-`));
});
