/**
 * What the accounts page's browser tests share: headless chromium (Debian's, driven by
 * playwright-core) on a fresh profile, and what a person reads off the page — a row's action
 * buttons, the banner, whether the page scrolls sideways.
 */
import assert from "node:assert/strict";
import { type BrowserContext, chromium, type Locator, type Page } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";

// What the functions passed to page.evaluate use: they run in the browser, where these exist
// (the DOM library is not part of this type check).
declare const document: {
  scrollingElement: { scrollWidth: number };
};
declare const window: { innerWidth: number };

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

/** Runs `fn` with a page of a fresh chromium profile, closed afterwards. */
export async function withPage(fn: (page: Page) => Promise<void>): Promise<void> {
  const profileDir = await Deno.makeTempDir({ prefix: "app-page-chromium-" });
  const context = await launch(profileDir);
  try {
    await fn(context.pages()[0] ?? await context.newPage());
  } finally {
    await context.close();
    await Deno.remove(profileDir, { recursive: true }).catch(() => {});
  }
}

/** The visible labels of the action buttons of a row. */
export async function actionsOf(row: Locator): Promise<string[]> {
  return (await row.locator("td.actions button").allInnerTexts()).map((t) => t.trim());
}

/** The banner's classes and text. */
export async function banner(page: Page): Promise<{ classes: string[]; text: string }> {
  const el = page.locator("#result");
  return {
    classes: ((await el.getAttribute("class")) ?? "").split(/\s+/),
    text: (await el.innerText()).trim(),
  };
}

/** Creates an account through the page at `appUrl`'s New account button; its id. */
export async function newAccountOnPage(page: Page, appUrl: string): Promise<string> {
  await page.goto(appUrl);
  await page.click("#new-account");
  await page.waitForURL(/\/app\?created=/);
  const accountId = new URL(page.url()).searchParams.get("created")!;
  assert.match(accountId, /^[0-9a-f-]{36}$/);
  return accountId;
}

/** Saves a full-page screenshot to `$APP_PAGE_SCREENSHOTS-<name>.png` when that is set (to look at). */
export async function screenshot(page: Page, name: string): Promise<void> {
  const prefix = Deno.env.get("APP_PAGE_SCREENSHOTS");
  if (prefix) await page.screenshot({ path: `${prefix}-${name}.png`, fullPage: true });
}

/** Whether the page scrolls sideways: its scroll width beyond the viewport's width. */
export async function sidewaysOverflow(
  page: Page,
): Promise<{ scrollWidth: number; viewport: number }> {
  return await page.evaluate(() => ({
    scrollWidth: document.scrollingElement.scrollWidth,
    viewport: window.innerWidth,
  }));
}
