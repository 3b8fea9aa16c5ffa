// deno-lint-ignore-file no-explicit-any
/**
 * mp-health over HTTP (docs/contract.md, "mp-reconcile / mp-health"): 200 when ok, else 503
 * with the same body — a stalled schedule, an event pending over 15 minutes, an event failed in
 * the last 24 hours; a fresh deploy whose jobs were just scheduled is ok; every count is the
 * connection state's; a refused receiver's error names its host and the cause; and
 * `deno task status` prints the same totals. mp-health and mp-deliver-events run in a gateway
 * of this file's own (the local edge runtime) over a scratch Backend and Admin database pair
 * (bootstrapped and migrated as a deploy does), so every figure is exact. The scheduling
 * helper's record (`mp_schedules`) is checked on the stack's Backend DB, where pg_cron runs, in
 * a transaction that is rolled back. Port offset 67 (`testPort`) is a receiver nobody runs.
 */
import assert from "node:assert/strict";
import { createGateway, functionEntrypoints, type Gateway } from "../local/gateway.ts";
import { scratchDatabase } from "../local/bootstrap.ts";
import { ADMIN_PROJECT, BACKEND_PROJECT, migrate } from "../tooling/migrate.ts";
import { connect, type Sql } from "../shared/platform/db.ts";
import { SCHEDULED_JOBS } from "../shared/schedules/jobs.ts";
import { backendDb, call, closeDbs, functionEnv, stack, testPort } from "./_stack.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const FUNCTIONS = ["mp-refresh", "mp-reconcile", "mp-probe", "mp-deliver-events"];
const REFUSED_PORT = () => testPort(67);

/** A scratch database next to `url`, bootstrapped and migrated (as postgres) from `workdir`. */
async function scratch(url: string, workdir: string) {
  const db = await scratchDatabase(url, "health");
  await migrate(db.postgresUrl, workdir);
  return { db, sql: connect(db.postgresUrl, { max: 2, fetchTypes: true }) };
}

interface World {
  backend: Sql;
  admin: Sql;
  env: { BACKEND_DB_URL: string; ADMIN_DB_URL: string };
  gw: Gateway;
  health(): Promise<{ status: number; body: any }>;
  deliver(): Promise<{ status: number; body: any }>;
  drop(): Promise<void>;
}

/** A scratch pair and a gateway serving mp-health and mp-deliver-events over it. */
async function world(): Promise<World> {
  const [b, a] = await Promise.all([
    scratch(stack.env("BACKEND_DB_URL"), BACKEND_PROJECT),
    scratch(stack.env("ADMIN_DB_URL"), ADMIN_PROJECT),
  ]);
  const entries = await functionEntrypoints();
  const gw = await createGateway({
    env: functionEnv({
      SUPABASE_DB_URL: b.db.postgresUrl,
      ADMIN_DB_URL: a.db.postgresUrl,
      // A receiver nobody runs: each attempt is refused.
      PLATFORM_WEBHOOK_URL: `http://127.0.0.1:${REFUSED_PORT()}/platform/events`,
    }),
    functions: {
      "mp-health": entries.get("mp-health")!,
      "mp-deliver-events": entries.get("mp-deliver-events")!,
    },
    log: () => {},
  });
  const fetchJson = async (name: string, init: RequestInit) => {
    const res = await gw.fetch(
      new Request(`http://gateway.test/functions/v1/${name}`, {
        ...init,
        headers: { apikey: stack.secretKey, "content-type": "application/json" },
      }),
    );
    return { status: res.status, body: await res.json() };
  };
  return {
    backend: b.sql,
    admin: a.sql,
    env: { BACKEND_DB_URL: b.db.url, ADMIN_DB_URL: a.db.url },
    gw,
    health: () => fetchJson("mp-health", { method: "GET" }),
    deliver: () => fetchJson("mp-deliver-events", { method: "POST", body: "{}" }),
    async drop() {
      await gw.close();
      await Promise.all([b.sql.end({ timeout: 1 }), a.sql.end({ timeout: 1 })]);
      await Promise.all([b.db.drop(), a.db.drop()]);
    },
  };
}

/** Records every declared job as the scheduling helper does when it has just scheduled them. */
async function justScheduled(w: World) {
  const names = SCHEDULED_JOBS.map((job) => job.name);
  await w
    .backend`insert into mp_schedules (job_name, function_name, schedule, command, scheduled_at)
    select f, f, '* * * * *', 'select 1', now() from unnest(${names}::text[]) f
    on conflict (job_name) do update set scheduled_at = now()`;
}

/** An account inserted as the admin panel would (its `connected` event is written with it). */
async function account(w: World, extra: Record<string, unknown> = {}): Promise<string> {
  const id = crypto.randomUUID();
  await w.admin`insert into nv_accounts ${
    w.admin({
      id,
      mp_connected: true,
      mp_user_id: 800_000_000 + Math.floor(Math.random() * 100_000_000),
      mp_access_token_encrypted: "v1:not-read-here",
      mp_token_expires_at: new Date(Date.now() + 100 * 86_400_000),
      mp_token_version: 1,
      ...extra,
    })
  }`;
  return id;
}

/** The 503 mp-health answers when not ok: the same body, with the reason among `problems`. */
function assertNotOk(res: { status: number; body: any }, problem: RegExp) {
  assert.equal(res.status, 503, JSON.stringify(res.body));
  assert.equal(res.body.ok, false);
  assert.ok(
    res.body.problems.some((p: string) => problem.test(p)),
    JSON.stringify(res.body.problems),
  );
  assert.ok("connected" in res.body && "schedules" in res.body, "the same body as a 200");
}

function assertOk(res: { status: number; body: any }) {
  assert.equal(res.status, 200, JSON.stringify(res.body.problems));
  assert.equal(res.body.ok, true);
  assert.deepEqual(res.body.problems, []);
}

Deno.test("mp-health: a fresh deploy whose jobs were just scheduled answers 200, nothing stalled; a stalled schedule answers 503", async () => {
  const w = await world();
  try {
    // Nothing scheduled, nothing ever ran (a database where pg_cron schedules nothing).
    const none = await w.health();
    assertNotOk(none, /mp-refresh stalled/);
    for (const f of FUNCTIONS) assert.equal(none.body.schedules[f].stalled, true, f);

    await justScheduled(w);
    const fresh = await w.health();
    assertOk(fresh);
    for (const f of FUNCTIONS) {
      const s = fresh.body.schedules[f];
      assert.equal(s.stalled, false, f);
      assert.equal(s.last_run_at, null, `${f}: no run yet`);
      assert.ok(s.scheduled_at, `${f}: when it was scheduled`);
    }

    // mp-probe (every minute) scheduled an hour ago and never run since: stalled → 503.
    await w.backend`update mp_schedules set scheduled_at = now() - interval '1 hour'
      where function_name = 'mp-probe'`;
    const stalled = await w.health();
    assertNotOk(stalled, /^mp-probe stalled/);
    assert.equal(stalled.body.schedules["mp-probe"].stalled, true);
    assert.equal(stalled.body.schedules["mp-reconcile"].stalled, false);
    // A completed run counts from then on: ok again.
    await w.admin`select mp_record_function_run('mp-probe', now(), 'completed', '{}')`;
    const ran = await w.health();
    assertOk(ran);
    assert.ok(ran.body.schedules["mp-probe"].last_run_at);
  } finally {
    await w.drop();
  }
});

Deno.test("mp-health: an event pending over 15 minutes answers 503; under it, or with delivery off, 200", async () => {
  const w = await world();
  try {
    await justScheduled(w);
    const id = await account(w);
    const age = (minutes: number) =>
      w.admin`update mp_event_outbox set created_at = now() - make_interval(mins => ${minutes})
        where account_id = ${id}`;
    await age(14);
    const young = await w.health();
    assertOk(young);
    assert.equal(young.body.outbox.pending, 1);
    assert.equal(young.body.outbox.delivery, "unknown", "mp-deliver-events never ran here");
    await age(16);
    const old = await w.health();
    assertNotOk(old, /oldest pending event is 16 min old \(over 15 min\)/);
    assert.ok(old.body.outbox.oldest_pending_age_s > 15 * 60);
    // With delivery off (as the last mp-deliver-events run found it) events wait for mp-events.
    await w.admin`select mp_record_function_run('mp-deliver-events', now(), 'completed',
      '{"delivery": "off"}')`;
    const off = await w.health();
    assertOk(off);
    assert.equal(off.body.outbox.delivery, "off");
  } finally {
    await w.drop();
  }
});

Deno.test("mp-health: an event failed within the last 24 hours answers 503; one failed 25 hours ago does not", async () => {
  const w = await world();
  try {
    await justScheduled(w);
    const id = await account(w);
    const failedAgo = (hours: number) =>
      w.admin`update mp_event_outbox set status = 'failed', last_error = 'x answered 500',
        failed_at = now() - make_interval(hours => ${hours}) where account_id = ${id}`;
    await failedAgo(23);
    const recent = await w.health();
    assertNotOk(recent, /^1 event\(s\) failed in the last 24 hours$/);
    assert.equal(recent.body.outbox.failed, 1);
    assert.equal(recent.body.outbox.failed_24h, 1);
    assert.equal(recent.body.outbox.last_error, "x answered 500");
    await failedAgo(25);
    const old = await w.health();
    assertOk(old);
    assert.equal(old.body.outbox.failed, 1, "still counted as failed");
    assert.equal(old.body.outbox.failed_24h, 0);
  } finally {
    await w.drop();
  }
});

Deno.test("a refused receiver: the error names its host and the cause; once the event is 15 minutes old mp-health answers 503", async () => {
  const w = await world();
  try {
    await justScheduled(w);
    const id = await account(w);
    const run = await w.deliver();
    assert.equal(run.status, 200, JSON.stringify(run.body));
    assert.deepEqual(run.body, { delivered: 0, failed: 0, pending: 1 });
    const [row] = await w.admin`select status, attempts, last_error from mp_event_outbox
      where account_id = ${id}`;
    const expected = `127.0.0.1:${REFUSED_PORT()} refused the connection`;
    assert.deepEqual({ ...row }, { status: "pending", attempts: 1, last_error: expected });
    const health = await w.health();
    assertOk(health); // retrying for under 15 minutes is not yet a failure
    assert.equal(health.body.outbox.delivery, "on");
    assert.equal(health.body.outbox.last_error, expected);
    await w.admin`update mp_event_outbox set created_at = now() - interval '16 minutes'
      where account_id = ${id}`;
    const late = await w.health();
    assertNotOk(late, /oldest pending event/);
    assert.equal(late.body.outbox.last_error, expected);
    for (const secret of stack.env("PLATFORM_WEBHOOK_SECRETS").split(" ")) {
      assert.ok(!JSON.stringify(late.body).includes(secret));
    }
    assert.ok(!expected.includes("/platform/events"), "no path: only host and cause");
  } finally {
    await w.drop();
  }
});

Deno.test("every count is the connection state's: connected == states.connected beside a reauth_required account; the states add up to the accounts; status prints the same totals", async () => {
  const w = await world();
  try {
    await justScheduled(w);
    const day = 86_400_000;
    const at = (days: number) => new Date(Date.now() + days * day);
    await account(w, { mp_token_expires_at: at(3) }); // connected, expiring
    await account(w, { mp_token_expires_at: at(100) }); // connected
    // Still flagged mp_connected, but the seller must connect again: reauth_required.
    await account(w, { mp_token_expires_at: at(3), mp_needs_reauth: true });
    await account(w, { mp_token_expires_at: at(2), mp_refresh_unconfirmed_at: new Date() }); // at_risk
    await account(w, {
      mp_connected: false,
      mp_access_token_encrypted: null,
      mp_token_expires_at: null,
      mp_token_version: 2,
    }); // revoked
    await account(w, {
      mp_connected: false,
      mp_access_token_encrypted: null,
      mp_token_expires_at: null,
      mp_user_id: null,
      mp_token_version: 0,
    }); // not_connected
    // Their events are delivered (so nothing in the answer moves with the clock).
    await w.admin`update mp_event_outbox set status = 'delivered', delivered_at = now()`;

    const res = await w.health();
    assertOk(res);
    const h = res.body;
    assert.deepEqual(h.states, {
      connected: 2,
      at_risk: 1,
      reauth_required: 1,
      revoked: 1,
      not_connected: 1,
    });
    assert.equal(h.connected, h.states.connected);
    assert.equal(h.connected, 2, "the reauth_required account is not connected");
    assert.equal(h.needs_reauth, 1);
    assert.equal(h.at_risk, 1);
    assert.equal(h.expiring_7d, 2, "connected or at_risk, expiring within 7 days");
    const [{ n, flagged }] = await w.admin`select count(*)::int as n,
      count(*) filter (where mp_connected)::int as flagged from nv_accounts`;
    assert.equal(h.accounts, n);
    assert.equal(
      Object.values(h.states as Record<string, number>).reduce((a, b) => a + b, 0),
      n,
      "the per-state counts add up to the accounts",
    );
    assert.equal(flagged, 4, "the old flag would have said 4");
    // expiring_7d reads only the expiring window of the connected and at_risk accounts' index.
    const plan = await w.admin.begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      return await tx.unsafe(`explain (format json) select count(*) from nv_accounts
        where mp_state in ('connected', 'at_risk')
          and mp_token_expires_at < now() + interval '7 days'`);
    });
    assert.doesNotMatch(JSON.stringify(plan), /Seq Scan/);
    assert.match(JSON.stringify(plan), /"Index Name":"nv_accounts_mp_expiring_/);

    // deno task status: the same totals (the same function), figure for figure.
    const json = await status(w, ["--json"]);
    assert.equal(json.code, 0, json.stderr);
    const printed = JSON.parse(json.stdout.trim().split("\n").pop()!);
    assert.deepEqual(printed.totals, h);
    const text = await status(w, []);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split("\n");
    for (
      const line of [
        "accounts: 6 · connected: 2 · expiring 7d: 2 · needs reauth: 1 · at risk: 1",
        "states: connected: 2 · at risk: 1 · reauth required: 1 · revoked: 1 · not connected: 1",
        "drifted: 0 · client missing: 0 · fast path misses 1h: 0",
        "ok: true",
      ]
    ) assert.ok(lines.includes(line), `${line}\n${text.stdout}`);
    // Its per-account `connected` is the state.
    const rows = printed.accounts as any[];
    assert.deepEqual(
      rows.filter((r) => r.connected).map((r) => r.state),
      ["connected", "connected"],
    );
  } finally {
    await w.drop();
  }
});

/** Runs `deno task status` over the world's databases. */
async function status(w: World, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/status.ts`, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...w.env },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

Deno.test("the scheduling helper records when each job took its form; the stack's mp-health reports it", async () => {
  try {
    // The stack's migrations scheduled the four jobs through the helper: each has its record.
    const records = await backendDb()`select function_name, scheduled_at from mp_schedules
      where job_name = any(${FUNCTIONS}::text[])`;
    assert.deepEqual(records.map((r) => r.function_name).sort(), [...FUNCTIONS].sort());
    const health = await call("mp-health");
    assert.equal(health.status, health.body.ok ? 200 : 503);
    for (const r of records) {
      assert.equal(
        health.body.schedules[r.function_name].scheduled_at,
        r.scheduled_at.toISOString(),
      );
    }
    // In a transaction that is rolled back, as postgres (whose jobs they are).
    await backendDb().begin(async (tx) => {
      await tx`set local role postgres`;
      const job = "mp-health-test-job";
      const schedule = (cron: string) =>
        tx`select public.mp_schedule_function(${job}, ${cron}, 'mp-probe', '{}', 60000) as ok`;
      const recorded = async () =>
        (await tx`select scheduled_at, (scheduled_at = now()) as now from mp_schedules
          where job_name = ${job}`)[0];
      const [{ ok }] = await schedule("* * * * *");
      assert.equal(ok, true);
      assert.equal((await recorded()).now, true, "a new job: scheduled now");
      const old = async () =>
        await tx`update mp_schedules set scheduled_at = now() - interval '1 hour'
          where job_name = ${job}`;
      await old();
      await schedule("* * * * *");
      assert.equal((await recorded()).now, false, "scheduled again unchanged: kept");
      await schedule("*/5 * * * *");
      assert.equal((await recorded()).now, true, "another schedule: scheduled now");
      await old();
      await tx`select cron.unschedule(${job})`;
      await schedule("*/5 * * * *");
      assert.equal((await recorded()).now, true, "unscheduled, then scheduled again: now");
      throw new Error("roll back");
    }).catch((err) => assert.equal(err.message, "roll back"));
    const [{ n }] = await backendDb()`select count(*)::int as n from mp_schedules
      where job_name = 'mp-health-test-job'`;
    assert.equal(n, 0, "rolled back");
  } finally {
    await closeDbs();
  }
});
