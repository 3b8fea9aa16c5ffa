/**
 * The local page at APP_RETURN_URL in a real browser (Debian's chromium driven by
 * playwright-core): create an account, Connect through the sandbox's authorization, land
 * back on the page showing it connected, Revoke, see it disconnected; and the whole life of a
 * seller as a person sees it (issue 19, item 6): connect, approve a Backend client (both
 * databases side by side at the same version), break it at MercadoPago, reconnect, revoke —
 * and each event arrive at the platform's receiver, verified.
 */
import assert from "node:assert/strict";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { adminDb, backendDb, closeDbs, eventually, stack } from "./_stack.ts";

const CHROMIUM = "/usr/bin/chromium";

/** Launches headless chromium on a fresh profile directory; fails loudly when it cannot. */
async function launch(profileDir: string): Promise<BrowserContext> {
  try {
    return await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  } catch (err) {
    throw new Error(
      `chromium could not be launched from ${CHROMIUM} (apt-get install -y chromium): ${
        (err as Error).message
      }`,
    );
  }
}

Deno.test("app page: new account → Connect → connected → Revoke → disconnected", async () => {
  const profileDir = await Deno.makeTempDir({ prefix: "app-page-chromium-" });
  const context = await launch(profileDir);
  try {
    const page = context.pages()[0] ?? await context.newPage();
    await page.goto(stack.appReturnUrl);
    assert.equal(await page.title(), "MercadoPago accounts (local)");

    await page.click("#new-account");
    await page.waitForURL(/\/app\?created=/);
    const accountId = new URL(page.url()).searchParams.get("created")!;
    assert.match(accountId, /^[0-9a-f-]{36}$/);
    const row = page.locator(`tr[data-account-id="${accountId}"]`);
    assert.equal(await row.locator(".state").textContent(), "not connected");

    await row.locator("button.connect").click();
    await page.waitForURL(/\/app\?mp=connected/);
    const back = new URL(page.url());
    assert.equal(back.origin + back.pathname, stack.appReturnUrl);
    assert.equal(back.searchParams.get("account_id"), accountId);
    assert.match((await page.locator("#result").textContent())!, /is connected to MercadoPago/);
    assert.equal(await row.locator(".state").textContent(), "connected");
    assert.match((await row.locator(".expires").textContent())!, /^1(79|80) d/);
    assert.equal(await row.locator(".reauth").textContent(), "no");
    const [stored] = await adminDb()`
      select mp_connected, mp_token_version from nv_accounts where id = ${accountId}`;
    assert.deepEqual(stored, { mp_connected: true, mp_token_version: 1 });

    await row.locator("button.revoke").click();
    await page.waitForURL(/\/app\?mp=revoked/);
    assert.match((await page.locator("#result").textContent())!, /was disconnected/);
    assert.equal(await row.locator(".state").textContent(), "revoked");
    assert.equal(await row.locator(".reason").textContent(), "admin");
    assert.equal(await row.locator("button.revoke").count(), 0);
    const [revoked] = await adminDb()`
      select mp_connected, mp_token_version from nv_accounts where id = ${accountId}`;
    assert.deepEqual(revoked, { mp_connected: false, mp_token_version: 2 });
  } finally {
    await context.close();
    await Deno.remove(profileDir, { recursive: true }).catch(() => {});
  }
});

/**
 * The test profile points PLATFORM_WEBHOOK_URL at the gateway's port + 7 (local/stack.ts), where
 * the suite runs its own receivers; `deno task dev` points it at the stack's `/platform/events`.
 * This relay forwards each delivery there byte for byte (headers and body), so the stack's
 * receiver — the one the page shows — verifies exactly what mp-deliver-events sent.
 */
function startRelay(): Deno.HttpServer {
  const origin = new URL(stack.appReturnUrl).origin;
  const port = Number(new URL(stack.functionsUrl).port) + 7;
  return Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
    const headers = new Headers(req.headers);
    headers.delete("host");
    const res = await fetch(`${origin}/platform/events`, {
      method: req.method,
      headers,
      body: await req.arrayBuffer(),
    });
    return new Response(await res.arrayBuffer(), { status: res.status, headers: res.headers });
  });
}

/** The page's events of `accountId`, oldest first (once per webhook-id): `type verified`. */
async function eventsShown(page: Page, accountId: string): Promise<string[]> {
  const rows = page.locator(`#events tr.event[data-account-id="${accountId}"]`);
  const out: string[] = [];
  const seen = new Set<string | null>();
  for (let i = 0; i < await rows.count(); i++) {
    // At least once: a repeated delivery (same webhook-id) is one event.
    const id = await rows.nth(i).getAttribute("data-event-id");
    if (seen.has(id)) continue;
    seen.add(id);
    const type = await rows.nth(i).locator(".type").textContent();
    const verified = await rows.nth(i).locator(".verified").textContent();
    out.push(`${type?.replace("mp.connection.", "")} ${verified}`);
  }
  return out.reverse();
}

/** Reloads the page until the account's events end with `type`; returns them all. */
async function waitForEvent(page: Page, accountId: string, type: string): Promise<string[]> {
  let shown: string[] = [];
  await eventually(async () => {
    await page.goto(stack.appReturnUrl);
    shown = await eventsShown(page, accountId);
    return shown.at(-1)?.startsWith(`${type} `) ?? false;
  }, 90_000);
  return shown;
}

Deno.test("app page: connect, approve client, break, reconnect, revoke — both databases side by side, each event received verified", async () => {
  const relay = startRelay();
  const profileDir = await Deno.makeTempDir({ prefix: "app-page-chromium-" });
  const context = await launch(profileDir);
  try {
    const page = context.pages()[0] ?? await context.newPage();
    await page.goto(stack.appReturnUrl);
    await page.click("#new-account");
    await page.waitForURL(/\/app\?created=/);
    const accountId = new URL(page.url()).searchParams.get("created")!;
    const row = page.locator(`#accounts tr[data-account-id="${accountId}"]`);
    assert.equal(await row.locator(".client").textContent(), "—");

    // Connect: the master holds version 1 and a seller; no client yet.
    await row.locator("button.connect").click();
    await page.waitForURL(/\/app\?mp=connected/);
    assert.equal(await row.locator(".state").textContent(), "connected");
    const seller = (await row.locator(".seller").textContent())!;
    assert.match(seller, /^\d+$/);
    assert.equal(await row.locator(".master-version").textContent(), "1");
    assert.equal(await row.locator(".cache-version").textContent(), "—");
    assert.deepEqual(await waitForEvent(page, accountId, "connected"), ["connected yes"]);

    // Approve client: a new Backend client, linked and synced — the cache at the master's version.
    await row.locator("button.approve").click();
    await page.waitForURL(/\/app\?mp=approved/);
    assert.match((await page.locator("#result").textContent())!, /approved: linked .* and synced/);
    const clientId = new URL(page.url()).searchParams.get("client_id")!;
    assert.equal(await row.locator(".client").textContent(), clientId);
    assert.equal(await row.locator(".cache-version").textContent(), "1");
    assert.equal(await row.locator(".cache-token").textContent(), "yes");
    assert.equal(await row.locator("button.approve").count(), 0);
    const [cached] = await backendDb()`select mp_token_version, mp_access_token is not null as held
      from clients where id = ${clientId}`;
    assert.deepEqual({ ...cached, mp_token_version: Number(cached.mp_token_version) }, {
      mp_token_version: 1,
      held: true,
    });
    const [linked] = await adminDb()`select backend_client_id, mp_user_id from nv_accounts
      where id = ${accountId}`;
    assert.equal(linked.backend_client_id, clientId);
    assert.equal(String(linked.mp_user_id), seller);

    // Break at MercadoPago: the grant dies, mp-probe finds out → reauth_required, cache cleared.
    await row.locator("button.break").click();
    await page.waitForURL(/\/app\?mp=broken/);
    assert.equal(await row.locator(".state").textContent(), "reauth required");
    assert.equal(await row.locator(".cache-token").textContent(), "no");
    assert.deepEqual(await waitForEvent(page, accountId, "reauth_required"), [
      "connected yes",
      "reauth_required yes",
    ]);

    // Reconnect as the same seller → recovered; the cache follows at the new version.
    await row.locator("button.connect").click();
    await page.waitForURL(/\/app\?mp=connected/);
    assert.equal(await row.locator(".state").textContent(), "connected");
    assert.equal(await row.locator(".seller").textContent(), seller);
    const version = (await row.locator(".master-version").textContent())!;
    assert.ok(Number(version) > 1, version);
    await eventually(async () => {
      await page.goto(stack.appReturnUrl);
      return (await row.locator(".cache-version").textContent()) === version;
    }, 30_000);
    assert.deepEqual(await waitForEvent(page, accountId, "recovered"), [
      "connected yes",
      "reauth_required yes",
      "recovered yes",
    ]);

    // Revoke → revoked.
    await row.locator("button.revoke").click();
    await page.waitForURL(/\/app\?mp=revoked/);
    assert.equal(await row.locator(".state").textContent(), "revoked");
    assert.deepEqual(await waitForEvent(page, accountId, "revoked"), [
      "connected yes",
      "reauth_required yes",
      "recovered yes",
      "revoked yes",
    ]);
  } finally {
    await context.close();
    await Deno.remove(profileDir, { recursive: true }).catch(() => {});
    await relay.shutdown();
  }
});

/** The test pools close once, after every test of this file (a hook, not a counted test). */
Deno.test.afterAll(closeDbs);
