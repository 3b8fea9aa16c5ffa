// deno-lint-ignore-file no-explicit-any
/**
 * mp-refresh cut off by the edge runtime, in a gateway of its own: after `beforeunload` it
 * starts no MercadoPago call, finishes the ones in flight and answers; terminated mid-run it
 * loses no refresh token. Every token left in the master still works at MercadoPago.
 *
 * Nothing races: the sandbox's latch holds the run's token calls (as many as its concurrency
 * lets it start, 8), and the test decides when `beforeunload` comes or the isolate ends (the
 * gateway's `unload` and `terminate`, what its wall clock does at 90 % and 100 %), waits for
 * the isolate to confirm its listeners ran, and only then lets MercadoPago answer.
 */
import assert from "node:assert/strict";
import { createGateway, functionEntrypoints } from "../local/gateway.ts";
import { decryptSecret } from "../shared/platform/crypto.ts";
import { pgArray } from "../shared/platform/db.ts";
import {
  adminDb,
  closeDbs,
  eventually,
  functionEnv,
  keyRing,
  newAccount,
  sandbox,
  stack,
  withCronPaused,
} from "./_stack.ts";

/** mp-refresh's default concurrency toward MercadoPago (`MP_REFRESH_CONCURRENCY`). */
const CONCURRENCY = 8;
/** Due accounts per run: three times what can be in flight at once. */
const ACCOUNTS = 3 * CONCURRENCY;

/** `count` due accounts (expiring tomorrow), connected with fresh sandbox grants. */
async function dueAccounts(count: number): Promise<string[]> {
  const grants = await sandbox.grants(count);
  return await Promise.all(grants.map((grant) => newAccount({ grant, expiresInDays: 1 })));
}

/** Every account's stored refresh token is still accepted by MercadoPago (none was lost). */
async function assertNoTokenLost(ids: string[]) {
  const keys = await keyRing();
  const rows = await adminDb()`select id, mp_refresh_token from nv_accounts
    where id = any(${pgArray(ids)}::uuid[])`;
  assert.equal(rows.length, ids.length);
  const refused: string[] = [];
  for (const row of rows) {
    const token = await decryptSecret(keys, row.id, "refresh_token", row.mp_refresh_token);
    const res = await fetch(`${stack.sandboxUrl}/oauth/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        grant_type: "refresh_token",
        refresh_token: token,
        client_id: stack.env("MP_CLIENT_ID"),
        client_secret: stack.env("MP_CLIENT_SECRET"),
      }),
    });
    await res.body?.cancel();
    if (res.status !== 200) refused.push(row.id);
  }
  assert.deepEqual(refused, [], "every stored refresh token still works");
  // The check used those tokens up: the accounts go, so no later run sends them again.
  await adminDb()`delete from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
}

/** mp-refresh in a gateway of its own (one isolate), whose run the test cuts off. */
async function refreshGateway() {
  const lines: Record<string, unknown>[] = [];
  const entry = (await functionEntrypoints()).get("mp-refresh")!;
  const gw = await createGateway({
    // A call held by the latch must not time out meanwhile, however slow the machine.
    env: functionEnv({ MP_HTTP_TIMEOUT_MS: "30000" }),
    functions: { "mp-refresh": entry },
    limits: { maxIsolates: 1 },
    log: (line) => lines.push(line),
  });
  const run = (limit: number) =>
    gw.fetch(
      new Request("http://gateway.local/functions/v1/mp-refresh", {
        method: "POST",
        headers: { apikey: stack.secretKey, "content-type": "application/json" },
        body: JSON.stringify({ limit }),
      }),
    ).then(async (res) => {
      const text = await res.text();
      let body: any = text;
      try {
        body = JSON.parse(text);
      } catch { /* not JSON */ }
      return { status: res.status, body };
    });
  return { gw, lines, run };
}

/** Waits (bounded only against a hang) until the gateway logged a line with `msg`. */
async function logged(lines: Record<string, unknown>[], msg: string) {
  await eventually(() => Promise.resolve(lines.find((l) => l.msg === msg)), 60_000);
}

Deno.test("mp-refresh cut off by beforeunload: no call after it, answers, no token lost", async () => {
  await withCronPaused("mp-refresh", async () => {
    const ids = await dueAccounts(ACCOUNTS);
    const before = await sandbox.stats();
    const { gw, lines, run } = await refreshGateway();
    await sandbox.hold(true);
    let answer;
    try {
      const running = run(ACCOUNTS);
      await sandbox.awaitHeld(CONCURRENCY); // as many calls in flight as the run may start
      assert.equal(gw.unload("mp-refresh", "WallClockTime"), 1);
      await logged(lines, "Edge beforeunload dispatched");
      await sandbox.hold(false); // MercadoPago answers the calls in flight
      answer = await running;
    } finally {
      await sandbox.hold(false);
      await gw.close();
    }
    assert.equal(answer.status, 200, JSON.stringify(answer.body).slice(0, 300));
    const results = answer.body.results as any[];
    const stopped = results.filter((r) => r.error === "shutting_down");
    const called = results.filter((r) => r.error !== "shutting_down");
    const after = await sandbox.stats();
    assert.equal(after.token_calls - before.token_calls, CONCURRENCY, "no call after it");
    assert.equal(called.length, CONCURRENCY, "the calls in flight finished and were reported");
    assert.equal(stopped.length, answer.body.claimed - CONCURRENCY);
    const mine = new Set(ids);
    for (const r of results.filter((r) => mine.has(r.account_id))) {
      assert.ok(
        r.status === "refreshed" || r.error === "shutting_down",
        `${r.status}:${r.error}: each of this test's accounts refreshed or left alone`,
      );
    }
    assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
    const leased = await adminDb()`select count(*)::int as n from nv_accounts
      where id = any(${pgArray(ids)}::uuid[]) and mp_refresh_lease_owner is not null`;
    assert.equal(leased[0].n, 0, "no lease is left behind: saved or released");
    await assertNoTokenLost(ids);
  });
  await closeDbs();
});

Deno.test("mp-refresh terminated mid-run (no beforeunload heeded in time): 504, no token lost", async () => {
  await withCronPaused("mp-refresh", async () => {
    const ids = await dueAccounts(ACCOUNTS);
    const before = await sandbox.stats();
    const { gw, lines, run } = await refreshGateway();
    await sandbox.hold(true);
    let answer;
    try {
      const running = run(ACCOUNTS);
      await sandbox.awaitHeld(CONCURRENCY);
      // The runtime ends the isolate with calls in flight, before MercadoPago processed them.
      assert.equal(gw.terminate("mp-refresh", "WallClockTime"), 1);
      answer = await running;
      // The held calls' client went away with the isolate: MercadoPago never processes them.
      await eventually(async () => (await sandbox.held()) === 0, 60_000);
    } finally {
      await sandbox.hold(false);
      await gw.close();
    }
    assert.equal(answer.status, 504);
    const terminated = lines.find((l) => l.msg === "Edge isolate terminated");
    assert.equal(terminated?.reason, "WallClockTime");
    const after = await sandbox.stats();
    assert.equal(after.token_calls - before.token_calls, CONCURRENCY, "the run was under way");
    assert.equal(after.refreshes, before.refreshes, "none of the calls cut off was processed");
    assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
    await assertNoTokenLost(ids);
  });
  await closeDbs();
});
