/**
 * The accounts page's HTML: the page itself and the three live sections (accounts, deliveries
 * not yet made, events received) that its script fetches again every few seconds from
 * `/app/live` and swaps in when they changed. Each account shows its site, and its Connect,
 * Reconnect or Connect another seller offers the configured applications' sites to go through.
 * Tables turn into cards below 1100 px wide, so the page never scrolls sideways.
 */
import type { ReceivedEvent } from "../platform_receiver.ts";
import type { AccountView, CacheView, DeliveryTotals, DeliveryView } from "./data.ts";
import {
  accountSite,
  actionsFor,
  type Banner,
  duration,
  type PageAction,
  type PageApps,
  type SiteChoice,
  siteChoice,
  siteLabel,
  STATE_MEANINGS,
  stateClass,
  stateLabel,
  STATES,
  tokenExpiry,
} from "./view.ts";

/** Everything one rendering of the page shows. */
export interface Snapshot {
  accounts: AccountView[];
  caches: Map<string, CacheView>;
  deliveries: DeliveryView[];
  deliveryTotals: DeliveryTotals;
  /** The receiver's events, oldest first. */
  events: readonly ReceivedEvent[];
  /** Whether Break at MercadoPago can be offered (a sandbox is configured). */
  canBreak: boolean;
  /** The stack's MercadoPago applications; without, connects offer no site. */
  apps?: PageApps;
}

/** A live section: its element id, its HTML and a hash of it (the script swaps on change). */
interface LiveSection {
  id: string;
  hash: string;
  html: string;
}

/** How often the page asks for its live sections, in milliseconds. */
const REFRESH_MS = 3_000;

/** How many received events the page lists (the receiver keeps 200). */
const EVENTS_SHOWN = 50;

/** Escapes text for HTML text and attribute values. */
function esc(value: unknown): string {
  return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** FNV-1a of a string, as 8 hex digits: enough to tell a changed section. */
function hash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}

/** An event type that may wrap after each dot: "mp.connection.<wbr>reauth_required". */
function eventType(type: string | undefined): string {
  return type ? esc(type).replaceAll(".", ".<wbr>") : "—";
}

/** A time as "14:03:07 UTC" with the full ISO time in `datetime`. */
function clock(at: Date | string): string {
  const iso = new Date(at).toISOString();
  return `<time datetime="${esc(iso)}" title="${esc(iso)}">${esc(iso.slice(11, 19))} UTC</time>`;
}

/** The site field of a connect: a choice among the applications, or the one site as text. */
function siteField(choice: SiteChoice): string {
  if (!choice.offered) {
    return `<input type="hidden" name="site" value="${
      esc(choice.selected)
    }"><span class="site-choice only">Site <b>${esc(siteLabel(choice.selected))}</b></span>`;
  }
  const options = choice.sites.map((site) =>
    `<option value="${esc(site)}"${site === choice.selected ? " selected" : ""}>${
      esc(siteLabel(site))
    }</option>`
  ).join("");
  return `<label class="site-choice">Site <select name="site">${options}</select></label>`;
}

/**
 * An account's action buttons: Connect, Reconnect and Connect another seller in one form with the
 * site to go through (each button posts to its own route), every other action in a form of its
 * own; in `actionsFor`'s order.
 */
function actionForms(a: AccountView, canBreak: boolean, apps: PageApps | undefined): string {
  const actions = actionsFor(a, { canBreak });
  const hidden = `<input type="hidden" name="account_id" value="${esc(a.id)}">`;
  const button = ({ action, label }: PageAction) =>
    `<button type="submit" class="${action}" formaction="/app/${action}">${esc(label)}</button>`;
  const connects = actions.filter((x) => x.action === "connect" || x.action === "replace");
  const group = connects.length
    ? `<form method="post" action="/app/${connects[0].action}" class="connect-form">${hidden}${
      apps ? siteField(siteChoice(a, apps)) : ""
    }${connects.map(button).join("")}</form>`
    : "";
  return group +
    actions.filter((x) => !connects.includes(x)).map((x) =>
      `<form method="post" action="/app/${x.action}">${hidden}${button(x)}</form>`
    ).join("");
}

function accountRow(
  a: AccountView,
  cache: CacheView | undefined,
  canBreak: boolean,
  apps: PageApps | undefined,
): string {
  const buttons = actionForms(a, canBreak, apps);
  const cls = stateClass(a.mp_state);
  return `<tr class="account ${cls}" data-account-id="${esc(a.id)}" data-state="${esc(a.mp_state)}">
  <td class="id wide" data-label="Account"><code>${esc(a.id)}</code></td>
  <td class="connection" data-label="Connection"><span class="pill state ${cls}">${
    esc(stateLabel(a.mp_state))
  }</span>${a.mp_state_reason ? ` <span class="reason">${esc(a.mp_state_reason)}</span>` : ""}</td>
  <td class="seller" data-label="MP seller">${a.mp_user_id ?? "—"}</td>
  <td class="site" data-label="Site"${a.mp_site_id ? ` data-site="${esc(a.mp_site_id)}"` : ""}>${
    esc(accountSite(a, apps))
  }</td>
  <td class="expires${a.has_token ? "" : " none"}" data-label="Access token">${
    esc(tokenExpiry(a))
  }</td>
  <td class="master-version" data-label="Version">${a.mp_token_version}</td>
  <td class="client cache" data-label="Backend client">${
    a.backend_client_id ? `<code>${esc(a.backend_client_id)}</code>` : "—"
  }</td>
  <td class="cache-version cache" data-label="Cached version">${cache?.mp_token_version ?? "—"}</td>
  <td class="cache-token cache" data-label="Cached token">${
    cache ? (cache.has_token ? "yes" : "no") : "—"
  }</td>
  <td class="actions wide" data-label="Actions">${buttons || "—"}</td>
</tr>`;
}

function accountsSection(s: Snapshot): string {
  const rows = s.accounts.length
    ? s.accounts.map((a) =>
      accountRow(
        a,
        a.backend_client_id ? s.caches.get(a.backend_client_id) : undefined,
        s.canBreak,
        s.apps,
      )
    ).join("\n")
    : '<tr class="empty"><td colspan="10">No accounts yet: click New account.</td></tr>';
  return `<table id="accounts" class="cards">
<thead><tr><th colspan="6">Admin DB (master)</th><th colspan="3" class="cache">Backend DB (cache)</th><th></th></tr>
<tr><th>Account</th><th>Connection</th><th>MP seller</th><th>Site</th><th>Access token</th><th>Version</th>
<th class="cache">Client</th><th class="cache">Version</th><th class="cache">Token</th><th>Actions</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`;
}

function nextAttempt(d: DeliveryView): string {
  if (d.status === "failed") {
    return `gave up${
      d.failed_at ? ` at ${clock(d.failed_at)}` : ""
    }; <code>deno task events --redeliver</code>`;
  }
  if (d.delivering) return "being delivered now";
  if (d.waiting) return "after the account's earlier event";
  if (d.next_in_seconds === null || d.next_in_seconds <= 0) return "due now";
  return `in ${esc(duration(d.next_in_seconds))}`;
}

function deliveryRow(d: DeliveryView): string {
  return `<tr class="delivery status-${esc(d.status)}" data-event-id="${
    esc(d.id)
  }" data-account-id="${esc(d.account_id)}" data-status="${esc(d.status)}">
  <td class="status" data-label="Status"><span class="pill status-${esc(d.status)}">${
    esc(d.status)
  }</span></td>
  <td class="type" data-label="Event">${eventType(d.type)}</td>
  <td class="attempts" data-label="Attempts">${d.attempts}</td>
  <td class="next" data-label="Next attempt">${nextAttempt(d)}</td>
  <td class="account wide" data-label="Account"><code>${esc(d.account_id)}</code></td>
  <td class="error wide" data-label="Last error">${
    d.last_error
      ? `<code class="error-text">${esc(d.last_error)}</code>`
      : d.attempts === 0
      ? "not tried yet"
      : "—"
  }</td>
</tr>`;
}

function deliveriesSection(s: Snapshot): string {
  const { pending, failed } = s.deliveryTotals;
  const shown = [
    ...s.deliveries.filter((d) => d.status === "failed"),
    ...s.deliveries.filter((d) => d.status === "pending"),
  ];
  const more = pending + failed - shown.length;
  return `<h2>Deliveries not made yet <span class="count" id="delivery-totals">${pending} pending, ${failed} failed</span></h2>
<p class="hint">The Admin DB's event outbox: what mp-deliver-events has not delivered to
<code>PLATFORM_WEBHOOK_URL</code> yet, with each attempt's error. Failed events are kept for
<code>deno task events --redeliver</code>.</p>
${
    shown.length
      ? `<table id="deliveries" class="cards">
<thead><tr><th>Status</th><th>Event</th><th>Attempts</th><th>Next attempt</th><th>Account</th><th>Last error</th></tr></thead>
<tbody>
${shown.map(deliveryRow).join("\n")}
</tbody>
</table>${more > 0 ? `<p class="hint">${more} more not listed.</p>` : ""}`
      : '<p class="empty" id="deliveries-empty">Every event has been delivered.</p>'
  }`;
}

function eventsSection(s: Snapshot): string {
  const shown = s.events.slice(-EVENTS_SHOWN).reverse();
  const rows = shown.map((e) =>
    `<tr class="event" data-event-id="${esc(e.id)}" data-account-id="${
      esc(e.account_id)
    }" data-type="${esc(e.type)}">
  <td class="time" data-label="Received">${clock(e.received_at)}</td>
  <td class="type" data-label="Event">${eventType(e.type)}</td>
  <td class="verified ${e.verified ? "yes" : "no"}" data-label="Signature verified">${
      e.verified ? "yes" : "no"
    }</td>
  <td class="account wide" data-label="Account"><code>${esc(e.account_id ?? "—")}</code></td>
  <td class="webhook-id wide" data-label="webhook-id"><code>${esc(e.id)}</code></td>
</tr>`
  ).join("\n");
  return `<h2>Events received by the platform <span class="count">${s.events.length}</span></h2>
<p class="hint">What <code>/platform/events</code> got from mp-deliver-events, newest first, each
signature verified with the <code>standardwebhooks</code> library${
    s.events.length > EVENTS_SHOWN ? ` (the last ${EVENTS_SHOWN} shown)` : ""
  }.</p>
${
    rows
      ? `<table id="events" class="cards">
<thead><tr><th>Received</th><th>Event</th><th>Verified</th><th>Account</th><th>webhook-id</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`
      : '<p class="empty" id="events-empty">No events received yet.</p>'
  }`;
}

/** The live sections of a snapshot, each with its hash. */
export function liveSections(s: Snapshot): LiveSection[] {
  return [
    { id: "live-accounts", html: accountsSection(s) },
    { id: "live-deliveries", html: deliveriesSection(s) },
    { id: "live-events", html: eventsSection(s) },
  ].map((x) => ({ ...x, hash: hash(x.html) }));
}

function legend(): string {
  return `<ul class="legend" id="legend" aria-label="Connection states">${
    STATES.map((state) =>
      `<li data-state="${state}"><span class="pill ${stateClass(state)}">${
        esc(stateLabel(state))
      }</span> ${esc(STATE_MEANINGS[state])}</li>`
    ).join("")
  }</ul>`;
}

function bannerHtml(banner: Banner | null): string {
  if (!banner) return "";
  const role = banner.level === "warning" || banner.level === "error" ? "alert" : "status";
  return `<p class="banner ${banner.level}" id="result" role="${role}">${esc(banner.text)}</p>`;
}

const STYLE = `
  * { box-sizing: border-box; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem 2rem; color: #202124; }
  h1 { margin: 0 0 .3rem; font-size: 1.5rem; }
  h2 { margin: 1.6rem 0 .3rem; font-size: 1.15rem; }
  .count { font-weight: normal; color: #5f6368; font-size: .9rem; }
  .hint, .intro { color: #3c4043; margin: .2rem 0 .6rem; max-width: 60rem; }
  .empty { color: #5f6368; font-style: italic; }
  code { font-size: 12px; overflow-wrap: anywhere; }
  header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1rem; }
  header form { margin-left: auto; }
  .live { font-size: 12px; color: #5f6368; margin: 0; }
  .live.stale { color: #a50e0e; font-weight: 600; }
  button { font: inherit; padding: .25rem .6rem; border: 1px solid #9aa0a6; border-radius: 4px;
    background: #fff; cursor: pointer; }
  button:hover { background: #f1f3f4; }
  button.break, button.revoke { border-color: #d93025; color: #a50e0e; }
  #new-account { background: #1a73e8; border-color: #1a73e8; color: #fff; }
  .banner { padding: .6rem .8rem; border-radius: 4px; border-left: 6px solid; margin: .8rem 0;
    overflow-wrap: anywhere; }
  .banner.ok { background: #e6f4ea; border-color: #1e8e3e; }
  .banner.info { background: #e8f0fe; border-color: #4285f4; }
  .banner.warning { background: #fef3d6; border-color: #f9ab00; }
  .banner.warning::before { content: "⚠ "; }
  .banner.error { background: #fce8e6; border-color: #d93025; }
  .state-connected { --fg: #0d652d; --bg: #e6f4ea; --edge: #1e8e3e; }
  .state-at_risk { --fg: #7a4f00; --bg: #fef3d6; --edge: #f9ab00; }
  .state-reauth_required { --fg: #a50e0e; --bg: #fce8e6; --edge: #d93025; }
  .state-revoked { --fg: #3c4043; --bg: #e8eaed; --edge: #80868b; }
  .state-not_connected { --fg: #174ea6; --bg: #e8f0fe; --edge: #4285f4; }
  .state-unknown { --fg: #202124; --bg: #fff; --edge: #202124; }
  .status-pending { --fg: #7a4f00; --bg: #fef3d6; --edge: #f9ab00; }
  .status-failed { --fg: #a50e0e; --bg: #fce8e6; --edge: #d93025; }
  .pill { display: inline-block; color: var(--fg); background: var(--bg);
    border: 1px solid var(--edge); border-radius: 999px; padding: 0 .55rem; font-weight: 600;
    white-space: nowrap; }
  .reason { color: #5f6368; font-size: 12px; }
  .legend { list-style: none; padding: 0; margin: .6rem 0; display: flex; flex-wrap: wrap;
    gap: .3rem 1.2rem; font-size: 12px; color: #3c4043; }
  .legend li { flex: 1 1 14rem; max-width: 24rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #dadce0; padding: .4rem .5rem; text-align: left;
    vertical-align: top; }
  th { font-size: 12px; color: #5f6368; font-weight: 600; }
  th.cache, td.cache { background: #f4f7fc; }
  td.expires.none { color: #5f6368; }
  td.verified.no { color: #a50e0e; font-weight: 600; }
  td.actions form { display: inline-block; margin: 0 .3rem .3rem 0; }
  td.actions form.connect-form button { margin-right: .3rem; }
  .site-choice { font-size: 12px; color: #3c4043; margin-right: .4rem; white-space: nowrap; }
  select { font: inherit; padding: .2rem .3rem; border: 1px solid #9aa0a6; border-radius: 4px;
    background: #fff; }
  .error-text { color: #a50e0e; }
  td.type { overflow-wrap: anywhere; }
  @media (min-width: 1101px) {
    tr.account > td:first-child { box-shadow: inset 5px 0 0 var(--edge); padding-left: .8rem; }
    td.expires, td.site { white-space: nowrap; }
  }
  @media (max-width: 1100px) {
    body { margin: 1rem; }
    table.cards, table.cards > tbody { display: block; }
    table.cards > thead { position: absolute; width: 1px; height: 1px; overflow: hidden;
      clip-path: inset(50%); }
    table.cards > tbody > tr { display: grid;
      grid-template-columns: repeat(auto-fill, minmax(9rem, 1fr)); gap: .35rem 1rem;
      border: 1px solid #dadce0; border-left: 6px solid var(--edge, #dadce0);
      border-radius: 6px; padding: .55rem .8rem; margin: .6rem 0; }
    table.cards > tbody > tr > td { display: block; border: 0; padding: 0; min-width: 0;
      box-shadow: none; background: none; }
    table.cards > tbody > tr > td[data-label]::before { content: attr(data-label);
      display: block; font-size: 11px; color: #5f6368; text-transform: uppercase;
      letter-spacing: .03em; }
    table.cards td.wide { grid-column: 1 / -1; }
  }
`;

/**
 * The client script: asks `/app/live` every few seconds and swaps the sections that changed,
 * keeping the sites a person chose for accounts' connects (an untouched choice follows the page).
 */
const SCRIPT = `
(() => {
  const live = document.getElementById("live");
  const SITE = "select[name=site]";
  const accountOf = (select) => select.form && select.form.elements.namedItem("account_id").value;
  document.addEventListener("change", (e) => {
    if (e.target.matches && e.target.matches(SITE)) e.target.dataset.chosen = "1";
  });
  function swap(el, html) {
    const chosen = new Map();
    for (const s of el.querySelectorAll(SITE + "[data-chosen]")) chosen.set(accountOf(s), s.value);
    el.innerHTML = html;
    for (const s of el.querySelectorAll(SITE)) {
      const value = chosen.get(accountOf(s));
      if (value !== undefined && Array.from(s.options).some((o) => o.value === value)) {
        s.value = value;
        s.dataset.chosen = "1";
      }
    }
  }
  async function tick() {
    try {
      const res = await fetch("/app/live", { cache: "no-store", headers: { accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const data = await res.json();
      for (const section of data.sections) {
        const el = document.getElementById(section.id);
        if (el && el.dataset.hash !== section.hash) {
          swap(el, section.html);
          el.dataset.hash = section.hash;
        }
      }
      live.textContent = "Live: updated " + new Date(data.at).toLocaleTimeString() + ", every ${
  REFRESH_MS / 1000
} s";
      live.className = "live";
    } catch (err) {
      live.textContent = "Not updating: the stack did not answer (" + err.message + "); trying again";
      live.className = "live stale";
    } finally {
      setTimeout(tick, ${REFRESH_MS});
    }
  }
  setTimeout(tick, ${REFRESH_MS});
})();
`;

/** The whole page: header, banner, legend and the live sections. */
export function pageHtml(s: Snapshot, banner: Banner | null): string {
  const sections = liveSections(s).map((x) =>
    `<section id="${x.id}" data-hash="${x.hash}">\n${x.html}\n</section>`
  );
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MercadoPago accounts (local)</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>MercadoPago accounts</h1>
<p class="live" id="live" role="status">Live: updates every ${REFRESH_MS / 1000} s</p>
<form method="post" action="/app/accounts"><button type="submit" id="new-account">New account</button></form>
</header>
<p class="intro">Local Admin DB accounts, each beside its Backend DB cache. Connect goes through the
MercadoPago sandbox's authorization, through the application of the site beside it, and comes
back here; Approve client creates a Backend client
and provisions it (link and sync); Break at MercadoPago kills the seller's grant and lets
mp-probe find out; Revoke clears the credentials in both databases. Each row offers only the
actions that apply to its state.</p>
${bannerHtml(banner)}
${legend()}
${sections[0]}
<div class="lists">
${sections[1]}
${sections[2]}
</div>
<script>${SCRIPT}</script>
</body>
</html>`;
}
