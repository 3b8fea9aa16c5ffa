/**
 * The small page at APP_RETURN_URL where a person sees the local accounts and connects or
 * revokes them through the sandbox: plain server-rendered HTML with forms. Per account it shows
 * both databases side by side — the Admin DB's master (connection state, seller, token
 * version) and the Backend DB's cache (client, cached version, token held) — and below, the
 * events the platform's receiver (`/platform/events`, local/platform_receiver.ts) got, each
 * verified with the `standardwebhooks` library. Connect and Revoke call mp-oauth-start and
 * mp-revoke server side with the stack's secret key; Approve client creates a Backend `clients`
 * row and calls provision-step-7-1 (link and sync); Break at MercadoPago kills the seller's
 * grant in the sandbox (`/__sandbox/invalidate`, scope `grant`) and has mp-probe verify the
 * account's token now, which finds it dead.
 */
import type { Fetch } from "./gateway.ts";
import type { ReceivedEvent } from "./platform_receiver.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { createLogger } from "../shared/platform/log.ts";

/** What the page needs: where the functions are and the key it calls them with. */
export interface AppPageOptions {
  functionsUrl: string;
  serverKey: string;
  adminDbUrl: string;
  /** The Backend DB (the cache side); without it the cache columns show "—". */
  backendDbUrl?: string;
  /** The MercadoPago sandbox, for Break at MercadoPago. */
  sandboxUrl?: string;
  /** The events the platform's receiver got, oldest first. */
  events?: () => readonly ReceivedEvent[];
}

/** A Backend `clients` row as the page shows it: the cache of an account's credentials. */
interface CacheView {
  id: string;
  mp_token_version: number | null;
  has_token: boolean;
  mp_synced_at: Date | null;
}

interface AccountView {
  id: string;
  backend_client_id: string | null;
  mp_connected: boolean;
  mp_user_id: number | null;
  expires_in_seconds: number | null;
  mp_needs_reauth: boolean;
  mp_token_version: number;
  /** The connection state and its reason (docs/contract.md, "Connection states"). */
  mp_state: string;
  mp_state_reason: string | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** What each `reason` of the callback means to the person who clicked Connect. */
const REASONS: Record<string, string> = {
  access_denied: "the seller declined the authorization at MercadoPago",
  invalid_state: "the authorization link was already used or has expired; click Connect again",
  exchange_failed: "MercadoPago did not accept the authorization code; click Connect again",
  mp_account_in_use: "that MercadoPago account is already connected to another account",
  seller_mismatch:
    "MercadoPago authorized a different seller than this account's; use Connect another seller to replace it",
  account_not_found: "the account does not exist",
  unavailable: "a database could not be reached",
  mp_not_connected: "the account is not connected to MercadoPago, so there is nothing to sync",
  no_seller: "the account has no MercadoPago seller to break",
};

function esc(value: unknown): string {
  return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function expiresIn(seconds: number | null): string {
  if (seconds === null) return "—";
  if (seconds <= 0) return "expired";
  const days = Math.floor(seconds / 86_400);
  const hours = Math.floor((seconds % 86_400) / 3_600);
  return days > 0 ? `${days} d ${hours} h` : `${hours} h ${Math.floor((seconds % 3_600) / 60)} min`;
}

function banner(query: URLSearchParams): string {
  const id = query.get("account_id") ?? query.get("created");
  const account = `<code id="result-account">${esc(id)}</code>`;
  if (query.get("mp") === "connected") {
    return `<p class="banner ok" id="result">Account ${account} is connected to MercadoPago.</p>`;
  }
  if (query.get("mp") === "revoked") {
    return `<p class="banner ok" id="result">Account ${account} was disconnected.</p>`;
  }
  if (query.get("mp") === "approved") {
    const client = `<code id="result-client">${esc(query.get("client_id"))}</code>`;
    return query.get("synced") === "true"
      ? `<p class="banner ok" id="result">Client ${client} approved: linked to account ${account} and synced.</p>`
      : `<p class="banner ok" id="result">Client ${client} approved and linked to account ${account}; not synced (${
        esc(REASONS[query.get("reason") ?? ""] ?? query.get("reason"))
      }).</p>`;
  }
  if (query.get("mp") === "broken") {
    return `<p class="banner ok" id="result">MercadoPago killed the grant of account ${account}; mp-probe found its token <code>${
      esc(query.get("probe"))
    }</code>.</p>`;
  }
  if (query.get("mp") === "error") {
    const reason = query.get("reason") ?? "unknown";
    const text = REASONS[reason] ?? "see the functions' log";
    return `<p class="banner error" id="result">Connection failed (<code>${esc(reason)}</code>): ${
      esc(text)
    }.</p>`;
  }
  if (query.get("created")) {
    return `<p class="banner ok" id="result">Account ${account} created.</p>`;
  }
  return "";
}

function row(a: AccountView, cache: CacheView | undefined): string {
  const form = (action: string, label: string) =>
    `<form method="post" action="/app/${action}"><input type="hidden" name="account_id" value="${
      esc(a.id)
    }"><button type="submit" class="${action}">${label}</button></form>`;
  return `<tr data-account-id="${esc(a.id)}">
  <td><code>${esc(a.id)}</code></td>
  <td class="state">${esc(a.mp_state.replaceAll("_", " "))}</td>
  <td class="reason">${a.mp_state_reason ? esc(a.mp_state_reason) : ""}</td>
  <td class="seller">${a.mp_user_id ?? "—"}</td>
  <td class="expires">${a.mp_connected ? expiresIn(a.expires_in_seconds) : "—"}</td>
  <td class="reauth">${a.mp_needs_reauth ? "needs re-authorization" : "no"}</td>
  <td class="master-version">${a.mp_token_version}</td>
  <td class="client cache">${
    a.backend_client_id ? `<code>${esc(a.backend_client_id)}</code>` : "—"
  }</td>
  <td class="cache-version cache">${cache?.mp_token_version ?? "—"}</td>
  <td class="cache-token cache">${cache ? (cache.has_token ? "yes" : "no") : "—"}</td>
  <td class="actions">${form("connect", a.mp_connected ? "Reconnect" : "Connect")}${
    a.mp_user_id ? form("replace", "Connect another seller") : ""
  }${a.backend_client_id ? "" : form("approve", "Approve client")}${
    a.mp_connected && a.mp_user_id ? form("break", "Break at MercadoPago") : ""
  }${a.mp_connected ? form("revoke", "Revoke") : ""}</td>
</tr>`;
}

function eventRows(events: readonly ReceivedEvent[]): string {
  if (events.length === 0) return '<tr><td colspan="5">No events received yet.</td></tr>';
  return [...events].reverse().map((e) =>
    `<tr class="event" data-event-id="${esc(e.id)}" data-account-id="${esc(e.account_id)}">
  <td class="time">${esc(e.received_at)}</td>
  <td class="type">${esc(e.type ?? "—")}</td>
  <td class="account"><code>${esc(e.account_id ?? "—")}</code></td>
  <td class="verified">${e.verified ? "yes" : "no"}</td>
  <td><code>${esc(e.id)}</code></td>
</tr>`
  ).join("\n");
}

function page(
  accounts: AccountView[],
  caches: Map<string, CacheView>,
  events: readonly ReceivedEvent[],
  query: URLSearchParams,
): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MercadoPago accounts (local)</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 2rem; color: #222; }
  table { border-collapse: collapse; margin-top: 1rem; }
  th, td { border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left; }
  td.actions form { display: inline; margin-right: .3rem; }
  .banner { padding: .6rem .8rem; border-radius: 4px; }
  .ok { background: #e6f4ea; } .error { background: #fce8e6; }
  code { font-size: 12px; }
  th.cache, td.cache { background: #f4f7fc; }
</style>
</head>
<body>
<h1>MercadoPago accounts</h1>
<p>Local Admin DB accounts, each beside its Backend DB cache. Connect goes through the MercadoPago
sandbox's authorization and comes back here; Approve client creates a Backend client and
provisions it (link and sync); Break at MercadoPago kills the seller's grant and lets mp-probe
find out; Revoke clears the credentials in both databases. <a href="/app" id="refresh">Refresh</a></p>
${banner(query)}
<form method="post" action="/app/accounts"><button type="submit" id="new-account">New account</button></form>
<table id="accounts">
<thead><tr><th colspan="7">Admin DB (master)</th><th colspan="3" class="cache">Backend DB (cache)</th><th></th></tr>
<tr><th>Account</th><th>Connection</th><th>Why</th><th>MP seller</th><th>Expires in</th>
<th>Re-authorization</th><th>Version</th><th class="cache">Client</th><th class="cache">Version</th>
<th class="cache">Token</th><th></th></tr></thead>
<tbody>
${
    accounts.length
      ? accounts.map((a) =>
        row(a, a.backend_client_id ? caches.get(a.backend_client_id) : undefined)
      )
        .join("\n")
      : '<tr><td colspan="11">No accounts yet.</td></tr>'
  }
</tbody>
</table>
<h2>Events received by the platform</h2>
<p>What <code>/platform/events</code> got from mp-deliver-events, newest first, each signature
verified with the <code>standardwebhooks</code> library.</p>
<table id="events">
<thead><tr><th>Received</th><th>Type</th><th>Account</th><th>Verified</th><th>webhook-id</th></tr></thead>
<tbody>
${eventRows(events)}
</tbody>
</table>
</body>
</html>`;
}

function html(body: string, status = 200): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
  });
}

function seeOther(location: string): Response {
  return new Response(null, { status: 303, headers: { location } });
}

/** The page's handler, mounted by the gateway under `/app`. */
export function createAppPage(opts: AppPageOptions): Fetch & { close(): Promise<void> } {
  const log = createLogger({ component: "app-page" });
  let sql: Sql | undefined;
  let backendSql: Sql | undefined;
  const db = () => sql ??= connect(opts.adminDbUrl, { max: 2 });
  const backend = () =>
    opts.backendDbUrl ? backendSql ??= connect(opts.backendDbUrl, { max: 2 }) : undefined;

  const callFunction = async (name: string, body: unknown) => {
    const res = await fetch(`${opts.functionsUrl}/${name}`, {
      method: "POST",
      headers: { apikey: opts.serverKey, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json().catch(() => ({})) };
  };

  const accountIdOf = async (req: Request) => {
    const form = await req.formData().catch(() => undefined);
    const id = String(form?.get("account_id") ?? "").toLowerCase();
    return UUID.test(id) ? id : undefined;
  };

  const failure = (reason: string) =>
    seeOther(`/app?mp=error&reason=${encodeURIComponent(reason)}`);

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const route = `${req.method} ${url.pathname.replace(/\/+$/, "") || "/app"}`;
    if (route === "GET /app" || route === "HEAD /app") {
      const accounts = await db()<AccountView[]>`
        select id, backend_client_id, coalesce(mp_connected, false) as mp_connected, mp_user_id,
               extract(epoch from mp_token_expires_at - now())::bigint as expires_in_seconds,
               coalesce(mp_needs_reauth, false) as mp_needs_reauth, mp_token_version,
               mp_state, mp_state_reason
          from nv_accounts order by mp_updated_at desc nulls last, id limit 200`;
      const ids = accounts.map((a) => a.backend_client_id).filter((id): id is string => !!id);
      const caches = new Map<string, CacheView>();
      const cacheDb = backend();
      if (cacheDb && ids.length > 0) {
        for (
          const c of await cacheDb<CacheView[]>`
          select id, mp_token_version, mp_access_token is not null as has_token, mp_synced_at
            from clients where id = any (${pgArray(ids)}::uuid[])`
        ) caches.set(c.id, c);
      }
      return html(page(accounts, caches, opts.events?.() ?? [], url.searchParams));
    }
    if (route === "POST /app/approve") {
      const accountId = await accountIdOf(req);
      const cacheDb = backend();
      if (!accountId) return failure("invalid_request");
      if (!cacheDb) return failure("unavailable");
      const [client] = await cacheDb<{ id: string }[]>`
        insert into clients default values returning id`;
      const res = await callFunction("provision-step-7-1", {
        account_id: accountId,
        client_id: client.id,
      });
      if (res.status !== 200) return failure(res.body?.error?.code ?? "internal");
      const q = new URLSearchParams({
        mp: "approved",
        account_id: accountId,
        client_id: client.id,
        synced: String(res.body.synced === true),
        ...(res.body.reason ? { reason: String(res.body.reason) } : {}),
      });
      return seeOther(`/app?${q}`);
    }
    if (route === "POST /app/break") {
      const accountId = await accountIdOf(req);
      if (!accountId || !opts.sandboxUrl) return failure("invalid_request");
      const [account] = await db()<{ mp_user_id: number | null }[]>`
        select mp_user_id from nv_accounts where id = ${accountId}`;
      if (!account?.mp_user_id) return failure("no_seller");
      const killed = await fetch(`${opts.sandboxUrl}/__sandbox/invalidate`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user_id: Number(account.mp_user_id), scope: "grant" }),
      });
      await killed.body?.cancel();
      if (!killed.ok) return failure("internal");
      const probe = await callFunction("mp-probe", { account_id: accountId });
      if (probe.status !== 200) return failure(probe.body?.error?.code ?? "internal");
      const state = probe.body.results?.[0]?.state ?? "unknown";
      return seeOther(`/app?mp=broken&account_id=${accountId}&probe=${encodeURIComponent(state)}`);
    }
    if (route === "POST /app/accounts") {
      const [created] = await db()<{ id: string }[]>`
        insert into nv_accounts (mp_updated_at) values (now()) returning id`;
      return seeOther(`/app?created=${created.id}`);
    }
    if (route === "POST /app/connect" || route === "POST /app/replace") {
      const accountId = await accountIdOf(req);
      if (!accountId) return failure("invalid_request");
      const res = await callFunction("mp-oauth-start", {
        account_id: accountId,
        ...(route === "POST /app/replace" ? { replace_seller: true } : {}),
      });
      if (res.status !== 200) return failure(res.body?.error?.code ?? "internal");
      // Reconnect: the sandbox's authorization signs in as the account's own seller again
      // (its `user_id` parameter), as the same person logging in at MercadoPago would.
      const to = new URL(res.body.url);
      if (route === "POST /app/connect" && opts.sandboxUrl && to.href.startsWith(opts.sandboxUrl)) {
        const [known] = await db()<{ mp_user_id: number | null }[]>`
          select mp_user_id from nv_accounts where id = ${accountId}`;
        if (known?.mp_user_id) to.searchParams.set("user_id", String(known.mp_user_id));
      }
      return seeOther(to.href);
    }
    if (route === "POST /app/revoke") {
      const accountId = await accountIdOf(req);
      if (!accountId) return failure("invalid_request");
      const res = await callFunction("mp-revoke", { account_id: accountId });
      if (res.status !== 200) return failure(res.body?.error?.code ?? "internal");
      return seeOther(`/app?mp=revoked&account_id=${accountId}`);
    }
    if (
      [
        "/app",
        "/app/accounts",
        "/app/connect",
        "/app/replace",
        "/app/revoke",
        "/app/approve",
        "/app/break",
      ].includes(
        url.pathname,
      )
    ) {
      return html("<p>Method not allowed.</p>", 405);
    }
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
