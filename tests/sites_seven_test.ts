// deno-lint-ignore-file no-explicit-any
/**
 * Every country MercadoPago serves, all seven at once (docs/contract.md, "Applications and
 * sites"), on a stack of seven applications (`useMultiAppStack(ALL_SITES)`): a seller of every
 * site walks the whole life through the stack's functions — connect (mp-oauth-start with `site`,
 * the sandbox's authorization, mp-oauth-callback), get-mp-config answering its `site_id`, a
 * refresh by mp-refresh, a check by mp-probe (and one finding its token dead and replacing it),
 * mp-revoke, then get-mp-config 404 — and after each
 * step every application's MercadoPago calls are exactly its own sellers' (the sandbox's per-app
 * counters) and `cross_app_calls` is 0. Then Mexico's MercadoPago down for every call while
 * mp-refresh runs: every other site's due accounts refreshed, in that run and in the next — also
 * Argentina's called after Mexico's breaker opened — and Mexico's breaker, persisted, keeps the
 * next run from calling Mexico at all (tests/app_breaker_test.ts: the trials after it).
 * (A Brazilian seller on the Argentine application: tests/sites_test.ts.)
 */
import assert from "node:assert/strict";
import {
  ALL_SITES,
  eventually,
  type MultiAppStack,
  type SandboxStats,
  useMultiAppStack,
} from "./_stack.ts";
import { pgArray } from "../shared/platform/db.ts";

const multi = useMultiAppStack(ALL_SITES);

Deno.test.beforeAll(async () => {
  // Only the tests run this stack's functions: no scheduled run takes their accounts.
  await multi().backendDb()`update cron.job set active = false`;
});

/** What one application's MercadoPago was asked, between two readings of the sandbox's stats. */
type Asked = { token_calls: number; authorizations: number; refreshes: number; users_me: number };

/** Every site's {@link Asked} from `before` to `after` (by site, read through its client id). */
function askedOf(m: MultiAppStack, before: SandboxStats, after: SandboxStats) {
  return Object.fromEntries(ALL_SITES.map((site) => {
    const [b, a] = [before.apps[m.clientId(site)], after.apps[m.clientId(site)]];
    return [site, {
      token_calls: a.token_calls - b.token_calls,
      authorizations: a.authorizations - b.authorizations,
      refreshes: a.refreshes - b.refreshes,
      users_me: a.users_me_calls - b.users_me_calls,
    }];
  })) as Record<string, Asked>;
}

/** `asked` for every one of the seven sites alike. */
function everySite(asked: Asked): Record<string, Asked> {
  return Object.fromEntries(ALL_SITES.map((site) => [site, asked]));
}

/**
 * Asserts that since `before` each application was asked exactly `expected` (by site) and no
 * request carried one application's credentials for another's token; answers the stats now.
 */
async function askedExactly(
  m: MultiAppStack,
  before: SandboxStats,
  expected: Record<string, Asked>,
  step: string,
): Promise<SandboxStats> {
  const after = await m.sandbox.stats();
  assert.equal(after.cross_app_calls, 0, `${step}: cross_app_calls`);
  for (const site of ALL_SITES) {
    assert.equal(after.apps[m.clientId(site)].cross_app_calls, 0, `${step}: ${site}'s app`);
  }
  assert.deepEqual(askedOf(m, before, after), expected, `${step}: each app asked for its own`);
  return after;
}

/** The account's master row. */
async function row(m: MultiAppStack, id: string): Promise<any> {
  const [r] = await m.adminDb()`select * from nv_accounts where id = ${id}`;
  return r;
}

Deno.test("seven applications: a seller of every site connects, is refreshed, checked and revoked, each through its own application", async () => {
  const m = multi();
  const sellers: { site: string; accountId: string; clientId: string }[] = [];
  let stats = await m.sandbox.stats();

  // Connect: the authorization URL of the site's application, its code exchange and /users/me.
  for (const site of ALL_SITES) {
    const clientId = await m.newClient();
    const accountId = await m.newAccount({ clientId });
    const started = await m.call("mp-oauth-start", { account_id: accountId, site });
    assert.equal(started.status, 200, `${site}: ${started.status}`);
    const url = new URL(started.body.url);
    assert.equal(url.searchParams.get("client_id"), m.apps[site].client_id, site);
    assert.equal(url.searchParams.get("redirect_uri"), m.apps[site].redirect_uri, site);
    const auth = await fetch(url, { redirect: "manual" });
    await auth.body?.cancel();
    assert.equal(auth.status, 302, site);
    const callback = await fetch(auth.headers.get("location")!, { redirect: "manual" });
    await callback.body?.cancel();
    assert.equal(callback.status, 302, site);
    const back = new URL(callback.headers.get("location")!);
    assert.equal(back.searchParams.get("mp"), "connected", `${site}: ${back.search}`);
    assert.equal(back.searchParams.get("account_id"), accountId);
    const stored = await row(m, accountId);
    assert.equal(stored.mp_site_id, site);
    assert.equal(stored.mp_connected, true);
    sellers.push({ site, accountId, clientId });
  }
  stats = await askedExactly(
    m,
    stats,
    everySite({ token_calls: 1, authorizations: 1, refreshes: 0, users_me: 1 }),
    "connect",
  );

  // get-mp-config answers each seller's token and site; MercadoPago is not asked.
  const firstTokens = new Map<string, string>();
  for (const s of sellers) {
    const config = await m.call("get-mp-config", { client_id: s.clientId });
    assert.equal(config.status, 200, `${s.site}: ${config.status}`);
    assert.equal(config.body.site_id, s.site);
    assert.equal(config.body.token_version, 1, s.site);
    firstTokens.set(s.site, config.body.access_token);
  }
  stats = await askedExactly(
    m,
    stats,
    everySite({ token_calls: 0, authorizations: 0, refreshes: 0, users_me: 0 }),
    "get-mp-config",
  );

  // Refresh: every token due (expiring in 20 days); one scheduled-style run takes all seven.
  const ids = pgArray(sellers.map((s) => s.accountId));
  await m.adminDb()`update nv_accounts set mp_token_expires_at = now() + interval '20 days'
    where id = any(${ids}::uuid[])`;
  const refresh = await m.call("mp-refresh", { limit: 500 });
  assert.equal(refresh.status, 200, `mp-refresh: ${refresh.status}`);
  assert.equal(refresh.body.claimed, 7);
  assert.equal(refresh.body.refreshed, 7);
  for (const s of sellers) {
    const result = refresh.body.results.find((r: any) => r.account_id === s.accountId);
    assert.equal(result?.status, "refreshed", s.site);
    const config = await m.call("get-mp-config", { client_id: s.clientId });
    assert.equal(config.status, 200, s.site);
    assert.equal(config.body.site_id, s.site);
    assert.equal(config.body.token_version, 2, s.site);
    assert.notEqual(config.body.access_token, firstTokens.get(s.site), `${s.site}: a new token`);
  }
  stats = await askedExactly(
    m,
    stats,
    everySite({ token_calls: 1, authorizations: 0, refreshes: 1, users_me: 0 }),
    "mp-refresh",
  );

  // Probe: every token due for verification (never verified); one run checks all seven.
  await m.adminDb()`update nv_accounts set mp_verified_at = null where id = any(${ids}::uuid[])`;
  const probe = await m.call("mp-probe", { limit: 1000 });
  assert.equal(probe.status, 200, `mp-probe: ${probe.status}`);
  assert.equal(probe.body.checked, 7);
  assert.equal(probe.body.alive, 7);
  for (const s of sellers) {
    const result = probe.body.results.find((r: any) => r.account_id === s.accountId);
    assert.equal(result?.state, "connected", s.site);
    assert.ok((await row(m, s.accountId)).mp_verified_at, `${s.site}: verified`);
  }
  stats = await askedExactly(
    m,
    stats,
    everySite({ token_calls: 0, authorizations: 0, refreshes: 0, users_me: 1 }),
    "mp-probe",
  );

  // Probe again, every seller's access token killed by MercadoPago meanwhile (a password
  // change): each dead token is found and replaced through the account's own application.
  const served = new Map<string, string>();
  for (const s of sellers) {
    served.set(
      s.site,
      (await m.call("get-mp-config", { client_id: s.clientId })).body.access_token,
    );
    const { mp_user_id } = await row(m, s.accountId);
    await m.sandbox.invalidate(Number(mp_user_id), "access", m.clientId(s.site));
  }
  await m.adminDb()`update nv_accounts set mp_verified_at = null where id = any(${ids}::uuid[])`;
  const dead = await m.call("mp-probe", { limit: 1000 });
  assert.equal(dead.status, 200, `mp-probe: ${dead.status}`);
  assert.equal(dead.body.checked, 7);
  assert.equal(dead.body.dead, 7);
  for (const s of sellers) {
    const result = dead.body.results.find((r: any) => r.account_id === s.accountId);
    assert.equal(result?.state, "connected", `${s.site}: replaced`);
    const config = await m.call("get-mp-config", { client_id: s.clientId });
    assert.equal(config.status, 200, s.site);
    assert.equal(config.body.site_id, s.site);
    assert.notEqual(config.body.access_token, served.get(s.site), `${s.site}: a new token`);
  }
  stats = await askedExactly(
    m,
    stats,
    everySite({ token_calls: 1, authorizations: 0, refreshes: 1, users_me: 1 }),
    "mp-probe, dead tokens",
  );

  // Revoke: credentials cleared in both databases; get-mp-config has nothing to answer.
  for (const s of sellers) {
    const revoked = await m.call("mp-revoke", { account_id: s.accountId });
    assert.equal(revoked.status, 200, s.site);
    assert.equal(revoked.body.revoked, true);
    const stored = await row(m, s.accountId);
    assert.equal(stored.mp_state, "revoked", s.site);
    assert.equal(stored.mp_connected, false, s.site);
    const config = await m.call("get-mp-config", { client_id: s.clientId });
    assert.equal(config.status, 404, s.site);
    assert.equal(config.body.error.code, "mp_not_connected", s.site);
  }
  await askedExactly(
    m,
    stats,
    everySite({ token_calls: 0, authorizations: 0, refreshes: 0, users_me: 0 }),
    "mp-revoke",
  );
});

/** A due account of `site` (a grant its own application issued), linked and cached. */
async function dueAccount(m: MultiAppStack, site: string) {
  const [grant] = await m.sandbox.grants(1, { clientId: m.clientId(site) });
  const clientId = await m.newClient();
  const id = await m.newAccount({
    grant,
    clientId,
    expiresInDays: 20,
    columns: { mp_site_id: site },
  });
  const linked = await m.call("provision-step-7-1", { account_id: id, client_id: clientId });
  assert.equal(linked.body.synced, true, site);
  return { id, clientId, grant, site };
}

/** Runs mp-refresh until it claims nothing (a clean slate for a test that counts claims). */
async function drain(m: MultiAppStack) {
  for (let i = 0; i < 20; i++) {
    if ((await m.call("mp-refresh", { limit: 500 })).body.claimed === 0) return;
  }
  throw new Error("due accounts never ran out");
}

Deno.test("seven applications, Mexico's MercadoPago down: every other site's due accounts are refreshed by mp-refresh, in that run and the next", async () => {
  const m = multi();
  await drain(m);
  const down = "MLM";
  // Argentina has more due accounts than a run calls its application for at once, and every
  // healthy site's MercadoPago holds its calls until Mexico's three failures have been recorded:
  // the Argentine accounts still waiting for a slot then are called after Mexico's breaker opened.
  const busy = "MLA";
  const healthy = ALL_SITES.filter((s) => s !== down);
  const round = async (perSite: (site: string) => number) => {
    const accounts = [];
    for (const site of ALL_SITES) {
      for (let i = 0; i < perSite(site); i++) accounts.push(await dueAccount(m, site));
    }
    return accounts;
  };
  const first = await round((site) => site === busy ? 20 : 3);
  const mexico = pgArray(first.filter((a) => a.site === down).map((a) => a.id));
  const before = await m.sandbox.stats();
  await m.sandbox.faults("error_500", 1_000, m.clientId(down));
  for (const site of healthy) await m.sandbox.hold(true, m.clientId(site));
  let second: Awaited<ReturnType<typeof round>> = [];
  const statuses = new Map<string, string>();
  try {
    const running = m.call("mp-refresh", { limit: 500 });
    await m.sandbox.awaitHeld(1, m.clientId(busy));
    await eventually(async () => {
      const [r] = await m.adminDb()`select count(*)::int as n from nv_accounts
        where id = any(${mexico}::uuid[]) and mp_refresh_last_error is not null`;
      return r.n === 3;
    }, 60_000);
    for (const site of healthy) await m.sandbox.hold(false, m.clientId(site));
    const run1 = await running;
    assert.equal(run1.status, 200, `mp-refresh: ${run1.status}`);
    for (const r of run1.body.results) statuses.set(r.account_id, r.status);
    // The next run, with new due accounts of every site, Mexico's MercadoPago still down.
    second = await round(() => 1);
    const run2 = await m.call("mp-refresh", { limit: 500 });
    assert.equal(run2.status, 200, `mp-refresh: ${run2.status}`);
    for (const r of run2.body.results) {
      if (!statuses.has(r.account_id) || r.status === "refreshed") {
        statuses.set(r.account_id, r.status);
      }
    }
  } finally {
    for (const site of healthy) await m.sandbox.hold(false, m.clientId(site));
    await m.sandbox.faults("none", 0, m.clientId(down));
  }
  for (const a of [...first, ...second]) {
    const stored = await row(m, a.id);
    const config = await m.call("get-mp-config", { client_id: a.clientId });
    assert.equal(config.status, 200, a.site);
    assert.equal(config.body.site_id, a.site);
    if (a.site === down) {
      assert.notEqual(statuses.get(a.id), "refreshed", `${a.site}: not refreshed`);
      assert.equal(stored.mp_token_version, 1, `${a.site}: its pair unchanged`);
      assert.equal(config.body.access_token, a.grant.access_token, `${a.site}: still served`);
    } else {
      assert.equal(statuses.get(a.id), "refreshed", `${a.site}: ${statuses.get(a.id)}`);
      assert.equal(stored.mp_token_version, 2, a.site);
      assert.notEqual(config.body.access_token, a.grant.access_token, `${a.site}: a new token`);
    }
  }
  const after = await m.sandbox.stats();
  assert.equal(after.cross_app_calls, 0, "cross_app_calls");
  const asked = askedOf(m, before, after);
  for (const site of healthy) {
    const due = site === busy ? 21 : 4;
    assert.equal(asked[site].refreshes, due, `${site}: its ${due} due accounts, by its own app`);
    assert.equal(asked[site].token_calls, due, site);
  }
  assert.equal(asked[down].refreshes, 0, "Mexico's MercadoPago processed nothing");
  // Three unknown outcomes in the first run open Mexico's breaker, persisted for 10 minutes: the
  // next run calls Mexico no more (its new due account spared, unsent).
  assert.equal(asked[down].token_calls, 3, "Mexico: three calls, then its breaker, across runs");
  const spared = second.find((a) => a.site === down)!;
  assert.equal(statuses.get(spared.id), "skipped", "Mexico's next account spared");
  assert.equal((await row(m, spared.id)).mp_refresh_sends, 0, "unsent, not at risk");
  const [breaker] = await m.adminDb()`select opens, open_until > now() as open
    from mp_app_breakers where site_id = ${down}`;
  assert.deepEqual({ ...breaker }, { opens: 1, open: true });
  await m.adminDb()`delete from mp_app_breakers`;
});
