// deno-lint-ignore-file no-explicit-any
/**
 * What the tests share: the running test stack (from `.local/test/stack.env`, passed in by
 * `deno task test`), database handles, a supabase-js client, sandbox controls and seeding.
 */
import { createClient } from "@supabase/supabase-js";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { encryptSecret, importKeyRing, type KeyRing } from "../shared/platform/crypto.ts";
import { parseKeyRing } from "../shared/platform/config.ts";
import { Cluster } from "../local/postgres.ts";
import { FUNCTION_SECRETS } from "../local/stack.ts";
import type { MpGrant } from "../local/sandbox.ts";
import { launchStack } from "../local/launch.ts";
import { findLeaks, knownSecrets } from "../local/leaks.ts";

export type { MpGrant };

function need(name: string): string {
  const v = Deno.env.get(name);
  if (!v) throw new Error(`${name} is not set: run the tests with \`deno task test\``);
  return v;
}

/** The test stack's environment (URLs, keys). */
export const stack = {
  get functionsUrl() {
    return need("FUNCTIONS_URL");
  },
  get supabaseUrl() {
    return need("SUPABASE_URL");
  },
  get sandboxUrl() {
    return need("SANDBOX_URL");
  },
  get secretKey() {
    return need("SECRET_KEY");
  },
  get serviceRoleKey() {
    return need("SERVICE_ROLE_KEY");
  },
  get appReturnUrl() {
    return need("APP_RETURN_URL");
  },
  get webhookSecret() {
    return need("MP_WEBHOOK_SECRET");
  },
  env: need,
};

let backendSql: Sql | undefined;
let adminSql: Sql | undefined;

/** A pool on the Backend DB (closed by `closeDbs`). */
export function backendDb(): Sql {
  return backendSql ??= connect(need("BACKEND_DB_URL"), { max: 10, fetchTypes: true });
}

/** A pool on the Admin DB (closed by `closeDbs`). */
export function adminDb(): Sql {
  return adminSql ??= connect(need("ADMIN_DB_URL"), { max: 10, fetchTypes: true });
}

/** Closes the test pools; call it at the end of a test file that used them. */
export async function closeDbs(): Promise<void> {
  await Promise.all([backendSql?.end({ timeout: 1 }), adminSql?.end({ timeout: 1 })]);
  backendSql = adminSql = undefined;
}

/**
 * A cluster behind its pooler: `start()` returns once the pooler serves queries again (it
 * logs in to the restarted server within its `server_login_retry`), as a client that waits
 * for a database to come back would see it.
 */
class PooledCluster extends Cluster {
  constructor(
    spec: ConstructorParameters<typeof Cluster>[0],
    bin: string,
    readonly pooler: string,
  ) {
    super(spec, bin);
  }

  override async start(): Promise<void> {
    await super.start();
    const deadline = Date.now() + 15_000;
    for (;;) {
      // psql rather than postgres.js: a refused connection leaves nothing dangling.
      const out = await new Deno.Command(`${this.bin}/psql`, {
        args: [this.pooler, "-Atc", "select 1"],
        env: { PGCONNECT_TIMEOUT: "2" },
        stdout: "null",
        stderr: "null",
      }).output();
      if (out.success) return;
      if (Date.now() > deadline) throw new Error(`${this.spec.name} pooler did not come back`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The local cluster behind `which`, to stop, start or freeze it in fault tests. */
export function cluster(which: "backend" | "admin"): Cluster {
  const port = Number(need(which === "backend" ? "BACKEND_DB_PORT" : "ADMIN_DB_PORT"));
  const dir = need(which === "backend" ? "BACKEND_PGDATA" : "ADMIN_PGDATA");
  const pooler = need(which === "backend" ? "BACKEND_POOLER_URL" : "ADMIN_POOLER_URL");
  return new PooledCluster({ name: which, dir, port }, need("PG_BIN"), pooler);
}

/** A supabase-js client with the project's secret key, as a server caller has. */
export function supabase(key = stack.secretKey) {
  return createClient(stack.supabaseUrl, key, {
    auth: { persistSession: false, autoRefreshToken: false },
  });
}

/** How {@link call} calls: method, key (null: none), query string, headers. */
type CallOptions = {
  method?: string;
  key?: string | null;
  query?: string;
  headers?: HeadersInit;
};

/** What {@link call} answers: the status, the body (parsed when JSON) and the headers. */
type CallAnswer = { status: number; body: any; headers: Headers };

/** Calls a function through the gateway with the secret key; returns status and JSON. */
export function call(name: string, body?: unknown, opts: CallOptions = {}): Promise<CallAnswer> {
  return callAt(stack.functionsUrl, stack.secretKey, name, body, opts);
}

/** {@link call} against the functions at `functionsUrl`, whose secret key is `secretKey`. */
async function callAt(
  functionsUrl: string,
  secretKey: string,
  name: string,
  body?: unknown,
  opts: CallOptions = {},
): Promise<CallAnswer> {
  const method = opts.method ?? (body === undefined ? "GET" : "POST");
  const headers = new Headers(opts.headers);
  if (opts.key !== null) headers.set("apikey", opts.key ?? secretKey);
  if (body !== undefined) headers.set("content-type", "application/json");
  const res = await fetch(`${functionsUrl}/${name}${opts.query ?? ""}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    redirect: "manual",
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** One application's counters in the sandbox's stats (`apps`, keyed by client id). */
interface SandboxAppStats {
  site_id: string;
  token_calls: number;
  authorizations: number;
  refreshes: number;
  users_me_calls: number;
  cross_app_calls: number;
}

/** The sandbox's counters (`GET /__sandbox/stats`): totals, and per application. */
export interface SandboxStats {
  token_calls: number;
  refresh_token_reuse: number;
  refreshes: number;
  authorizations: number;
  users_me_calls: number;
  /** Codes or refresh tokens presented with another application's credentials: always 0. */
  cross_app_calls: number;
  apps: Record<string, SandboxAppStats>;
}

/** A latch, a fault and a latency as `GET /__sandbox/controls` shows them. */
interface SandboxControlsView {
  fault: { mode: string; count: number } | null;
  latency_ms: number;
  hold: boolean;
  held: number;
}

/**
 * Test controls of the sandbox at `base()` (faults, latency, the latch, stats, grants). Each
 * control takes an optional `clientId` limiting it to that application (the sandbox's other
 * applications go on as before).
 */
function sandboxAt(base: () => string) {
  const controls = {
    async post(path: string, body: unknown = {}): Promise<any> {
      const res = await fetch(`${base()}/__sandbox/${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return await res.json();
    },
    async stats(): Promise<SandboxStats> {
      return await (await fetch(`${base()}/__sandbox/stats`)).json();
    },
    /**
     * Token sets as if `count` sellers had authorized the app (`clientId`'s; default the
     * sandbox's first); new sellers belong to its site, or to `sellerSite`.
     */
    async grants(
      count = 1,
      opts: { clientId?: string; sellerSite?: string; userId?: number; expiresIn?: number } = {},
    ): Promise<MpGrant[]> {
      const answer = await controls.post("grants", {
        count,
        client_id: opts.clientId,
        seller_site: opts.sellerSite,
        user_id: opts.userId,
        expires_in: opts.expiresIn,
      });
      if (!answer.grants) throw new Error(`the sandbox seeded no grants: ${answer.message}`);
      return answer.grants;
    },
    faults: (mode: string, count: number, clientId?: string) =>
      controls.post("faults", { mode, count, client_id: clientId }),
    /**
     * The latch: `hold(true)` holds every token call (of `clientId` only, with it) before it is
     * processed, `hold(false)` releases the ones it held (in arrival order) and lets new ones
     * through.
     */
    hold: (on: boolean, clientId?: string): Promise<{ hold: boolean; held: number }> =>
      controls.post("hold", { hold: on, client_id: clientId }),
    /** How many token calls the latch holds now (every held call, or `clientId`'s latch's). */
    async held(clientId?: string): Promise<number> {
      const query = clientId === undefined ? "" : `?client_id=${encodeURIComponent(clientId)}`;
      return (await (await fetch(`${base()}/__sandbox/hold${query}`)).json()).held;
    },
    /** Waits until the latch holds `n` token calls (a liveness bound only: 60 s). */
    async awaitHeld(n: number, clientId?: string): Promise<void> {
      await eventually(async () => (await controls.held(clientId)) >= n, 60_000);
    },
    latency: (ms: number, clientId?: string) =>
      controls.post("latency", { ms, client_id: clientId }),
    /**
     * No fault queued, no latency, every latch open, counters at zero, no last pair remembered;
     * the sellers and tokens it issued keep working. Every test file starts so (below).
     */
    reset: (): Promise<{ ok: boolean }> => controls.post("reset"),
    /**
     * The controls set now: the fault queued (mode, calls left), the latency, the latch; `apps`
     * (by client id) only when an application has one of its own.
     */
    async controls(): Promise<
      SandboxControlsView & { apps?: Record<string, SandboxControlsView> }
    > {
      return await (await fetch(`${base()}/__sandbox/controls`)).json();
    },
    /**
     * MercadoPago silently kills the seller's access tokens (`access`) or whole grants (`grant`),
     * of every application or of `clientId`'s.
     */
    invalidate: (userId: number, scope: "access" | "grant", clientId?: string) =>
      controls.post("invalidate", { user_id: userId, scope, client_id: clientId }),
    /**
     * The seller removes the application (`clientId`'s, else its own): its tokens stop working;
     * with `notifyUrl`, the signed notification is delivered there (`notified`: its status).
     */
    deauthorize: (
      userId: number,
      opts: { notifyUrl?: string; clientId?: string } = {},
    ): Promise<{ ok: boolean; revoked: number; notified?: number }> =>
      controls.post("deauthorize", {
        user_id: userId,
        notify_url: opts.notifyUrl,
        client_id: opts.clientId,
      }),
    /** The last token pair the sandbox issued (for `userId`), also one whose answer was lost. */
    async lastTokens(userId?: number): Promise<MpGrant | null> {
      const query = userId === undefined ? "" : `?user_id=${userId}`;
      return (await (await fetch(`${base()}/__sandbox/last_tokens${query}`)).json()).tokens;
    },
  };
  return controls;
}

/** Sandbox test controls (faults, latency, stats, grants) of the test stack. */
export const sandbox = sandboxAt(() => stack.sandboxUrl);

/**
 * Every test file that imports this module starts from a reset sandbox: a fault, latency or
 * latch an earlier file left behind (say, after it failed halfway) cannot reach this one.
 * Deno runs a file's `beforeAll` hooks in the order registered, so this one comes first.
 */
Deno.test.beforeAll(async () => {
  const { ok } = await sandbox.reset();
  if (ok !== true) throw new Error("the sandbox did not reset");
});

let ring: Promise<KeyRing> | undefined;

/** The stack's key ring, to write and read ciphertexts as the functions do. */
export function keyRing(): Promise<KeyRing> {
  return ring ??= importKeyRing(parseKeyRing(need("MP_TOKEN_KEYS")));
}

/** Inserts a Backend `clients` row and returns its id. */
export async function newClient(): Promise<string> {
  return await insertClient(backendDb());
}

/** {@link newClient} into the Backend DB `db`. */
async function insertClient(db: Sql): Promise<string> {
  const [row] = await db`insert into clients default values returning id`;
  return row.id;
}

/** What {@link newAccount} inserts. */
type NewAccountOptions = {
  grant?: MpGrant;
  clientId?: string;
  expiresInDays?: number;
  version?: number;
  id?: string;
  /** More columns of the row, as they are (e.g. `{ mp_site_id: "MLB" }`). */
  columns?: Record<string, unknown>;
};

/**
 * Inserts an Admin account, optionally connected with `grant` (encrypted as the functions do)
 * and linked to `clientId`; `expiresInDays` sets when its token expires; `id` picks its id.
 */
export async function newAccount(opts: NewAccountOptions = {}): Promise<string> {
  return await insertAccount(adminDb(), await keyRing(), opts);
}

/** {@link newAccount} into the Admin DB `db`, encrypted under `keys`. */
async function insertAccount(db: Sql, keys: KeyRing, opts: NewAccountOptions): Promise<string> {
  const id = opts.id ?? crypto.randomUUID();
  const g = opts.grant;
  await db`
    insert into nv_accounts ${
    db({
      id,
      backend_client_id: opts.clientId ?? null,
      mp_connected: !!g,
      mp_user_id: g?.user_id ?? null,
      mp_access_token_encrypted: g
        ? await encryptSecret(keys, id, "access_token", g.access_token)
        : null,
      mp_refresh_token: g ? await encryptSecret(keys, id, "refresh_token", g.refresh_token) : null,
      mp_public_key: g?.public_key ?? null,
      mp_expires_in: g?.expires_in ?? null,
      mp_token_expires_at: g
        ? new Date(Date.now() + (opts.expiresInDays ?? 180) * 86_400_000)
        : null,
      mp_live_mode: g?.live_mode ?? null,
      mp_scope: g?.scope ?? null,
      mp_token_version: opts.version ?? (g ? 1 : 0),
      ...opts.columns,
    })
  }`;
  return id;
}

/** Waits until `check` returns a truthy value, polling; throws after `ms`. */
export async function eventually<T>(
  check: () => Promise<T | undefined | null | false | "" | 0>,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The first stack log line containing every one of `needles`, waiting for it to appear. */
export function logLine(...needles: string[]): Promise<string> {
  return eventually(async () =>
    (await stackLog()).split("\n").find((l) => needles.every((n) => l.includes(n)))
  );
}

/** Reads the stack's log (function log lines) written so far. */
export async function stackLog(): Promise<string> {
  return await Deno.readTextFile(need("STACK_LOG"));
}

/** A MercadoPago seller id no other test uses. */
export function newSeller(): number {
  return 700_000_000 + (crypto.getRandomValues(new Uint32Array(1))[0] % 200_000_000);
}

/**
 * A connected account of `seller` (a sandbox grant), linked to a new client and provisioned
 * through provision-step-7-1, so its cache is filled.
 */
export async function provisionedPair(seller = newSeller()) {
  const { grants: [grant] } = await sandbox.post("grants", { count: 1, user_id: seller });
  const clientId = await newClient();
  const accountId = await newAccount({ grant, clientId });
  const res = await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  if (res.body?.synced !== true) throw new Error(`provisioning failed: ${res.status}`);
  return { accountId, clientId, grant: grant as MpGrant, seller };
}

/** The port base of the stack under test: `STACK_PORT_BASE`, else its gateway's port. */
function portBase(): number {
  return Number(Deno.env.get("STACK_PORT_BASE") || need("GATEWAY_PORT"));
}

/**
 * A port the tests own, `offset` (10–99) above the stack's port base, so it moves with
 * `STACK_PORT_BASE` as the stack's own six ports (base … base + 5) do. Two suites side by side
 * need bases at least 100 apart. Offsets in use: 10–16 deno_serve_test, 20 core_test, 30–39
 * misconfigured_test, 40–41 pkce_off_test, 50–55, 80–85 and 90–95 stack_test (a held port, stacks
 * side by side), 60–61 client_deno_test, 62 receiver_example_test, 67 health_test, 70
 * sites_single_app_test, 71–78 the multi-app stack of {@link launchMultiAppStack} (its six ports
 * at 71–76, its platform webhook URL at 78; one at a time, as test files run one after another)
 * and 77 sandbox_apps_test's notification receiver.
 */
export function testPort(offset: number): number {
  if (!Number.isInteger(offset) || offset < 10 || offset > 99) {
    throw new Error(`test port offset ${offset} is outside 10–99`);
  }
  return portBase() + offset;
}

/**
 * The functions' environment as the stack gives its isolates: what Supabase injects, with
 * both databases on the TLS poolers, plus the project's secrets and `extra`.
 */
export function functionEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    SUPABASE_URL: need("SUPABASE_URL"),
    SUPABASE_DB_URL: need("BACKEND_POOLER_URL"),
    ADMIN_DB_URL: need("ADMIN_POOLER_URL"),
    SUPABASE_SERVICE_ROLE_KEY: need("SERVICE_ROLE_KEY"),
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: need("SECRET_KEY") }),
    ...Object.fromEntries(
      FUNCTION_SECRETS.flatMap((name) => {
        const value = Deno.env.get(name);
        return value === undefined ? [] : [[name, value]];
      }),
    ),
    ...extra,
  };
}

/**
 * Runs `fn` with the pg_cron job `job` paused, so only the test runs that function meanwhile;
 * the job is active again afterwards only if it was before.
 */
export async function withCronPaused(job: string, fn: () => Promise<void>): Promise<void> {
  const was = await backendDb()`update cron.job set active = false
    where jobname = ${job} and active returning jobname`;
  try {
    await fn();
  } finally {
    if (was.length > 0) {
      await backendDb()`update cron.job set active = true where jobname = ${job}`;
    }
  }
}

/**
 * Pauses the scheduled jobs while the calling test file runs (a scheduled refresh would take
 * its accounts, a scheduled reconcile fill caches it expects empty, a probe verify its tokens);
 * those that were active are active again after its last test, and the pools close.
 */
export function pauseJobsDuringFile(
  jobs = ["mp-refresh", "mp-reconcile", "mp-probe", "mp-deliver-events"],
  afterAll?: () => Promise<unknown>,
): void {
  let paused: string[] = [];
  Deno.test.beforeAll(async () => {
    const rows = await backendDb()`update cron.job set active = false
      where jobname = any(${pgArray(jobs)}::text[]) and active returning jobname`;
    paused = rows.map((r) => r.jobname);
  });
  Deno.test.afterAll(async () => {
    await afterAll?.();
    await backendDb()`update cron.job set active = true
      where jobname = any(${pgArray(paused)}::text[])`;
    await closeDbs();
  });
}

/** An account's master row, every column. */
export async function accountRow(id: string) {
  const [row] = await adminDb()`select * from nv_accounts where id = ${id}`;
  return row;
}

/** The plain-text token client `clientId`'s cache holds (null when none). */
export async function cachedToken(clientId: string): Promise<string | null> {
  const [row] = await backendDb()`select mp_access_token from clients where id = ${clientId}`;
  return row.mp_access_token;
}

/** One `MP_APPS` entry of a multi-app stack, as the functions read it. */
interface StackApp {
  client_id: string;
  client_secret: string;
  webhook_secrets: string[];
  redirect_uri?: string;
  auth_url?: string;
  pkce?: boolean;
}

/**
 * A second local stack, beside the test stack, whose functions and sandbox run several
 * MercadoPago applications (`MP_APPS`, one per site), with handles bound to it: its
 * `stack.env`, `call`, the sandbox's controls, both databases, seeding. `stop()` (idempotent)
 * closes the handles, checks its log for its secrets and stops it.
 */
export interface MultiAppStack {
  /** Its `stack.env` (FUNCTIONS_URL, SANDBOX_URL, SECRET_KEY, MP_APPS, BACKEND_DB_URL, …). */
  env: Record<string, string>;
  functionsUrl: string;
  sandboxUrl: string;
  secretKey: string;
  /** Its applications, by site, in `MP_APPS`'s order (the first is the default). */
  apps: Record<string, StackApp>;
  /** The client id of `site`'s application (throws for a site the stack does not run). */
  clientId(site: string): string;
  /** `call` against its functions, with its secret key. */
  call(name: string, body?: unknown, opts?: CallOptions): Promise<CallAnswer>;
  /** The controls of its sandbox (as `sandbox`; each takes an optional client id). */
  sandbox: ReturnType<typeof sandboxAt>;
  /** Pools on its Admin and Backend DBs (direct, superuser), closed by `stop()`. */
  adminDb(): Sql;
  backendDb(): Sql;
  /** Its key ring (`MP_TOKEN_KEYS`), to encrypt as its functions do. */
  keyRing(): Promise<KeyRing>;
  /** `newClient` in its Backend DB. */
  newClient(): Promise<string>;
  /** `newAccount` in its Admin DB (pass `columns: { mp_site_id }` for the account's site). */
  newAccount(opts?: NewAccountOptions): Promise<string>;
  /** Its stack log written so far (the functions' log lines). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** The sites MercadoPago runs, in the order {@link launchMultiAppStack} takes them. */
export const ALL_SITES = ["MLA", "MLB", "MLM", "MLC", "MCO", "MLU", "MPE"] as const;

/**
 * Launches a stack of one MercadoPago application per site of `sites` (default MLA and MLB; up to
 * all seven, {@link ALL_SITES}) on the port base `testPort(71)` with the state folder beside the
 * test stack's (`<its folder>-apps`): throwaway apps with the stack's redirect URI, sandbox as
 * authorization URL and PKCE; MLB's has two webhook secrets, the others one. One at a time:
 * stop it before another is launched (see {@link useMultiAppStack}).
 */
async function launchMultiAppStack(
  sites: readonly string[] = ["MLA", "MLB"],
): Promise<MultiAppStack> {
  const base = testPort(71);
  const folder = need("STACK_LOG").replace(/\/[^/]*$/, "");
  const launched = await launchStack({
    stateDir: `${folder}-apps`,
    portBase: base,
    env: {
      STACK_MP_SITES: sites.join(","),
      // Its own receiver port: the test stack's would get this stack's events.
      PLATFORM_WEBHOOK_URL: `http://127.0.0.1:${base + 7}/platform/events`,
    },
  });
  const env = launched.env;
  const apps = JSON.parse(env.MP_APPS) as Record<string, StackApp>;
  let admin: Sql | undefined;
  let backend: Sql | undefined;
  let ring: Promise<KeyRing> | undefined;
  let stopping: Promise<void> | undefined;
  const adminPool = () => admin ??= connect(env.ADMIN_DB_URL, { max: 5, fetchTypes: true });
  const backendPool = () => backend ??= connect(env.BACKEND_DB_URL, { max: 5, fetchTypes: true });
  const keys = () => ring ??= importKeyRing(parseKeyRing(env.MP_TOKEN_KEYS));
  const log = () => Deno.readTextFile(launched.logFile);
  return {
    env,
    functionsUrl: env.FUNCTIONS_URL,
    sandboxUrl: env.SANDBOX_URL,
    secretKey: env.SECRET_KEY,
    apps,
    clientId(site) {
      const app = apps[site];
      if (!app) throw new Error(`the multi-app stack runs no application of site ${site}`);
      return app.client_id;
    },
    call: (name, body, opts) => callAt(env.FUNCTIONS_URL, env.SECRET_KEY, name, body, opts),
    sandbox: sandboxAt(() => env.SANDBOX_URL),
    adminDb: adminPool,
    backendDb: backendPool,
    keyRing: keys,
    newClient: () => insertClient(backendPool()),
    newAccount: async (opts = {}) => await insertAccount(adminPool(), await keys(), opts),
    log,
    stop: () =>
      stopping ??= (async () => {
        await Promise.all([admin?.end({ timeout: 1 }), backend?.end({ timeout: 1 })]);
        // Its secrets are not the test stack's: the harness's scan does not know them.
        const leaks = findLeaks(await log(), await knownSecrets(env));
        await launched.stop();
        if (leaks.length > 0) {
          throw new Error(`${leaks.length} secrets of the multi-app stack appear in its log`);
        }
      })(),
  };
}

/**
 * One multi-app stack for the calling test file: launched before its first test, stopped after
 * its last; the getter answers it (inside tests).
 */
export function useMultiAppStack(sites?: readonly string[]): () => MultiAppStack {
  let launched: MultiAppStack | undefined;
  Deno.test.beforeAll(async () => {
    launched = await launchMultiAppStack(sites);
  });
  Deno.test.afterAll(async () => {
    await launched?.stop();
  });
  return () => {
    if (!launched) throw new Error("the multi-app stack is not running");
    return launched;
  };
}
