/**
 * The small page at APP_RETURN_URL, the operator's window on the local stack: per account both
 * databases side by side — the Admin DB's master (connection state, seller, token expiry and
 * version) and the Backend DB's cache (client, cached version, token held) — each state
 * coloured (with a legend), only the actions that apply to the account's state, the Admin DB's
 * deliveries not made yet (pending and failed, with their error), and the events the platform's
 * receiver (`/platform/events`, local/platform_receiver.ts) got, each verified with the
 * `standardwebhooks` library. The page refreshes itself from `GET /app/live` (JSON) every few
 * seconds without reloading, so a banner stays. Each account shows its site; Connect, Reconnect
 * and Connect another seller go through the application of the site chosen beside them (the
 * stack's `MP_APPS`, or its single app). Connect and Revoke call mp-oauth-start (with that
 * `site`) and mp-revoke server side with the stack's secret key; Approve client creates a Backend `clients`
 * row and calls provision-step-7-1 (link and sync); Break at MercadoPago kills the seller's
 * grant in the sandbox (`/__sandbox/invalidate`, scope `grant`) and has mp-probe verify the
 * account's token now, which finds it dead. After an action the banner says how it left the
 * account (local/app_page/view.ts): success only when it ends connected.
 */
import type { Fetch } from "./gateway.ts";
import type { ReceivedEvent } from "./platform_receiver.ts";
import { connect, type Sql } from "../shared/platform/db.ts";
import { createLogger } from "../shared/platform/log.ts";
import { readAccount, readAccounts, readCaches, readDeliveries } from "./app_page/data.ts";
import { liveSections, pageHtml, type Snapshot } from "./app_page/render.ts";
import {
  actionsFor,
  connectSite,
  outcomeBanner,
  type PageAction,
  type PageApps,
} from "./app_page/view.ts";

/** What the page needs: where the functions are and the key it calls them with. */
interface AppPageOptions {
  functionsUrl: string;
  serverKey: string;
  adminDbUrl: string;
  /** The Backend DB (the cache side); without it the cache columns show "—". */
  backendDbUrl?: string;
  /** The MercadoPago sandbox, for Break at MercadoPago. */
  sandboxUrl?: string;
  /** The events the platform's receiver got, oldest first. */
  events?: () => readonly ReceivedEvent[];
  /**
   * The MercadoPago applications the functions run (their sites and the default one): a connect
   * offers their sites and passes the one chosen to mp-oauth-start; without, it passes none.
   */
  apps?: PageApps;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function html(body: string, status = 200): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
  });
}

function seeOther(location: string): Response {
  return new Response(null, { status: 303, headers: { location } });
}

/** The routes under /app and the methods they answer. */
const ROUTES = [
  "/app",
  "/app/live",
  "/app/accounts",
  "/app/connect",
  "/app/replace",
  "/app/revoke",
  "/app/approve",
  "/app/break",
];

/** The page's handler, mounted by the gateway under `/app`. */
export function createAppPage(opts: AppPageOptions): Fetch & { close(): Promise<void> } {
  const log = createLogger({ component: "app-page" });
  let sql: Sql | undefined;
  let backendSql: Sql | undefined;
  const db = () => sql ??= connect(opts.adminDbUrl, { max: 2 });
  const backend = () =>
    opts.backendDbUrl ? backendSql ??= connect(opts.backendDbUrl, { max: 2 }) : undefined;
  const canBreak = !!opts.sandboxUrl;

  const snapshot = async (): Promise<Snapshot> => {
    const [accounts, deliveries] = await Promise.all([readAccounts(db()), readDeliveries(db())]);
    const ids = accounts.map((a) => a.backend_client_id).filter((id): id is string => !!id);
    return {
      accounts,
      caches: await readCaches(backend(), ids),
      deliveries: deliveries.rows,
      deliveryTotals: deliveries.totals,
      events: opts.events?.() ?? [],
      canBreak,
      apps: opts.apps,
    };
  };

  const callFunction = async (name: string, body: unknown) => {
    const res = await fetch(`${opts.functionsUrl}/${name}`, {
      method: "POST",
      headers: { apikey: opts.serverKey, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json().catch(() => ({})) };
  };

  /** The posted form's account id (when a UUID) and site field (null when absent). */
  const formOf = async (req: Request) => {
    const form = await req.formData().catch(() => undefined);
    const id = String(form?.get("account_id") ?? "").toLowerCase();
    const site = form?.get("site");
    return {
      accountId: UUID.test(id) ? id : undefined,
      site: typeof site === "string" ? site : null,
    };
  };

  const failure = (reason: string) =>
    seeOther(`/app?mp=error&reason=${encodeURIComponent(reason)}`);

  /**
   * The account of a posted action, when the action applies to it in its state now (a page
   * left open may offer what no longer applies); otherwise the failure to answer.
   */
  const applicable = async (req: Request, action: PageAction["action"]) => {
    const { accountId, site } = await formOf(req);
    if (!accountId) return { failed: failure("invalid_request") };
    const account = await readAccount(db(), accountId);
    if (!account) return { failed: failure("account_not_found") };
    if (!actionsFor(account, { canBreak }).some((a) => a.action === action)) {
      return { failed: failure("not_available") };
    }
    return { account, site };
  };

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const route = `${req.method} ${url.pathname.replace(/\/+$/, "") || "/app"}`;
    if (route === "GET /app" || route === "HEAD /app") {
      const q = url.searchParams;
      const bannerId = q.get("account_id") ?? q.get("created");
      const [s, account] = await Promise.all([
        snapshot(),
        bannerId && UUID.test(bannerId) ? readAccount(db(), bannerId) : undefined,
      ]);
      return html(pageHtml(s, outcomeBanner(q, account)));
    }
    if (route === "GET /app/live") {
      const s = await snapshot();
      return Response.json({
        at: new Date().toISOString(),
        totals: {
          accounts: s.accounts.length,
          pending: s.deliveryTotals.pending,
          failed: s.deliveryTotals.failed,
          received: s.events.length,
        },
        sections: liveSections(s),
      }, { headers: { "cache-control": "no-store" } });
    }
    if (route === "POST /app/approve") {
      const { account, failed } = await applicable(req, "approve");
      if (failed) return failed;
      const cacheDb = backend();
      if (!cacheDb) return failure("unavailable");
      const [client] = await cacheDb<{ id: string }[]>`
        insert into clients default values returning id`;
      const res = await callFunction("provision-step-7-1", {
        account_id: account.id,
        client_id: client.id,
      });
      if (res.status !== 200) return failure(res.body?.error?.code ?? "internal");
      const q = new URLSearchParams({
        mp: "approved",
        account_id: account.id,
        client_id: client.id,
        synced: String(res.body.synced === true),
        ...(res.body.reason ? { reason: String(res.body.reason) } : {}),
      });
      return seeOther(`/app?${q}`);
    }
    if (route === "POST /app/break") {
      const { account, failed } = await applicable(req, "break");
      if (failed) return failed;
      if (!account.mp_user_id) return failure("no_seller");
      const killed = await fetch(`${opts.sandboxUrl}/__sandbox/invalidate`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user_id: Number(account.mp_user_id), scope: "grant" }),
      });
      await killed.body?.cancel();
      if (!killed.ok) return failure("internal");
      const probe = await callFunction("mp-probe", { account_id: account.id });
      if (probe.status !== 200) return failure(probe.body?.error?.code ?? "internal");
      const state = probe.body.results?.[0]?.state ?? "unknown";
      return seeOther(
        `/app?mp=broken&account_id=${account.id}&probe=${encodeURIComponent(state)}`,
      );
    }
    if (route === "POST /app/accounts") {
      const [created] = await db()<{ id: string }[]>`
        insert into nv_accounts (mp_updated_at) values (now()) returning id`;
      return seeOther(`/app?created=${created.id}`);
    }
    if (route === "POST /app/connect" || route === "POST /app/replace") {
      const replace = route === "POST /app/replace";
      const { account, site: posted, failed } = await applicable(
        req,
        replace ? "replace" : "connect",
      );
      if (failed) return failed;
      // The site chosen beside the button (a configured application's), else the account's own.
      const site = opts.apps ? connectSite(posted, account, opts.apps) : undefined;
      if (opts.apps && !site) return failure("invalid_request");
      const res = await callFunction("mp-oauth-start", {
        account_id: account.id,
        ...(site ? { site } : {}),
        ...(replace ? { replace_seller: true } : {}),
      });
      if (res.status !== 200) return failure(res.body?.error?.code ?? "internal");
      // Reconnect: the sandbox's authorization signs in as the account's own seller again
      // (its `user_id` parameter), as the same person logging in at MercadoPago would.
      const to = new URL(res.body.url);
      if (
        !replace && account.mp_user_id && opts.sandboxUrl && to.href.startsWith(opts.sandboxUrl)
      ) {
        to.searchParams.set("user_id", String(account.mp_user_id));
      }
      return seeOther(to.href);
    }
    if (route === "POST /app/revoke") {
      const { account, failed } = await applicable(req, "revoke");
      if (failed) return failed;
      const res = await callFunction("mp-revoke", { account_id: account.id });
      if (res.status !== 200) return failure(res.body?.error?.code ?? "internal");
      return seeOther(`/app?mp=revoked&account_id=${account.id}`);
    }
    if (ROUTES.includes(url.pathname)) return html("<p>Method not allowed.</p>", 405);
    return html("<p>Not found.</p>", 404);
  };

  const guarded = async (req: Request): Promise<Response> => {
    try {
      return await handler(req);
    } catch (err) {
      log.error("App page failed", { error: err });
      return html("<p>The page failed; see the stack's log.</p>", 500);
    }
  };

  return Object.assign(guarded, {
    close: async () => {
      await Promise.all([sql?.end({ timeout: 1 }), backendSql?.end({ timeout: 1 })]);
      sql = undefined;
      backendSql = undefined;
    },
  });
}
