/**
 * The small page at APP_RETURN_URL where a person sees the local accounts and connects or
 * revokes them through the sandbox: plain server-rendered HTML with forms. Connect and
 * Revoke call mp-oauth-start and mp-revoke server side with the stack's secret key.
 */
import type { Fetch } from "./gateway.ts";
import { connect, type Sql } from "../shared/platform/db.ts";
import { createLogger } from "../shared/platform/log.ts";

/** What the page needs: where the functions are and the key it calls them with. */
export interface AppPageOptions {
  functionsUrl: string;
  serverKey: string;
  adminDbUrl: string;
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

function row(a: AccountView): string {
  const form = (action: string, label: string) =>
    `<form method="post" action="/app/${action}"><input type="hidden" name="account_id" value="${
      esc(a.id)
    }"><button type="submit" class="${action}">${label}</button></form>`;
  return `<tr data-account-id="${esc(a.id)}">
  <td><code>${esc(a.id)}</code></td>
  <td>${a.backend_client_id ? `<code>${esc(a.backend_client_id)}</code>` : "—"}</td>
  <td class="state">${esc(a.mp_state.replaceAll("_", " "))}</td>
  <td class="reason">${a.mp_state_reason ? esc(a.mp_state_reason) : ""}</td>
  <td>${a.mp_user_id ?? "—"}</td>
  <td class="expires">${a.mp_connected ? expiresIn(a.expires_in_seconds) : "—"}</td>
  <td class="reauth">${a.mp_needs_reauth ? "needs re-authorization" : "no"}</td>
  <td>${a.mp_token_version}</td>
  <td class="actions">${form("connect", a.mp_connected ? "Reconnect" : "Connect")}${
    a.mp_user_id ? form("replace", "Connect another seller") : ""
  }${a.mp_connected ? form("revoke", "Revoke") : ""}</td>
</tr>`;
}

function page(accounts: AccountView[], query: URLSearchParams): string {
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
</style>
</head>
<body>
<h1>MercadoPago accounts</h1>
<p>Local Admin DB accounts. Connect goes through the MercadoPago sandbox's authorization and
comes back here; Revoke clears the credentials in both databases.</p>
${banner(query)}
<form method="post" action="/app/accounts"><button type="submit" id="new-account">New account</button></form>
<table>
<thead><tr><th>Account</th><th>Client</th><th>Connection</th><th>Why</th><th>MP seller</th><th>Expires in</th>
<th>Re-authorization</th><th>Version</th><th></th></tr></thead>
<tbody>
${accounts.length ? accounts.map(row).join("\n") : '<tr><td colspan="9">No accounts yet.</td></tr>'}
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
  const db = () => sql ??= connect(opts.adminDbUrl, { max: 2 });

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
      return html(page(accounts, url.searchParams));
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
      return seeOther(res.body.url);
    }
    if (route === "POST /app/revoke") {
      const accountId = await accountIdOf(req);
      if (!accountId) return failure("invalid_request");
      const res = await callFunction("mp-revoke", { account_id: accountId });
      if (res.status !== 200) return failure(res.body?.error?.code ?? "internal");
      return seeOther(`/app?mp=revoked&account_id=${accountId}`);
    }
    if (
      ["/app", "/app/accounts", "/app/connect", "/app/replace", "/app/revoke"].includes(
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
      await sql?.end({ timeout: 1 });
      sql = undefined;
    },
  });
}
