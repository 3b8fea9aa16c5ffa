/**
 * The accounts page at APP_RETURN_URL in a real browser (Debian's chromium driven by
 * playwright-core), judged by what a person sees: create an account, Connect through the
 * sandbox's authorization, land back on the page showing it connected, Revoke; the whole life
 * of a seller (connect, approve a Backend client, break it at MercadoPago, reconnect, revoke)
 * with each event arriving at the platform's receiver, verified, without reloading the page;
 * each state coloured as the legend says; after Break a warning, not a success banner, no
 * expiry for the cleared token and no Break offered; each account's site (the test profile's
 * single application, MLA, with no choice to make); the deliveries not made yet with their
 * error; and all of it at 800 px wide without sideways scrolling. A stack of several
 * applications: tests/app_page_sites_test.ts.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { adminDb, backendDb, closeDbs, stack } from "./_stack.ts";
import {
  actionsOf,
  banner,
  newAccountOnPage as newAccountAt,
  screenshot,
  sidewaysOverflow,
  withPage,
} from "./_chromium.ts";

// What the functions passed to page.evaluate use: they run in the browser, where these exist
// (the DOM library is not part of this type check).
declare const document: {
  documentElement: { setAttribute(n: string, v: string): void; getAttribute(n: string): string };
};
declare function getComputedStyle(el: unknown): { backgroundColor: string };

/** How long the page may take to show what changed: it asks for news every few seconds. */
const SHOWN_WITHIN_MS = 60_000;

/** Creates an account through the test stack's page; its id. */
function newAccountOnPage(page: Page): Promise<string> {
  return newAccountAt(page, stack.appReturnUrl);
}

/** Marks the loaded document, so a later check can tell it was not reloaded. */
async function markDocument(page: Page): Promise<void> {
  await page.evaluate(() => document.documentElement.setAttribute("data-test-mark", "1"));
}

async function stillSameDocument(page: Page): Promise<boolean> {
  return await page.evaluate(() => document.documentElement.getAttribute("data-test-mark") === "1");
}

Deno.test("app page: new account → Connect → connected → Revoke → revoked, each with only its actions, its colour and its banner", async () => {
  await withPage(async (page) => {
    await page.goto(stack.appReturnUrl);
    assert.equal(await page.title(), "MercadoPago accounts (local)");

    // The legend names every state, each in a colour of its own.
    const legend = page.locator("#legend li");
    assert.deepEqual((await legend.locator(".pill").allInnerTexts()).map((t) => t.trim()), [
      "connected",
      "at risk",
      "reauth required",
      "revoked",
      "not connected",
    ]);
    const colours = await legend.locator(".pill").evaluateAll((els) =>
      els.map((el) => getComputedStyle(el).backgroundColor)
    );
    assert.equal(new Set(colours).size, 5, colours.join(" "));

    await page.click("#new-account");
    await page.waitForURL(/\/app\?created=/);
    const accountId = new URL(page.url()).searchParams.get("created")!;
    const row = page.locator(`#accounts tr[data-account-id="${accountId}"]`);
    assert.equal(await row.locator(".state").innerText(), "not connected");
    assert.deepEqual(await actionsOf(row), ["Connect", "Approve client"]);
    assert.equal(await row.locator(".expires").innerText(), "no token");
    assert.ok((await banner(page)).classes.includes("info"));
    // The test profile runs a single application (site MLA): no site yet, and no choice to
    // make — Connect names the one site it goes through.
    assert.equal(await row.locator("td.site").innerText(), "—");
    assert.equal(await row.locator("select").count(), 0);
    assert.equal(await row.locator(".site-choice").innerText(), "Site MLA · Argentina");

    await row.locator("button.connect").click();
    await page.waitForURL(/\/app\?mp=connected/);
    const back = new URL(page.url());
    assert.equal(back.origin + back.pathname, stack.appReturnUrl);
    assert.equal(back.searchParams.get("account_id"), accountId);
    const connected = await banner(page);
    assert.match(connected.text, /is connected to MercadoPago/);
    assert.ok(connected.classes.includes("ok"), connected.classes.join(" "));
    assert.equal(await page.locator("#result").getAttribute("role"), "status");
    assert.equal(await row.locator(".state").innerText(), "connected");
    assert.ok(
      await row.locator(".state").evaluate((el) => el.classList.contains("state-connected")),
    );
    // The row's pill is coloured as the legend's "connected".
    const [pillColour, legendColour] = await Promise.all([
      row.locator(".state").evaluate((el) => getComputedStyle(el).backgroundColor),
      page.locator('#legend li[data-state="connected"] .pill').evaluate((el) =>
        getComputedStyle(el).backgroundColor
      ),
    ]);
    assert.equal(pillColour, legendColour);
    assert.match(await row.locator(".expires").innerText(), /^expires in 1(79|80) d/);
    assert.equal(await row.locator("td.site").innerText(), "MLA · Argentina");
    assert.deepEqual(await actionsOf(row), [
      "Connect another seller",
      "Approve client",
      "Break at MercadoPago",
      "Revoke",
    ]);
    const [stored] = await adminDb()`
      select mp_connected, mp_token_version, mp_site_id from nv_accounts where id = ${accountId}`;
    assert.deepEqual(stored, { mp_connected: true, mp_token_version: 1, mp_site_id: "MLA" });
    await screenshot(page, "wide");

    await row.locator("button.revoke").click();
    await page.waitForURL(/\/app\?mp=revoked/);
    const revoked = await banner(page);
    assert.match(revoked.text, /was disconnected/);
    assert.ok(!revoked.classes.includes("ok"), revoked.classes.join(" "));
    assert.equal(await row.locator(".state").innerText(), "revoked");
    assert.ok(await row.locator(".state").evaluate((el) => el.classList.contains("state-revoked")));
    assert.equal(await row.locator(".reason").innerText(), "admin");
    assert.equal(await row.locator(".expires").innerText(), "no token");
    assert.deepEqual(await actionsOf(row), [
      "Reconnect",
      "Connect another seller",
      "Approve client",
    ]);
    // A page left open may still offer what no longer applies: the server refuses it too.
    const stale = await page.request.post(`${stack.appReturnUrl}/break`, {
      form: { account_id: accountId },
      maxRedirects: 0,
    });
    assert.equal(stale.status(), 303);
    assert.match(stale.headers()["location"], /mp=error&reason=not_available/);
    const [after] = await adminDb()`
      select mp_connected, mp_token_version from nv_accounts where id = ${accountId}`;
    assert.deepEqual(after, { mp_connected: false, mp_token_version: 2 });
  });
});

Deno.test("app page: a delivery to an unreachable receiver shows pending with its error, a failed one with its error, without reloading", async () => {
  // The test profile delivers to the gateway's port + 7, where nothing listens in this test:
  // the `connected` event's attempt fails and the outbox keeps it pending with the error.
  await withPage(async (page) => {
    const accountId = await newAccountOnPage(page);
    await page.locator(`#accounts tr[data-account-id="${accountId}"] button.connect`).click();
    await page.waitForURL(/\/app\?mp=connected/);
    await markDocument(page);

    const pending = page.locator(
      `#deliveries tr.delivery[data-account-id="${accountId}"][data-status="pending"]`,
    ).filter({ has: page.locator("code.error-text") });
    await pending.first().waitFor({ timeout: SHOWN_WITHIN_MS });
    const [stored] = await adminDb()`
      select attempts, last_error from mp_event_outbox
       where account_id = ${accountId} and status = 'pending' and last_error is not null
       order by seq limit 1`;
    assert.ok(stored, "the outbox holds the failed attempt");
    const first = pending.first();
    assert.equal(await first.locator(".type").innerText(), "mp.connection.connected");
    assert.equal(await first.locator(".status").innerText(), "pending");
    assert.ok(Number(await first.locator(".attempts").innerText()) >= 1);
    assert.match(await first.locator(".next").innerText(), /^(in \d|due now)/);
    // The stored error text, as the delivery recorded it.
    const shownError = await first.locator("code.error-text").innerText();
    const [now] = await adminDb()`
      select last_error from mp_event_outbox where id = ${await first.getAttribute(
      "data-event-id",
    )}`;
    assert.equal(shownError, now.last_error);

    // A failed event (its three days of retries over), written into the outbox directly:
    // the page shows it, with its error, at its next refresh.
    const error = `app-page test: 127.0.0.1:1 refused the connection (${crypto.randomUUID()})`;
    const [failed] = await adminDb()`
      insert into mp_event_outbox (account_id, seq, type, payload, status, attempts, last_error,
                                   failed_at)
      values (${accountId}, 1000, 'mp.connection.revoked', '{}'::jsonb, 'failed', 12,
              ${error}, now())
      returning id`;
    try {
      const row = page.locator(`#deliveries tr.delivery[data-event-id="${failed.id}"]`);
      await row.waitFor({ timeout: SHOWN_WITHIN_MS });
      assert.equal(await row.locator(".status").innerText(), "failed");
      assert.ok(
        await row.locator(".status .pill").evaluate((el) => el.classList.contains("status-failed")),
      );
      assert.equal(await row.locator("code.error-text").innerText(), error);
      assert.equal(await row.locator(".attempts").innerText(), "12");
      assert.match(await row.locator(".next").innerText(), /gave up .*--redeliver/);
      assert.match(await page.locator("#delivery-totals").innerText(), /[1-9]\d* failed/);
      assert.ok(await stillSameDocument(page), "the page was not reloaded");
      assert.match((await banner(page)).text, /is connected to MercadoPago/);
    } finally {
      await adminDb()`delete from mp_event_outbox where id = ${failed.id}`;
    }
  });
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
    const type = await rows.nth(i).locator(".type").innerText();
    const verified = await rows.nth(i).locator(".verified").innerText();
    out.push(`${type.replace("mp.connection.", "")} ${verified}`);
  }
  return out.reverse();
}

/**
 * Waits — without reloading — until the page shows the account's event of `type`; then the
 * account's events shown, and checks the document is the one loaded before.
 */
async function waitForEvent(page: Page, accountId: string, type: string): Promise<string[]> {
  await page.locator(
    `#events tr.event[data-account-id="${accountId}"][data-type="mp.connection.${type}"]`,
  ).first().waitFor({ timeout: 90_000 });
  assert.ok(await stillSameDocument(page), "the page was not reloaded");
  return await eventsShown(page, accountId);
}

Deno.test("app page at 800 px: connect, approve client, break, reconnect, revoke — the warning after Break, no expiry for the cleared token, no Break offered, each event shown as it arrives, no sideways scroll", async () => {
  const relay = startRelay();
  try {
    await withPage(async (page) => {
      await page.setViewportSize({ width: 800, height: 1000 });
      const accountId = await newAccountOnPage(page);
      const row = page.locator(`#accounts tr[data-account-id="${accountId}"]`);
      assert.equal(await row.locator(".client").innerText(), "—");

      // Connect: the master holds version 1 and a seller; no client yet.
      await row.locator("button.connect").click();
      await page.waitForURL(/\/app\?mp=connected/);
      await markDocument(page);
      assert.equal(await row.locator(".state").innerText(), "connected");
      const seller = await row.locator(".seller").innerText();
      assert.match(seller, /^\d+$/);
      assert.equal(await row.locator(".master-version").innerText(), "1");
      assert.equal(await row.locator(".cache-version").innerText(), "—");
      assert.deepEqual(await waitForEvent(page, accountId, "connected"), ["connected yes"]);

      // Approve client: a new Backend client, linked and synced — the cache at the master's
      // version.
      await row.locator("button.approve").click();
      await page.waitForURL(/\/app\?mp=approved/);
      const approved = await banner(page);
      assert.match(approved.text, /approved: linked .* and synced/);
      assert.ok(approved.classes.includes("ok"), approved.classes.join(" "));
      const clientId = new URL(page.url()).searchParams.get("client_id")!;
      assert.equal(await row.locator(".client").innerText(), clientId);
      assert.equal(await row.locator(".cache-version").innerText(), "1");
      assert.equal(await row.locator(".cache-token").innerText(), "yes");
      assert.ok(!(await actionsOf(row)).includes("Approve client"));
      const [cached] = await backendDb()`select mp_token_version,
        mp_access_token is not null as held from clients where id = ${clientId}`;
      assert.deepEqual({ ...cached, mp_token_version: Number(cached.mp_token_version) }, {
        mp_token_version: 1,
        held: true,
      });
      const [linked] = await adminDb()`select backend_client_id, mp_user_id from nv_accounts
        where id = ${accountId}`;
      assert.equal(linked.backend_client_id, clientId);
      assert.equal(String(linked.mp_user_id), seller);

      // Break at MercadoPago: the grant dies, mp-probe finds out → reauth_required, token
      // cleared. The banner is a warning naming the state and what to do, not a success.
      await row.locator("button.break").click();
      await page.waitForURL(/\/app\?mp=broken/);
      await markDocument(page);
      const broken = await banner(page);
      assert.ok(broken.classes.includes("warning"), broken.classes.join(" "));
      assert.ok(!broken.classes.includes("ok"), broken.classes.join(" "));
      assert.equal(await page.locator("#result").getAttribute("role"), "alert");
      assert.match(broken.text, /reauth required/);
      assert.match(broken.text, /Reconnect/);
      assert.equal(await row.locator(".state").innerText(), "reauth required");
      assert.ok(
        await row.locator(".state").evaluate((el) =>
          el.classList.contains("state-reauth_required")
        ),
      );
      const [brokenColour, connectedColour] = await Promise.all([
        row.locator(".state").evaluate((el) => getComputedStyle(el).backgroundColor),
        page.locator('#legend li[data-state="connected"] .pill').evaluate((el) =>
          getComputedStyle(el).backgroundColor
        ),
      ]);
      assert.notEqual(brokenColour, connectedColour);
      assert.equal(await row.locator(".expires").innerText(), "no token");
      assert.doesNotMatch(await row.innerText(), /expires in/i);
      assert.equal(await row.locator("button.break").count(), 0);
      assert.deepEqual(await actionsOf(row), ["Reconnect", "Connect another seller", "Revoke"]);
      assert.equal(await row.locator(".cache-token").innerText(), "no");
      assert.deepEqual(await waitForEvent(page, accountId, "reauth_required"), [
        "connected yes",
        "reauth_required yes",
      ]);
      // The warning stays while the page refreshes itself.
      assert.ok((await banner(page)).classes.includes("warning"));

      // At 800 px: nothing scrolls sideways, and the account reads as one card within the page.
      const overflow = await sidewaysOverflow(page);
      assert.ok(overflow.scrollWidth <= overflow.viewport, JSON.stringify(overflow));
      const box = (await row.boundingBox())!;
      assert.ok(box.x >= 0 && box.x + box.width <= 800, JSON.stringify(box));
      await screenshot(page, "800");

      // Reconnect as the same seller → recovered; the cache follows at the new version, shown
      // as the page refreshes itself.
      await row.locator("button.connect").click();
      await page.waitForURL(/\/app\?mp=connected/);
      await markDocument(page);
      assert.ok((await banner(page)).classes.includes("ok"));
      assert.equal(await row.locator(".state").innerText(), "connected");
      assert.equal(await row.locator(".seller").innerText(), seller);
      const version = await row.locator(".master-version").innerText();
      assert.ok(Number(version) > 1, version);
      await row.locator(".cache-version", { hasText: new RegExp(`^${version}$`) }).waitFor({
        timeout: SHOWN_WITHIN_MS,
      });
      assert.deepEqual(await waitForEvent(page, accountId, "recovered"), [
        "connected yes",
        "reauth_required yes",
        "recovered yes",
      ]);

      // Revoke → revoked.
      await row.locator("button.revoke").click();
      await page.waitForURL(/\/app\?mp=revoked/);
      await markDocument(page);
      assert.equal(await row.locator(".state").innerText(), "revoked");
      assert.deepEqual(await waitForEvent(page, accountId, "revoked"), [
        "connected yes",
        "reauth_required yes",
        "recovered yes",
        "revoked yes",
      ]);
      const end = await sidewaysOverflow(page);
      assert.ok(end.scrollWidth <= end.viewport, JSON.stringify(end));
    });
  } finally {
    await relay.shutdown();
  }
});

/** The test pools close once, after every test of this file (a hook, not a counted test). */
Deno.test.afterAll(closeDbs);
