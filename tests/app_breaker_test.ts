// deno-lint-ignore-file no-explicit-any
/**
 * Each application's circuit breaker outlives the run (docs/contract.md, "Applications and
 * sites"; Admin migration …_mp_app_breakers.sql), on a stack of two applications, MLA and MLB,
 * through the stack's functions: with Brazil's MercadoPago down across several mp-refresh runs,
 * Brazil's token calls stay at the first run's 3 plus one trial per backoff, the accounts later
 * runs spare stay unsent (not at risk), mp-probe sends no check to Brazil while its breaker is
 * open, mp-health shows until when, Argentina refreshes in every run; two runs at once get one
 * trial between them; once Brazil's MercadoPago answers again the trial closes the breaker and
 * Brazil's accounts refresh in that run.
 */
import assert from "node:assert/strict";
import { type MultiAppStack, type SandboxStats, useMultiAppStack } from "./_stack.ts";
import { pgArray } from "../shared/platform/db.ts";

const multi = useMultiAppStack(["MLA", "MLB"]);

Deno.test.beforeAll(async () => {
  // Only the tests run this stack's functions: no scheduled run takes their accounts.
  await multi().backendDb()`update cron.job set active = false`;
});

/** A due account of `site` (a grant its own application issued, expiring in 20 days), linked. */
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

async function dueAccounts(m: MultiAppStack, site: string, n: number) {
  const accounts = [];
  for (let i = 0; i < n; i++) accounts.push((await dueAccount(m, site)).id);
  return accounts;
}

/** Token and /users/me calls each application got since `before` (none for another's token). */
async function callsSince(m: MultiAppStack, before: SandboxStats) {
  const after = await m.sandbox.stats();
  assert.equal(after.cross_app_calls, 0, "cross_app_calls");
  const of = (site: string) => ({
    token_calls: after.apps[m.clientId(site)].token_calls -
      before.apps[m.clientId(site)].token_calls,
    users_me: after.apps[m.clientId(site)].users_me_calls -
      before.apps[m.clientId(site)].users_me_calls,
  });
  return { MLA: of("MLA"), MLB: of("MLB"), after };
}

/** One mp-refresh run; each account's `status:error`. */
async function refreshRun(m: MultiAppStack, limit = 500) {
  const run = await m.call("mp-refresh", { limit });
  assert.equal(run.status, 200, `mp-refresh: ${run.status}`);
  return new Map<string, string>(
    run.body.results.map((r: any) => [r.account_id, `${r.status}:${r.error ?? ""}`]),
  );
}

/** MLB's persisted breaker: consecutive opens, whether open now, its backoff in minutes. */
async function brazilBreaker(m: MultiAppStack) {
  const [b] = await m.adminDb()`select opens, open_until > now() as open,
      extract(epoch from open_until - opened_at)::int / 60 as backoff_minutes,
      open_until is null as closed
    from mp_app_breakers where site_id = 'MLB'`;
  return b;
}

/** The backoff and the spared accounts' deferral are over (as 10 minutes or more passing). */
async function timePasses(m: MultiAppStack, spared: string[]) {
  await m.adminDb()`update mp_app_breakers set open_until = now() - interval '1 second'
    where open_until is not null`;
  await m.adminDb()`update nv_accounts set mp_refresh_next_attempt_at = null
    where id = any(${pgArray(spared)}::uuid[])`;
}

/** Accounts' states and sends, `state/sends` sorted. */
async function states(m: MultiAppStack, ids: string[]) {
  const rows = await m.adminDb()`select mp_state, mp_refresh_sends, mp_token_version
    from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
  return rows.map((r) => `${r.mp_state}/${r.mp_refresh_sends}/v${r.mp_token_version}`).sort();
}

Deno.test("Brazil's MercadoPago down across runs: 3 calls in the first run, then one trial per backoff; Argentina refreshed every run; the trial closes the breaker once Brazil answers", async () => {
  const m = multi();
  for (let i = 0; i < 20 && (await m.call("mp-refresh", { limit: 500 })).body.claimed > 0; i++);
  await m.adminDb()`delete from mp_app_breakers`;
  await m.sandbox.faults("error_500", 100_000, m.clientId("MLB"));
  try {
    // Run 1: Brazil's three calls fail (unknown outcomes): its breaker opens, persisted for 10
    // minutes; Argentina's accounts are refreshed.
    const brazil1 = await dueAccounts(m, "MLB", 3);
    let argentina = await dueAccounts(m, "MLA", 2);
    let before = await m.sandbox.stats();
    let run = await refreshRun(m);
    for (const id of brazil1) assert.equal(run.get(id), "at_risk:server_error");
    for (const id of argentina) assert.equal(run.get(id), "refreshed:");
    let calls = await callsSince(m, before);
    assert.equal(calls.MLB.token_calls, 3, "run 1: three unknown outcomes open the breaker");
    assert.equal(calls.MLA.token_calls, 2);
    assert.deepEqual(await brazilBreaker(m), {
      opens: 1,
      open: true,
      backoff_minutes: 10,
      closed: false,
    });
    const [row] = await m.adminDb()`select open_until from mp_app_breakers where site_id = 'MLB'`;
    const health = await m.call("mp-health");
    assert.equal(health.body.sites.MLB.breaker_open_until, row.open_until.toISOString());
    assert.equal(health.body.sites.MLA.breaker_open_until, null);

    // Run 2 (Brazil still down, its breaker open): no call to Brazil; its new due accounts are
    // spared unsent, not at risk; Argentina's refreshed.
    const brazil2 = await dueAccounts(m, "MLB", 3);
    argentina = await dueAccounts(m, "MLA", 1);
    before = calls.after;
    run = await refreshRun(m);
    for (const id of brazil2) assert.equal(run.get(id), "skipped:circuit_open");
    assert.equal(run.get(argentina[0]), "refreshed:");
    calls = await callsSince(m, before);
    assert.equal(calls.MLB.token_calls, 0, "run 2: the open breaker calls Brazil no more");
    assert.deepEqual(await states(m, brazil2), Array(3).fill("connected/0/v1"));

    // mp-probe sends no check to Brazil while its breaker is open; Argentina's are checked.
    const argentinaAll = [...argentina];
    await m.adminDb()`update nv_accounts set mp_verified_at = null
      where id = any(${pgArray([...brazil2, ...argentinaAll])}::uuid[])`;
    before = calls.after;
    const probe = await m.call("mp-probe", { limit: 1000 });
    assert.equal(probe.status, 200);
    calls = await callsSince(m, before);
    assert.equal(calls.MLB.users_me, 0, "no probe call to a site known down");
    assert.ok(calls.MLA.users_me >= 1, "Argentina's tokens checked");
    const verified = await m.adminDb()`select mp_verified_at is not null as v from nv_accounts
      where id = ${argentina[0]}`;
    assert.equal(verified[0].v, true);

    // Run 3, the backoff over, Brazil still down: exactly one trial call; it fails, the breaker
    // opens again for 20 minutes; the other spared accounts are not called.
    await timePasses(m, brazil2);
    argentina = await dueAccounts(m, "MLA", 1);
    before = calls.after;
    run = await refreshRun(m);
    calls = await callsSince(m, before);
    assert.equal(calls.MLB.token_calls, 1, "run 3: one trial call");
    assert.deepEqual(
      brazil2.map((id) => run.get(id)).sort(),
      ["at_risk:server_error", "skipped:circuit_open", "skipped:circuit_open"],
    );
    assert.equal(run.get(argentina[0]), "refreshed:");
    assert.deepEqual(await brazilBreaker(m), {
      opens: 2,
      open: true,
      backoff_minutes: 20,
      closed: false,
    });
    // The spared ones wait for the end of the 20 minutes (not claimed and skipped meanwhile).
    const waits = await m
      .adminDb()`select mp_refresh_next_attempt_at > now() + interval '19 minutes'
        as w from nv_accounts where id = any(${pgArray(brazil2)}::uuid[])
         and mp_refresh_last_error = 'circuit_open'`;
    assert.deepEqual(waits.map((r) => r.w), [true, true]);

    // Two runs at once, the backoff over again: one trial between them (compare-and-set), the
    // breaker open for 40 minutes.
    const spared = brazil2.filter((id) => run.get(id) === "skipped:circuit_open");
    await timePasses(m, spared);
    before = calls.after;
    const [a, b] = await Promise.all([refreshRun(m, 1), refreshRun(m, 1)]);
    calls = await callsSince(m, before);
    assert.equal(calls.MLB.token_calls, 1, "two runs at once: one trial call");
    assert.deepEqual(
      [...a.values(), ...b.values()].sort(),
      ["at_risk:server_error", "skipped:circuit_open"],
    );
    assert.deepEqual(await brazilBreaker(m), {
      opens: 3,
      open: true,
      backoff_minutes: 40,
      closed: false,
    });

    // Over the outage Brazil's MercadoPago got 3 + 0 + 1 + 1 calls, and as many accounts are at
    // risk: the first run's three and one per trial.
    const brazilAll = [...brazil1, ...brazil2];
    assert.deepEqual(await states(m, brazilAll), [
      ...Array(5).fill("at_risk/1/v1"),
      "connected/0/v1",
    ]);

    // Brazil's MercadoPago answers again; the backoff over: the trial is answered and closes the
    // breaker, and Brazil's due accounts are refreshed in that run.
    await m.sandbox.faults("none", 0, m.clientId("MLB"));
    const lastSpared = [...a.entries(), ...b.entries()]
      .filter(([, s]) => s === "skipped:circuit_open").map(([id]) => id);
    await timePasses(m, lastSpared);
    const brazil3 = [...lastSpared, ...await dueAccounts(m, "MLB", 2)];
    before = calls.after;
    run = await refreshRun(m);
    calls = await callsSince(m, before);
    for (const id of brazil3) assert.equal(run.get(id), "refreshed:");
    assert.equal(calls.MLB.token_calls, 3, "the trial, then the two others");
    assert.deepEqual(await states(m, brazil3), Array(3).fill("connected/0/v2"));
    assert.deepEqual(await brazilBreaker(m), {
      opens: 0,
      open: null,
      backoff_minutes: null,
      closed: true,
    });
    const healed = await m.call("mp-health");
    assert.equal(healed.body.sites.MLB.breaker_open_until, null);
  } finally {
    await m.sandbox.faults("none", 0, m.clientId("MLB"));
    await m.adminDb()`delete from mp_app_breakers`;
  }
});

Deno.test("the half-open trial is claimed by compare-and-set: of two claims once the backoff is over, one wins; only its holder ends it", async () => {
  const m = multi();
  const db = m.adminDb();
  await db`delete from mp_app_breakers where site_id = 'MLC'`;
  const backoffs = pgArray(["600 seconds", "1200 seconds"]);
  const [opened] = await db`select mp_open_app_breaker('MLC', ${backoffs}::interval[]) as u`;
  assert.ok(opened.u, "opened");
  const [again] = await db`select mp_open_app_breaker('MLC', ${backoffs}::interval[]) as u`;
  assert.equal(again.u, null, "open already: a second open changes nothing");
  const [early] = await db`select mp_claim_app_breaker_trial('MLC', ${crypto.randomUUID()}::uuid,
    interval '5 minutes') as won`;
  assert.equal(early.won, false, "not before the backoff is over");
  await db`update mp_app_breakers set open_until = now() where site_id = 'MLC'`;
  const [x, y] = [crypto.randomUUID(), crypto.randomUUID()];
  const claims = await Promise.all([x, y].map(async (owner) => {
    const [r] = await db`select mp_claim_app_breaker_trial('MLC', ${owner}::uuid,
      interval '5 minutes') as won`;
    return r.won as boolean;
  }));
  assert.equal(claims.filter(Boolean).length, 1, "exactly one claim wins");
  const [winner, loser] = claims[0] ? [x, y] : [y, x];
  const [foreign] = await db`select mp_end_app_breaker_trial('MLC', ${loser}::uuid, true,
    ${backoffs}::interval[]) as u`;
  assert.equal(foreign.u, null);
  const [held] = await db`select trial_owner, opens from mp_app_breakers where site_id = 'MLC'`;
  assert.equal(held.trial_owner, winner, "the loser cannot end the winner's trial");
  const [reopened] = await db`select mp_end_app_breaker_trial('MLC', ${winner}::uuid, false,
    ${backoffs}::interval[]) - now() > interval '19 minutes' as doubled`;
  assert.equal(reopened.doubled, true, "a failed trial opens it for the second backoff");
  const [row] = await db`select opens, trial_owner from mp_app_breakers where site_id = 'MLC'`;
  assert.deepEqual({ ...row }, { opens: 2, trial_owner: null });
  await db`delete from mp_app_breakers where site_id = 'MLC'`;
});
