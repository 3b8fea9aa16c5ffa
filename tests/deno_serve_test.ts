// deno-lint-ignore-file no-explicit-any
/**
 * Production parity: every function alone under `deno serve`, with only the environment a
 * Supabase project gives it and both databases reached through the TLS transaction-mode
 * poolers (as Supavisor on port 6543). Provision, connect, checkout (fast path, fallback,
 * read-repair), refresh, reconcile and revoke all work, and 400 concurrent checkout reads
 * all answer 200.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  closeDbs,
  functionEnv,
  newAccount,
  newClient,
  stack,
} from "./_stack.ts";
import { serveFunction } from "./_serve.ts";

const FUNCTIONS = [
  "get-mp-config",
  "provision-step-7-1",
  "mp-oauth-start",
  "mp-oauth-callback",
  "mp-refresh",
  "mp-reconcile",
  "mp-revoke",
] as const;
type Name = (typeof FUNCTIONS)[number];

/** What `deno serve` needs to run, plus the functions' environment on the TLS poolers. */
function serveEnv(): Record<string, string> {
  const env = functionEnv();
  for (const url of [env.SUPABASE_DB_URL, env.ADMIN_DB_URL]) {
    assert.equal(new URL(url).searchParams.get("sslmode"), "require", "the pooler needs TLS");
  }
  return env;
}

interface Served {
  url: Record<Name, string>;
  output(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts each function in a `deno serve` process of its own, on the ports the tests own
 * (`testPort(10 …)`, moving with STACK_PORT_BASE), and waits until each listens.
 */
async function serveAll(): Promise<Served> {
  const env = serveEnv();
  const settled = await Promise.allSettled(
    FUNCTIONS.map((name, i) => serveFunction(name, 10 + i, env)),
  );
  const children = settled.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
  const failed = settled.find((r) => r.status === "rejected");
  if (failed) {
    await Promise.all(children.map((c) => c.stop()));
    throw (failed as PromiseRejectedResult).reason;
  }
  const url = Object.fromEntries(
    FUNCTIONS.map((name, i) => [name, children[i].url]),
  ) as Record<Name, string>;
  let outputs: Promise<string[]> | undefined;
  const stopAll = () => outputs ??= Promise.all(children.map((c) => c.stop()));
  return {
    url,
    output: async () => (await stopAll()).join("\n"),
    stop: async () => {
      await stopAll();
    },
  };
}

async function post(base: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(base, {
    method: "POST",
    headers: { apikey: stack.secretKey, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

Deno.test("deno serve + TLS poolers: provision, connect, checkout, refresh, reconcile, revoke", async () => {
  const served = await serveAll();
  try {
    const { url } = served;
    const clientId = await newClient();
    const accountId = await newAccount();

    // Provisioning before the seller connects: linked, nothing to sync yet.
    const early = await post(url["provision-step-7-1"], {
      account_id: accountId,
      client_id: clientId,
    });
    assert.equal(early.status, 200, JSON.stringify(early.body));
    assert.equal(early.body.synced, false);
    assert.equal(early.body.reason, "mp_not_connected");

    // Connect: start → the sandbox authorizes → the callback (served alone) stores and syncs.
    const started = await post(url["mp-oauth-start"], { account_id: accountId });
    assert.equal(started.status, 200, JSON.stringify(started.body));
    const authorized = await fetch(started.body.url, { redirect: "manual" });
    await authorized.body?.cancel();
    const back = new URL(authorized.headers.get("location")!);
    const callback = await fetch(`${url["mp-oauth-callback"]}/${back.search}`, {
      redirect: "manual",
    });
    await callback.body?.cancel();
    const landed = new URL(callback.headers.get("location")!);
    assert.equal(landed.searchParams.get("mp"), "connected", landed.href);

    // Checkout: the fast path serves the synced cache.
    const fast = await post(url["get-mp-config"], { client_id: clientId });
    assert.equal(fast.status, 200, JSON.stringify(fast.body));
    assert.equal(fast.body.source, "fast_path");
    assert.match(fast.body.access_token, /^APP_USR-/);

    // An emptied cache: the fallback answers from the master and repairs the cache.
    await backendDb()`update clients set mp_access_token = null, mp_token_version = null
      where id = ${clientId}`;
    const fallback = await post(url["get-mp-config"], { client_id: clientId });
    assert.equal(fallback.body.source, "fallback");
    assert.ok(fallback.body.access_token === fast.body.access_token, "the same token");
    const repaired = await post(url["get-mp-config"], { client_id: clientId });
    assert.equal(repaired.body.source, "fast_path", "read-repair refilled the cache");

    // 400 concurrent checkout reads through the pooler: every one 200.
    const statuses = await Promise.all(
      Array.from(
        { length: 400 },
        () => post(url["get-mp-config"], { client_id: clientId }).then((r) => r.status),
      ),
    );
    assert.deepEqual(
      Object.fromEntries(
        [...new Set(statuses)].map((s) => [s, statuses.filter((x) => x === s).length]),
      ),
      { 200: 400 },
    );

    // A forced refresh: new version, synced to the cache.
    const refresh = await post(url["mp-refresh"], { account_id: accountId, force: true });
    assert.equal(refresh.status, 200, JSON.stringify(refresh.body));
    assert.equal(refresh.body.refreshed, 1, JSON.stringify(refresh.body));
    const after = await post(url["get-mp-config"], { client_id: clientId });
    assert.equal(after.body.token_version, fast.body.token_version + 1);
    assert.ok(after.body.access_token !== fast.body.access_token, "a new token");

    // Reconcile repairs a cache that went stale behind everyone's back.
    await backendDb()`update clients set mp_access_token = null, mp_token_version = null
      where id = ${clientId}`;
    const reconciled = await post(url["mp-reconcile"], {});
    assert.equal(reconciled.status, 200, JSON.stringify(reconciled.body));
    assert.ok(reconciled.body.repaired >= 1, JSON.stringify(reconciled.body));
    const [cache] = await backendDb()`select mp_access_token, mp_token_version from clients
      where id = ${clientId}`;
    assert.ok(cache.mp_access_token === after.body.access_token, "the cache holds the new token");

    // Revoke: both databases cleared; checkout answers 404.
    const revoked = await post(url["mp-revoke"], { account_id: accountId });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    const gone = await post(url["get-mp-config"], { client_id: clientId });
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error.code, "mp_not_connected");
    const [master] = await adminDb()`select mp_connected, mp_access_token_encrypted
      from nv_accounts where id = ${accountId}`;
    assert.deepEqual({ ...master }, { mp_connected: false, mp_access_token_encrypted: null });
  } finally {
    await served.stop();
    await closeDbs();
  }
  const output = await served.output();
  assert.ok(!output.includes("prepared statement"), "no prepared statement reached the pooler");
});
