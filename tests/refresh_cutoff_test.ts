// deno-lint-ignore-file no-explicit-any
/**
 * mp-refresh cut off by the edge runtime: run in a gateway of its own with a short wall
 * clock, it starts no MercadoPago call after `beforeunload` and loses no refresh token, both
 * when it knows the wall clock (it answers before the end) and when it does not (the isolate
 * is terminated mid-run). Every token left in the master still works at MercadoPago.
 */
import assert from "node:assert/strict";
import { createGateway, functionEntrypoints } from "../local/gateway.ts";
import { decryptSecret } from "../shared/platform/crypto.ts";
import { pgArray } from "../shared/platform/db.ts";
import {
  adminDb,
  closeDbs,
  functionEnv,
  keyRing,
  newAccount,
  sandbox,
  stack,
  withCronPaused,
} from "./_stack.ts";

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

/** Runs mp-refresh once in a gateway of its own; returns the answer and the log lines. */
async function cutOffRun(opts: {
  ids: string[];
  wallClockMs: number;
  beforeunloadPct: number;
  env: Record<string, string>;
}) {
  const lines: Record<string, unknown>[] = [];
  const entry = (await functionEntrypoints()).get("mp-refresh")!;
  const gw = await createGateway({
    env: functionEnv(opts.env),
    functions: { "mp-refresh": entry },
    limits: {
      wallClockMs: opts.wallClockMs,
      requestTimeoutMs: opts.wallClockMs + 5_000,
      beforeunloadWallClockPct: opts.beforeunloadPct,
      maxIsolates: 1,
    },
    log: (line) => lines.push(line),
  });
  try {
    const res = await gw.fetch(
      new Request("http://gateway.local/functions/v1/mp-refresh", {
        method: "POST",
        headers: { apikey: stack.secretKey, "content-type": "application/json" },
        body: JSON.stringify({ limit: opts.ids.length }),
      }),
    );
    const text = await res.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: res.status, body, lines };
  } finally {
    await gw.close();
  }
}

Deno.test("mp-refresh cut off by beforeunload: no call after it, answers in time, no token lost", async () => {
  await withCronPaused("mp-refresh", async () => {
    const ids = await dueAccounts(200);
    const before = await sandbox.stats();
    await sandbox.latency(300);
    let run;
    try {
      run = await cutOffRun({
        ids,
        wallClockMs: 20_000,
        beforeunloadPct: 30, // beforeunload at 6 s; 200 accounts need ~8 s at 8 × 300 ms
        env: { EDGE_WALL_CLOCK_MS: "20000", MP_HTTP_TIMEOUT_MS: "1500", DB_TIMEOUT_MS: "500" },
      });
    } finally {
      await sandbox.latency(0);
    }
    assert.equal(run.status, 200, JSON.stringify(run.body).slice(0, 300));
    const mine = new Set(ids);
    const results = (run.body.results as any[]).filter((r) => mine.has(r.account_id));
    const refreshed = results.filter((r) => r.status === "refreshed").length;
    const stopped = results.filter((r) => r.error === "shutting_down").length;
    const tally = JSON.stringify(
      Object.groupBy(results, (r) => `${r.status}:${r.error ?? ""}`),
      (_k, v) => (Array.isArray(v) ? v.length : v),
    );
    assert.ok(refreshed > 0, `it refreshed until beforeunload: ${tally}`);
    assert.ok(stopped > 0, `after beforeunload it started no new call: ${tally}`);
    const after = await sandbox.stats();
    assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
    assert.ok(after.token_calls - before.token_calls <= run.body.claimed - stopped);
    const leased = await adminDb()`select count(*)::int as n from nv_accounts
      where id = any(${pgArray(ids)}::uuid[]) and mp_refresh_lease_owner is not null`;
    assert.equal(leased[0].n, 0, "no lease is left behind: saved or released");
    await assertNoTokenLost(ids);
  });
  await closeDbs();
});

Deno.test("mp-refresh terminated mid-run (it did not know the wall clock): no token lost", async () => {
  await withCronPaused("mp-refresh", async () => {
    const ids = await dueAccounts(200);
    const before = await sandbox.stats();
    await sandbox.latency(300);
    let run;
    try {
      // The function believes it has 150 s; the runtime ends the isolate at 6 s, with
      // beforeunload at 90 %: the calls in flight then finish and save inside the last 0.6 s.
      run = await cutOffRun({
        ids,
        wallClockMs: 6_000,
        beforeunloadPct: 90,
        env: { MP_HTTP_TIMEOUT_MS: "1500", DB_TIMEOUT_MS: "500" },
      });
    } finally {
      await sandbox.latency(0);
    }
    assert.ok([200, 504].includes(run.status), `answered ${run.status}`);
    const terminated = run.lines.find((l) => l.msg === "Edge isolate terminated");
    if (run.status === 504) assert.equal(terminated?.reason, "WallClockTime");
    const after = await sandbox.stats();
    assert.equal(after.refresh_token_reuse, before.refresh_token_reuse);
    assert.ok(after.token_calls > before.token_calls, "the run was under way when cut off");
    await assertNoTokenLost(ids);
  });
  await closeDbs();
});
