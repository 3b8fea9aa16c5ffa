/**
 * The local page at APP_RETURN_URL in a real browser (Debian's chromium driven by
 * playwright-core): create an account, Connect through the sandbox's authorization, land
 * back on the page showing it connected, Revoke, see it disconnected.
 */
import assert from "node:assert/strict";
import { type BrowserContext, chromium } from "playwright-core";
import { adminDb, closeDbs, stack } from "./_stack.ts";

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
    await closeDbs();
  }
});
