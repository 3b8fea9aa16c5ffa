/**
 * The accounts page's pure decisions (no HTML, no I/O): what each connection state means and
 * looks like, which actions apply to an account, the site it shows and the sites a connect may
 * go through, what its access token's expiry reads as, and whether the outcome of an action is a
 * success, a plain notice, a warning or an error.
 */

/** The connection states (docs/contract.md, "Connection states"), in the legend's order. */
export const STATES = [
  "connected",
  "at_risk",
  "reauth_required",
  "revoked",
  "not_connected",
] as const;

/** One connection state. */
type ConnectionState = (typeof STATES)[number];

/** What each state means to the operator, as the legend says it. */
export const STATE_MEANINGS: Record<ConnectionState, string> = {
  connected: "the token works and is refreshed before it expires",
  at_risk: "a refresh's outcome is unknown or refreshes keep failing; the token works until its " +
    "deadline",
  reauth_required: "MercadoPago refused the grant or confirmed the token dead; the seller must " +
    "authorize again",
  revoked: "disconnected (mp-revoke or MercadoPago's deauthorization); no token",
  not_connected: "never connected; no token",
};

/** What to do about an account in `state`, as a banner says it. */
const STATE_ADVICE: Record<ConnectionState, string> = {
  connected: "nothing to do",
  at_risk: "its token still works until its deadline; click Reconnect to be sure of it",
  reauth_required:
    "the seller must authorize again: click Reconnect (or Revoke to disconnect it for good)",
  revoked: "click Reconnect to connect it again",
  not_connected: "click Connect to connect it to MercadoPago",
};

/** A state as a person reads it: `reauth_required` → "reauth required". */
export function stateLabel(state: string): string {
  return state.replaceAll("_", " ");
}

/** The CSS class that colours `state` (the legend uses the same one). */
export function stateClass(state: string): string {
  return `state-${(STATES as readonly string[]).includes(state) ? state : "unknown"}`;
}

/** The states in which the account still holds its connection (the "connected-ish" ones). */
function isConnectedIsh(state: string): boolean {
  return state === "connected" || state === "at_risk" || state === "reauth_required";
}

/** The states that need the operator: the token is doubtful or gone while still linked. */
function isBroken(state: string): boolean {
  return state === "at_risk" || state === "reauth_required";
}

/** What the page knows of an account to decide its actions, expiry and banner. */
export interface AccountFacts {
  id: string;
  mp_state: string;
  mp_state_reason: string | null;
  mp_user_id: number | null;
  backend_client_id: string | null;
  /** The site of the application it is connected through (MLA, MLB, …); null before any. */
  mp_site_id: string | null;
  /** Whether the Admin DB holds an access token (it is cleared once confirmed dead). */
  has_token: boolean;
  /** Seconds until the held token expires, by the database's clock; null without one. */
  expires_in_seconds: number | null;
}

/** An action the page offers as a button: its route under /app and its label. */
export interface PageAction {
  action: "connect" | "replace" | "approve" | "break" | "revoke";
  label: string;
}

/**
 * The actions that apply to an account in its state: Connect (never connected) or Reconnect
 * (at risk, reauth required, revoked); Connect another seller once it has a seller; Approve
 * client while no Backend client is linked; Break at MercadoPago only while it is connected
 * with a token (and a sandbox is there to break it); Revoke while it is connected, at risk or
 * reauth required.
 */
export function actionsFor(a: AccountFacts, opts: { canBreak: boolean }): PageAction[] {
  const out: PageAction[] = [];
  if (a.mp_state === "not_connected") out.push({ action: "connect", label: "Connect" });
  if (isBroken(a.mp_state) || a.mp_state === "revoked") {
    out.push({ action: "connect", label: "Reconnect" });
  }
  if (a.mp_user_id !== null) out.push({ action: "replace", label: "Connect another seller" });
  if (!a.backend_client_id) out.push({ action: "approve", label: "Approve client" });
  if (opts.canBreak && a.mp_state === "connected" && a.mp_user_id !== null && a.has_token) {
    out.push({ action: "break", label: "Break at MercadoPago" });
  }
  if (isConnectedIsh(a.mp_state)) out.push({ action: "revoke", label: "Revoke" });
  return out;
}

/** The country of each MercadoPago site (docs/contract.md, "Applications and sites"). */
const SITE_COUNTRIES: Record<string, string> = {
  MLA: "Argentina",
  MLB: "Brazil",
  MLM: "Mexico",
  MLC: "Chile",
  MCO: "Colombia",
  MLU: "Uruguay",
  MPE: "Peru",
};

/** A site as the page shows it: "MLA · Argentina" (an unknown id as it is). */
export function siteLabel(site: string): string {
  const country = SITE_COUNTRIES[site];
  return country ? `${site} · ${country}` : site;
}

/** The MercadoPago applications the stack's functions run: their sites and the default one. */
export interface PageApps {
  /** The configured sites, in `MP_APPS`'s order (one for a single-app stack). */
  sites: readonly string[];
  /** Where an account without a site is served (`MP_SITE_ID`, else MLA, else the first). */
  defaultSite: string;
}

/**
 * The account's site as its row shows it: its own; for an account connected before sites were
 * stored (no site, but a seller), the default site, said so; "—" for one never connected.
 */
export function accountSite(
  a: Pick<AccountFacts, "mp_site_id" | "mp_user_id">,
  apps: PageApps | undefined,
): string {
  if (a.mp_site_id) return siteLabel(a.mp_site_id);
  if (a.mp_user_id !== null && apps) return `${siteLabel(apps.defaultSite)} (default site)`;
  return "—";
}

/** The sites a connect of an account may go through, and the one preselected. */
export interface SiteChoice {
  sites: string[];
  selected: string;
  /** Whether there is a choice to offer (more than one application); else just the one site. */
  offered: boolean;
}

/**
 * The site choice of an account's Connect, Reconnect or Connect another seller: every configured
 * application's site, preselecting the account's own site when it has an application here, else
 * the default application's.
 */
export function siteChoice(a: Pick<AccountFacts, "mp_site_id">, apps: PageApps): SiteChoice {
  const sites = [...apps.sites];
  const selected = a.mp_site_id && sites.includes(a.mp_site_id)
    ? a.mp_site_id
    : sites.includes(apps.defaultSite)
    ? apps.defaultSite
    : sites[0];
  return { sites, selected, offered: sites.length > 1 };
}

/**
 * The site a posted connect goes through: the posted one when it is a configured application's,
 * the account's preselected one when none was posted; undefined (refused) for any other.
 */
export function connectSite(
  posted: string | null,
  a: Pick<AccountFacts, "mp_site_id">,
  apps: PageApps,
): string | undefined {
  if (posted === null || posted === "") return siteChoice(a, apps).selected;
  return apps.sites.includes(posted) ? posted : undefined;
}

/** A duration in seconds as "179 d 23 h", "5 h 12 min" or "4 min". */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const days = Math.floor(s / 86_400);
  const hours = Math.floor((s % 86_400) / 3_600);
  const minutes = Math.floor((s % 3_600) / 60);
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes} min`;
  return minutes > 0 ? `${minutes} min` : `${s} s`;
}

/**
 * The access token's expiry as the page shows it: "no token" once the token is cleared (a
 * dead token under reauth required, revoked, never connected) — never an expiry then —,
 * "expired", or "expires in 179 d 23 h".
 */
export function tokenExpiry(a: Pick<AccountFacts, "has_token" | "expires_in_seconds">): string {
  if (!a.has_token) return "no token";
  if (a.expires_in_seconds === null) return "—";
  if (a.expires_in_seconds <= 0) return "expired";
  return `expires in ${duration(a.expires_in_seconds)}`;
}

/** How a banner looks: green success, neutral notice, amber warning, red error. */
type BannerLevel = "ok" | "info" | "warning" | "error";

/** The banner after an action: its level and its plain text. */
export interface Banner {
  level: BannerLevel;
  text: string;
}

/** What each `reason` of a failed action or callback means to the person who clicked. */
const REASONS: Record<string, string> = {
  access_denied: "the seller declined the authorization at MercadoPago",
  invalid_state: "the authorization link was already used or has expired; click Connect again",
  exchange_failed: "MercadoPago did not accept the authorization code; click Connect again",
  mp_account_in_use: "that MercadoPago account is already connected to another account",
  seller_mismatch:
    "MercadoPago authorized a different seller than this account's; use Connect another seller to replace it",
  seller_site_mismatch: "the seller who signed in at MercadoPago belongs to another country's " +
    "site than the application the connect went through, so nothing was stored and the account " +
    "is as it was; choose the seller's own country in the account's Site and connect again",
  account_not_found: "the account does not exist",
  unavailable: "a database could not be reached",
  mp_not_connected: "the account is not connected to MercadoPago, so there is nothing to sync",
  no_seller: "the account has no MercadoPago seller to break",
  not_available:
    "that action does not apply to the account in its state now (the page was behind); see its row",
  invalid_request: "the request was not understood",
};

/** The account's state in words for a banner: "reauth required (token_dead)". */
function stateWords(a: AccountFacts): string {
  return `${stateLabel(a.mp_state)}${a.mp_state_reason ? ` (${a.mp_state_reason})` : ""}`;
}

/** A warning naming the state the account is left in and what to do about it. */
function leftBroken(lead: string, a: AccountFacts): Banner {
  const advice = STATE_ADVICE[a.mp_state as ConnectionState] ?? "see its row";
  return { level: "warning", text: `${lead} Account ${a.id} is ${stateWords(a)} — ${advice}.` };
}

/**
 * The banner after an action, from the page's query (`mp=connected|revoked|approved|broken|
 * error`, `created=`) and the account as it is now: a success only when the account ends
 * healthy (connected); a warning naming the state and what to do when the action leaves it at
 * risk or needing re-authorization (always after Break at MercadoPago), or when MercadoPago's
 * seller is of another site than the connect's (nothing stored); a notice for a new or revoked
 * account; an error when the action failed. Null when there is nothing to say.
 */
export function outcomeBanner(
  query: URLSearchParams,
  account: AccountFacts | undefined,
): Banner | null {
  const mp = query.get("mp");
  const id = query.get("account_id") ?? query.get("created") ?? "";
  if (mp === "error") {
    const reason = query.get("reason") ?? "unknown";
    if (reason === "seller_site_mismatch") {
      return { level: "warning", text: `Not connected: ${REASONS[reason]}.` };
    }
    return {
      level: "error",
      text: `Failed (${reason}): ${REASONS[reason] ?? "see the functions' log"}.`,
    };
  }
  const known = ["connected", "revoked", "approved", "broken"];
  if (!(mp && known.includes(mp)) && !query.get("created")) return null;
  if (!account) {
    return { level: "error", text: `Account ${id} is not in the Admin DB (any more).` };
  }
  if (query.get("created")) {
    return {
      level: "info",
      text: `Account ${account.id} created, not connected: ${STATE_ADVICE.not_connected}.`,
    };
  }
  if (mp === "broken") {
    const probe = query.get("probe") ?? "unknown";
    if (isBroken(account.mp_state) || account.mp_state === "revoked") {
      return leftBroken(
        `MercadoPago killed the seller's grant (mp-probe's check: ${probe}).`,
        account,
      );
    }
    return {
      level: "warning",
      text:
        `MercadoPago killed the grant of account ${account.id}, but mp-probe's check answered ` +
        `${probe}: the account shows ${stateWords(account)} until a check finds the token dead; ` +
        "then it needs Reconnect.",
    };
  }
  if (mp === "connected") {
    return account.mp_state === "connected"
      ? { level: "ok", text: `Account ${account.id} is connected to MercadoPago.` }
      : leftBroken(
        "MercadoPago authorized the seller, but the account is not connected now.",
        account,
      );
  }
  if (mp === "revoked") {
    return account.mp_state === "revoked"
      ? {
        level: "info",
        text: `Account ${account.id} was disconnected (revoked): ${STATE_ADVICE.revoked}.`,
      }
      : leftBroken("Revoke did not take.", account);
  }
  if (mp === "approved") {
    const client = query.get("client_id") ?? "";
    if (query.get("synced") === "true") {
      return account.mp_state === "connected"
        ? {
          level: "ok",
          text: `Client ${client} approved: linked to account ${account.id} and synced.`,
        }
        : leftBroken(`Client ${client} approved, linked and synced.`, account);
    }
    const reason = query.get("reason") ?? "";
    return {
      level: "warning",
      text: `Client ${client} approved and linked to account ${account.id}, but not synced (${
        REASONS[reason] ?? (reason || "no reason given")
      }): account ${account.id} is ${stateWords(account)} — ${
        STATE_ADVICE[account.mp_state as ConnectionState] ?? "see its row"
      }.`,
    };
  }
  return null;
}
