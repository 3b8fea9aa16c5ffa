/**
 * The accounts page's pure decisions (local/app_page/view.ts): which actions each connection
 * state offers, the site each account shows and the sites a connect offers (the account's own
 * preselected, else the default application's; no choice with one application), what a token's
 * expiry reads as (never an expiry for a cleared token), and the banner's level after an action
 * (success only when the account ends connected; a warning for a seller of another site).
 */
import assert from "node:assert/strict";
import {
  type AccountFacts,
  accountSite,
  actionsFor,
  connectSite,
  outcomeBanner,
  siteChoice,
  stateClass,
  tokenExpiry,
} from "../local/app_page/view.ts";

const ID = "11111111-2222-4333-8444-555555555555";

function account(over: Partial<AccountFacts>): AccountFacts {
  return {
    id: ID,
    mp_state: "connected",
    mp_state_reason: null,
    mp_user_id: 123456,
    backend_client_id: "66666666-7777-4888-8999-000000000000",
    mp_site_id: "MLA",
    has_token: true,
    expires_in_seconds: 179 * 86_400 + 23 * 3_600 + 59 * 60,
    ...over,
  };
}

const labels = (a: AccountFacts, canBreak = true) =>
  actionsFor(a, { canBreak }).map((x) => x.label);

Deno.test("actions: each state offers only what applies to it", () => {
  assert.deepEqual(
    labels(account({
      mp_state: "not_connected",
      mp_user_id: null,
      backend_client_id: null,
      has_token: false,
    })),
    ["Connect", "Approve client"],
  );
  assert.deepEqual(labels(account({})), [
    "Connect another seller",
    "Break at MercadoPago",
    "Revoke",
  ]);
  assert.deepEqual(
    labels(account({ mp_state: "at_risk", mp_state_reason: "refresh_unconfirmed" })),
    ["Reconnect", "Connect another seller", "Revoke"],
  );
  assert.deepEqual(
    labels(
      account({ mp_state: "reauth_required", mp_state_reason: "token_dead", has_token: false }),
    ),
    ["Reconnect", "Connect another seller", "Revoke"],
  );
  assert.deepEqual(
    labels(account({ mp_state: "revoked", mp_state_reason: "admin", has_token: false })),
    ["Reconnect", "Connect another seller"],
  );
});

Deno.test("actions: Approve client only while unlinked; Break only with a sandbox and a token", () => {
  assert.ok(labels(account({ backend_client_id: null })).includes("Approve client"));
  assert.ok(!labels(account({})).includes("Approve client"));
  assert.ok(!labels(account({}), false).includes("Break at MercadoPago"));
  assert.ok(!labels(account({ has_token: false })).includes("Break at MercadoPago"));
});

Deno.test("token expiry: a cleared token shows no expiry, a held one its time left", () => {
  assert.equal(
    tokenExpiry({ has_token: true, expires_in_seconds: 179 * 86_400 + 23 * 3_600 }),
    "expires in 179 d 23 h",
  );
  assert.equal(
    tokenExpiry({ has_token: true, expires_in_seconds: 2 * 3_600 + 5 * 60 }),
    "expires in 2 h 5 min",
  );
  assert.equal(tokenExpiry({ has_token: true, expires_in_seconds: -10 }), "expired");
  // The master keeps mp_token_expires_at when a dead token is cleared: still no expiry.
  assert.equal(tokenExpiry({ has_token: false, expires_in_seconds: 179 * 86_400 }), "no token");
  assert.equal(tokenExpiry({ has_token: false, expires_in_seconds: null }), "no token");
});

Deno.test("banner: Break at MercadoPago leaving reauth_required is a warning naming the state and Reconnect", () => {
  const q = new URLSearchParams({ mp: "broken", account_id: ID, probe: "reauth_required" });
  const b = outcomeBanner(
    q,
    account({ mp_state: "reauth_required", mp_state_reason: "token_dead", has_token: false }),
  );
  assert.equal(b?.level, "warning");
  assert.match(b!.text, /reauth required \(token_dead\)/);
  assert.match(b!.text, /Reconnect/);
  // Even when the probe has not found out yet, a broken grant is never a success.
  assert.equal(outcomeBanner(q, account({}))?.level, "warning");
  const atRisk = outcomeBanner(
    q,
    account({ mp_state: "at_risk", mp_state_reason: "refresh_unconfirmed" }),
  );
  assert.equal(atRisk?.level, "warning");
  assert.match(atRisk!.text, /at risk/);
});

Deno.test("banner: success only when the account ends connected", () => {
  const connected = new URLSearchParams({ mp: "connected", account_id: ID });
  assert.equal(outcomeBanner(connected, account({}))?.level, "ok");
  assert.equal(
    outcomeBanner(connected, account({ mp_state: "at_risk", mp_state_reason: "refresh_failing" }))
      ?.level,
    "warning",
  );
  const approved = new URLSearchParams({
    mp: "approved",
    account_id: ID,
    client_id: "c",
    synced: "true",
  });
  assert.equal(outcomeBanner(approved, account({}))?.level, "ok");
  assert.equal(
    outcomeBanner(
      approved,
      account({ mp_state: "reauth_required", mp_state_reason: "invalid_grant" }),
    )?.level,
    "warning",
  );
  const unsynced = new URLSearchParams({
    mp: "approved",
    account_id: ID,
    client_id: "c",
    synced: "false",
    reason: "mp_not_connected",
  });
  const b = outcomeBanner(
    unsynced,
    account({ mp_state: "not_connected", mp_user_id: null, has_token: false }),
  );
  assert.equal(b?.level, "warning");
  assert.match(b!.text, /not synced/);
  const revoked = new URLSearchParams({ mp: "revoked", account_id: ID });
  assert.equal(
    outcomeBanner(revoked, account({ mp_state: "revoked", has_token: false }))?.level,
    "info",
  );
  assert.equal(
    outcomeBanner(new URLSearchParams({ mp: "error", reason: "access_denied" }), undefined)?.level,
    "error",
  );
  assert.equal(outcomeBanner(new URLSearchParams(), undefined), null);
});

Deno.test("each state has its own colour class", () => {
  const classes = ["connected", "at_risk", "reauth_required", "revoked", "not_connected"].map(
    stateClass,
  );
  assert.equal(new Set(classes).size, 5);
  assert.equal(stateClass("reauth_required"), "state-reauth_required");
});

/** The applications of `deno task dev`: MLA (the default) and MLB. */
const DEV_APPS = { sites: ["MLA", "MLB"], defaultSite: "MLA" };
/** The test profile's single application, at MLA. */
const SINGLE_APP = { sites: ["MLA"], defaultSite: "MLA" };

Deno.test("site shown: the account's own with its country; the default site for an account connected before sites; none before any connect", () => {
  assert.equal(accountSite(account({ mp_site_id: "MLB" }), DEV_APPS), "MLB · Brazil");
  assert.equal(accountSite(account({ mp_site_id: "MLA" }), SINGLE_APP), "MLA · Argentina");
  assert.equal(accountSite(account({ mp_site_id: "MPE" }), DEV_APPS), "MPE · Peru");
  assert.equal(
    accountSite(account({ mp_site_id: null }), DEV_APPS),
    "MLA · Argentina (default site)",
  );
  assert.equal(
    accountSite(account({ mp_site_id: null, mp_user_id: null, mp_state: "not_connected" }), {
      sites: ["MLB"],
      defaultSite: "MLB",
    }),
    "—",
  );
});

Deno.test("site choice: every configured site, the account's own preselected, else the default application's; one application offers no choice", () => {
  assert.deepEqual(siteChoice(account({ mp_site_id: "MLB" }), DEV_APPS), {
    sites: ["MLA", "MLB"],
    selected: "MLB",
    offered: true,
  });
  // Never connected: the default application.
  assert.deepEqual(siteChoice(account({ mp_site_id: null }), DEV_APPS), {
    sites: ["MLA", "MLB"],
    selected: "MLA",
    offered: true,
  });
  // A site with no application here: the default one is preselected.
  assert.equal(siteChoice(account({ mp_site_id: "MLM" }), DEV_APPS).selected, "MLA");
  // The default is the configuration's, not the first listed.
  assert.equal(
    siteChoice(account({ mp_site_id: null }), { sites: ["MLB", "MLM"], defaultSite: "MLM" })
      .selected,
    "MLM",
  );
  // A single-app stack: just its one site, no choice.
  assert.deepEqual(siteChoice(account({ mp_site_id: null }), SINGLE_APP), {
    sites: ["MLA"],
    selected: "MLA",
    offered: false,
  });
});

Deno.test("site posted with a connect: a configured application's is used, none means the preselected one, any other is refused", () => {
  const mlb = account({ mp_site_id: "MLB" });
  assert.equal(connectSite("MLA", mlb, DEV_APPS), "MLA");
  assert.equal(connectSite("MLB", mlb, DEV_APPS), "MLB");
  assert.equal(connectSite(null, mlb, DEV_APPS), "MLB");
  assert.equal(connectSite("", account({ mp_site_id: null }), DEV_APPS), "MLA");
  assert.equal(connectSite("MLM", mlb, DEV_APPS), undefined);
  assert.equal(connectSite("mla", mlb, DEV_APPS), undefined);
  assert.equal(connectSite("MLB", mlb, SINGLE_APP), undefined);
});

Deno.test("banner: a seller of another site than the connect's is a warning saying nothing was stored", () => {
  const b = outcomeBanner(
    new URLSearchParams({ mp: "error", reason: "seller_site_mismatch" }),
    undefined,
  );
  assert.equal(b?.level, "warning");
  assert.match(b!.text, /another country's site/);
  assert.match(b!.text, /nothing was stored/);
  assert.match(b!.text, /connect again/);
  // Other failures stay errors.
  assert.equal(
    outcomeBanner(new URLSearchParams({ mp: "error", reason: "seller_mismatch" }), undefined)
      ?.level,
    "error",
  );
});
