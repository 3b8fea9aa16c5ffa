/**
 * The accounts page of a stack running two MercadoPago applications (MLA and MLB in `MP_APPS`,
 * as `deno task dev` configures them), in chromium: each account offers the choice of site for
 * its connect (its own preselected, else the default MLA), one seller connects in Argentina and
 * one in Brazil through the sandbox's authorization, each row shows its site, the choice a person
 * made survives the page refreshing itself, and a seller of another site than the application
 * chosen comes back as a warning saying nothing was stored — all without any application's
 * credentials ever going with another's codes or tokens (the sandbox's `cross_app_calls` stays 0),
 * and at 800 px without sideways scrolling.
 */
import assert from "node:assert/strict";
import type { Locator, Page } from "playwright-core";
import { useMultiAppStack } from "./_stack.ts";
import {
  actionsOf,
  banner,
  newAccountOnPage,
  screenshot,
  sidewaysOverflow,
  withPage,
} from "./_chromium.ts";

const multi = useMultiAppStack(["MLA", "MLB"]);

/** How long the page may take to show what changed: it asks for news every few seconds. */
const SHOWN_WITHIN_MS = 60_000;

/** The site choice's options (as shown) and the one selected (its value). */
async function siteChoice(row: Locator): Promise<{ options: string[]; selected: string }> {
  const select = row.locator('select[name="site"]');
  return {
    options: (await select.locator("option").allInnerTexts()).map((t) => t.trim()),
    selected: await select.inputValue(),
  };
}

/** Connects the row's account through `site`'s application (the sandbox authorizes at once). */
async function connectIn(page: Page, row: Locator, site: string, button = "connect") {
  await row.locator('select[name="site"]').selectOption(site);
  await row.locator(`button.${button}`).click();
  await page.waitForURL(/\/app\?mp=/);
}

/** The account's site, seller, token version and state as the Admin DB holds them. */
async function stored(accountId: string): Promise<
  {
    mp_site_id: string | null;
    mp_user_id: number | null;
    mp_token_version: number;
    mp_state: string;
  }
> {
  const [row] = await multi().adminDb()`
    select mp_site_id, mp_user_id, mp_token_version, mp_state from nv_accounts
     where id = ${accountId}`;
  return {
    mp_site_id: row.mp_site_id,
    mp_user_id: row.mp_user_id === null ? null : Number(row.mp_user_id),
    mp_token_version: Number(row.mp_token_version),
    mp_state: row.mp_state,
  };
}

Deno.test("app page with MLA and MLB at 800 px: one seller connects in Argentina and one in Brazil, each row shows its site, a chosen site survives a refresh, no cross-application call", async () => {
  const m = multi();
  const appUrl = m.env.APP_RETURN_URL;
  const mla = m.clientId("MLA");
  const mlb = m.clientId("MLB");
  const before = await m.sandbox.stats();
  await withPage(async (page) => {
    await page.setViewportSize({ width: 800, height: 1000 });

    // A new account: no site yet; its Connect offers both applications, the default (MLA)
    // preselected.
    const a = await newAccountOnPage(page, appUrl);
    const rowA = page.locator(`#accounts tr[data-account-id="${a}"]`);
    assert.equal(await rowA.locator("td.site").innerText(), "—");
    assert.deepEqual(await siteChoice(rowA), {
      options: ["MLA · Argentina", "MLB · Brazil"],
      selected: "MLA",
    });
    assert.deepEqual(await actionsOf(rowA), ["Connect", "Approve client"]);

    // A site chosen stays chosen while the page refreshes itself: another account appears (the
    // accounts section is swapped in) and A's choice is still Brazil.
    await rowA.locator('select[name="site"]').selectOption("MLB");
    const other = await m.newAccount();
    await page.locator(`#accounts tr[data-account-id="${other}"]`).waitFor({
      timeout: SHOWN_WITHIN_MS,
    });
    assert.equal((await siteChoice(rowA)).selected, "MLB");
    assert.equal(
      (await siteChoice(page.locator(`#accounts tr[data-account-id="${other}"]`))).selected,
      "MLA",
    );

    // A connects in Argentina.
    await connectIn(page, rowA, "MLA");
    assert.equal(new URL(page.url()).searchParams.get("mp"), "connected");
    assert.equal(new URL(page.url()).searchParams.get("account_id"), a);
    const okA = await banner(page);
    assert.ok(okA.classes.includes("ok"), okA.classes.join(" "));
    assert.equal(await rowA.locator(".state").innerText(), "connected");
    assert.equal(await rowA.locator("td.site").innerText(), "MLA · Argentina");

    // B connects in Brazil.
    const b = await newAccountOnPage(page, appUrl);
    const rowB = page.locator(`#accounts tr[data-account-id="${b}"]`);
    await connectIn(page, rowB, "MLB");
    assert.equal(new URL(page.url()).searchParams.get("mp"), "connected");
    assert.equal(new URL(page.url()).searchParams.get("account_id"), b);
    assert.ok((await banner(page)).classes.includes("ok"));
    assert.equal(await rowB.locator(".state").innerText(), "connected");
    assert.equal(await rowB.locator("td.site").innerText(), "MLB · Brazil");
    assert.equal(await rowA.locator("td.site").innerText(), "MLA · Argentina");

    // Connect another seller now preselects each account's own site.
    assert.equal((await siteChoice(rowA)).selected, "MLA");
    assert.equal((await siteChoice(rowB)).selected, "MLB");

    const [storedA, storedB] = [await stored(a), await stored(b)];
    assert.equal(storedA.mp_site_id, "MLA");
    assert.equal(storedB.mp_site_id, "MLB");
    assert.equal(storedA.mp_token_version, 1);
    assert.equal(storedB.mp_token_version, 1);
    assert.notEqual(storedA.mp_user_id, storedB.mp_user_id);
    assert.equal(await rowA.locator(".seller").innerText(), String(storedA.mp_user_id));
    assert.equal(await rowB.locator(".seller").innerText(), String(storedB.mp_user_id));

    // Each seller authorized its own country's application, and no call crossed applications.
    const after = await m.sandbox.stats();
    assert.equal(after.apps[mla].authorizations - (before.apps[mla]?.authorizations ?? 0), 1);
    assert.equal(after.apps[mlb].authorizations - (before.apps[mlb]?.authorizations ?? 0), 1);
    assert.equal(after.apps[mla].site_id, "MLA");
    assert.equal(after.apps[mlb].site_id, "MLB");
    assert.equal(after.cross_app_calls, 0);

    // At 800 px: nothing scrolls sideways, each account a card within the page.
    const overflow = await sidewaysOverflow(page);
    assert.ok(overflow.scrollWidth <= overflow.viewport, JSON.stringify(overflow));
    for (const row of [rowA, rowB]) {
      const box = (await row.boundingBox())!;
      assert.ok(box.x >= 0 && box.x + box.width <= 800, JSON.stringify(box));
    }
    await screenshot(page, "sites-800");
  });
});

Deno.test("app page with MLA and MLB: a Brazilian seller reconnecting through Argentina's application comes back as a warning, nothing stored; through Brazil's it reconnects", async () => {
  const m = multi();
  const appUrl = m.env.APP_RETURN_URL;
  await withPage(async (page) => {
    const id = await newAccountOnPage(page, appUrl);
    const row = page.locator(`#accounts tr[data-account-id="${id}"]`);
    await connectIn(page, row, "MLB");
    assert.equal(await row.locator(".state").innerText(), "connected");
    const seller = (await stored(id)).mp_user_id;
    assert.ok(seller !== null);

    await row.locator("button.revoke").click();
    await page.waitForURL(/\/app\?mp=revoked/);
    assert.equal(await row.locator(".state").innerText(), "revoked");
    assert.deepEqual(await actionsOf(row), [
      "Reconnect",
      "Connect another seller",
      "Approve client",
    ]);
    // Reconnect preselects the account's own site.
    assert.equal((await siteChoice(row)).selected, "MLB");
    const revoked = await stored(id);
    assert.deepEqual(revoked, {
      mp_site_id: "MLB",
      mp_user_id: seller,
      mp_token_version: 2,
      mp_state: "revoked",
    });

    // Reconnect through Argentina's application: the sandbox signs in as the account's own
    // (Brazilian) seller, the callback finds its site is not the application's.
    await connectIn(page, row, "MLA");
    const back = new URL(page.url());
    assert.equal(back.origin + back.pathname, appUrl);
    assert.equal(back.searchParams.get("mp"), "error");
    assert.equal(back.searchParams.get("reason"), "seller_site_mismatch");
    const warned = await banner(page);
    assert.ok(warned.classes.includes("warning"), warned.classes.join(" "));
    assert.ok(!warned.classes.includes("ok") && !warned.classes.includes("error"));
    assert.equal(await page.locator("#result").getAttribute("role"), "alert");
    assert.match(warned.text, /another country's site/);
    assert.match(warned.text, /nothing was stored/);
    // Nothing of the account changed.
    assert.deepEqual(await stored(id), revoked);
    assert.equal(await row.locator(".state").innerText(), "revoked");
    assert.equal(await row.locator("td.site").innerText(), "MLB · Brazil");

    // Through its own country's application (preselected) it reconnects, the same seller.
    assert.equal((await siteChoice(row)).selected, "MLB");
    await row.locator("button.connect").click();
    await page.waitForURL(/\/app\?mp=connected/);
    assert.ok((await banner(page)).classes.includes("ok"));
    assert.equal(await row.locator(".state").innerText(), "connected");
    assert.equal(await row.locator("td.site").innerText(), "MLB · Brazil");
    const reconnected = await stored(id);
    assert.equal(reconnected.mp_site_id, "MLB");
    assert.equal(reconnected.mp_user_id, seller);
    assert.equal(reconnected.mp_token_version, 3);

    // A site without an application here is refused before anything starts.
    const states = async () =>
      (await m.adminDb()`
        select count(*)::int as n from mp_oauth_states where account_id = ${id}`)[0].n;
    const statesBefore = await states();
    assert.ok(statesBefore >= 1, "the page's connects started states");
    const refused = await page.request.post(`${appUrl}/replace`, {
      form: { account_id: id, site: "MLM" },
      maxRedirects: 0,
    });
    assert.equal(refused.status(), 303);
    assert.match(refused.headers()["location"], /mp=error&reason=invalid_request/);
    assert.equal(await states(), statesBefore, "no state started for the refused site");
    assert.deepEqual(await stored(id), reconnected);

    // Wide, the site is a column of its own and nothing scrolls sideways.
    const overflow = await sidewaysOverflow(page);
    assert.ok(overflow.scrollWidth <= overflow.viewport, JSON.stringify(overflow));
    assert.ok(
      (await page.locator("#accounts thead th").allInnerTexts()).map((t) => t.trim()).includes(
        "Site",
      ),
    );
    await screenshot(page, "sites-wide");
  });
  // However the scheduled refreshes and probes went meanwhile, no call crossed applications.
  assert.equal((await m.sandbox.stats()).cross_app_calls, 0);
});
