// deno-lint-ignore-file no-explicit-any
/**
 * Events to the platform (docs/contract.md, "Events to the platform"; invariant 10), end to end
 * against the test stack: each
 * event type produced by its real flow, deliveries signed under both secrets and verified by
 * the `standardwebhooks` library, retries with the same `webhook-id` (5xx, a hang past the
 * attempt timeout, a redirect), order per account, the pull cursor under concurrent writers,
 * retention, and bad input. The stack's PLATFORM_WEBHOOK_URL points at the receiver this file
 * runs on the gateway's port + 7 (`local/stack.ts`); its attempt timeout is 1.5 s there.
 */
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  eventually,
  newAccount,
  newClient,
  newSeller,
  provisionedPair,
  sandbox,
  stack,
  withCronPaused,
} from "./_stack.ts";
import { connect as connectDb } from "../shared/platform/db.ts";

// ---- the platform's receiver ----

type Mode = "ok" | "error" | "hang" | "redirect";
interface Delivery {
  id: string;
  acked: boolean;
  headers: Record<string, string>;
  body: string;
}
const receiver = {
  mode: "ok" as Mode,
  deliveries: [] as Delivery[],
};
const gatewayPort = () => Number(new URL(stack.functionsUrl).port);
let server: Deno.HttpServer | undefined;
const hangs = new Set<(v: unknown) => void>();

function startReceiver() {
  server ??= Deno.serve(
    { hostname: "127.0.0.1", port: gatewayPort() + 7, onListen: () => {} },
    async (req) => {
      const body = await req.text();
      const headers = Object.fromEntries(req.headers);
      receiver.deliveries.push({
        id: headers["webhook-id"],
        acked: receiver.mode === "ok",
        headers,
        body,
      });
      if (receiver.mode === "error") return new Response("boom", { status: 503 });
      if (receiver.mode === "redirect") {
        return new Response(null, { status: 307, headers: { location: "http://127.0.0.1:1/" } });
      }
      if (receiver.mode === "hang") {
        await new Promise((r) => {
          hangs.add(r);
          setTimeout(r, 5_000);
        });
      }
      return Response.json({ ok: true });
    },
  );
}

const secrets = () => stack.env("PLATFORM_WEBHOOK_SECRETS").split(" ");

/** Events of an account in the outbox, in its order. */
async function outbox(accountId: string): Promise<any[]> {
  return await adminDb()`select id, seq, type, status, attempts, payload, next_attempt_at
    from mp_event_outbox where account_id = ${accountId} order by seq, pos`;
}

/** The types of an account's events, in order. */
async function typesOf(accountId: string): Promise<string[]> {
  return (await outbox(accountId)).map((e) => e.type.replace("mp.connection.", ""));
}

/** Makes every pending event of `accountId` due now (as if its retry delay had passed). */
async function makeDue(accountId: string) {
  await adminDb()`update mp_event_outbox set next_attempt_at = now()
    where account_id = ${accountId} and status = 'pending'`;
}

/** Keeps other tests' accounts out of the way: their pending events are not due for a while. */
async function parkOthers(except: string[]) {
  await adminDb()`update mp_event_outbox set next_attempt_at = now() + interval '1 hour'
    where status = 'pending' and not (account_id = any (${except}::uuid[]))`;
}

/** One mp-deliver-events run (a successor at link `chain` when given): its answer and how many successors it started. */
async function deliver(body: unknown = {}, chain?: number) {
  const res = await call("mp-deliver-events", body, {
    headers: chain === undefined ? {} : { "x-mp-delivery-chain": String(chain) },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(Object.keys(res.body).sort(), ["delivered", "failed", "pending"]);
  return { ...res.body, continued: Number(res.headers.get("x-mp-delivery-continued")) };
}

/** Delivers until every event of `accountId` is delivered. */
async function drainAccount(accountId: string) {
  await eventually(async () => {
    await parkOthers([accountId]);
    await makeDue(accountId);
    await deliver();
    return (await outbox(accountId)).every((e) => e.status === "delivered");
  }, 20_000);
}

/** The deliveries of events of `accountId`, verified with the library under `secret`. */
function verifiedFor(accountId: string, secret: string): any[] {
  const hook = new Webhook(secret);
  return receiver.deliveries
    .map((d) => ({ d, event: hook.verify(d.body, d.headers) as any }))
    .filter((x) => x.event.data.account_id === accountId)
    .map((x) => ({ ...x.event, id: x.d.id }));
}

// ---- the connect flow, as oauth_test drives it ----

async function connectFlow(accountId: string, extra: Record<string, string> = {}, replace = false) {
  const started = await call("mp-oauth-start", { account_id: accountId, replace_seller: replace });
  assert.equal(started.status, 200, JSON.stringify(started.body));
  const url = new URL(started.body.url);
  for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, v);
  const toCallback = await fetch(url, { redirect: "manual" });
  await toCallback.body?.cancel();
  const back = await fetch(toCallback.headers.get("location")!, { redirect: "manual" });
  await back.body?.cancel();
  const location = new URL(back.headers.get("location")!);
  assert.equal(location.searchParams.get("mp"), "connected", location.href);
}

Deno.test("events: connect, seller_replaced, revoked — one event per change, delivered signed under both secrets", async () => {
  startReceiver();
  receiver.mode = "ok";
  const clientId = await newClient();
  const accountId = await newAccount({ clientId });
  const first = newSeller();
  await connectFlow(accountId, { user_id: String(first) });
  await connectFlow(accountId, { user_id: String(first) }); // same seller again: no change of state
  await connectFlow(accountId, { user_id: String(newSeller()) }, true);
  assert.equal((await call("mp-revoke", { account_id: accountId })).status, 200);
  assert.equal((await call("mp-revoke", { account_id: accountId })).status, 200); // idempotent
  assert.deepEqual(await typesOf(accountId), ["connected", "seller_replaced", "revoked"]);
  const rows = await outbox(accountId);
  assert.deepEqual(rows.map((r) => r.seq), [1, 2, 3]);

  await drainAccount(accountId);
  for (const secret of secrets()) {
    const got = verifiedFor(accountId, secret);
    const ids = [...new Set(got.map((e) => e.id))];
    assert.deepEqual(ids, rows.map((r) => r.id), "each event delivered, in order, id = webhook-id");
    const revoked = got.find((e) => e.type === "mp.connection.revoked");
    assert.deepEqual(Object.keys(revoked).sort(), ["data", "id", "timestamp", "type"]);
    assert.equal(revoked.data.account_id, accountId);
    assert.equal(revoked.data.client_id, clientId);
    assert.equal(revoked.data.state, "revoked");
    assert.equal(revoked.data.reason, "admin");
    assert.equal(typeof revoked.data.token_version, "number");
  }
  // Two secrets → two v1 signatures per delivery.
  const one = receiver.deliveries.find((d) => d.id === rows[0].id)!;
  assert.equal(one.headers["webhook-signature"].split(" ").length, 2);
  assert.ok(one.headers["webhook-signature"].split(" ").every((s) => s.startsWith("v1,")));
  // Nothing in a payload looks like a secret.
  for (const r of rows) {
    assert.doesNotMatch(JSON.stringify(r.payload), /APP_USR|TG-|whsec_|v1:|token"/);
  }
});

Deno.test("events: at_risk (lost answer), recovered (reconnect), reauth_required (invalid_grant)", async () => {
  const seller = newSeller();
  const { accountId } = await provisionedPair(seller);
  await sandbox.faults("lose_answer", 1);
  const risky = await call("mp-refresh", { account_id: accountId, force: true });
  assert.equal(risky.status, 200, JSON.stringify(risky.body));
  await connectFlow(accountId, { user_id: String(seller) });
  await sandbox.faults("invalid_grant", 1);
  const refused = await call("mp-refresh", { account_id: accountId, force: true });
  assert.equal(refused.body.reauth_required, 1, JSON.stringify(refused.body));
  assert.deepEqual(await typesOf(accountId), [
    "connected",
    "at_risk",
    "recovered",
    "reauth_required",
  ]);
  const [, atRisk, , reauth] = await outbox(accountId);
  assert.equal(atRisk.payload.data.reason, "refresh_unconfirmed");
  assert.ok(atRisk.payload.data.deadline, "at_risk carries its deadline");
  assert.equal(reauth.payload.data.reason, "invalid_grant");
});

Deno.test("events: deauthorized through the sandbox's signed notification", async () => {
  const seller = newSeller();
  const { accountId } = await provisionedPair(seller);
  const res = await sandbox.post("deauthorize", {
    user_id: seller,
    notify_url: `${stack.functionsUrl}/mp-webhook`,
  });
  assert.equal(res.ok, true);
  await eventually(async () => (await typesOf(accountId)).includes("deauthorized"));
  assert.deepEqual(await typesOf(accountId), ["connected", "deauthorized"]);
  const [, ev] = await outbox(accountId);
  assert.equal(ev.payload.data.state, "revoked");
  assert.equal(ev.payload.data.reason, "mp_deauthorized");
});

Deno.test("events: expiring once per token version, written by mp-deliver-events", async () => {
  const [grant] = await sandbox.grants(1);
  const accountId = await newAccount({ grant, clientId: await newClient(), expiresInDays: 3 });
  await deliver();
  await deliver();
  assert.deepEqual(await typesOf(accountId), ["connected", "expiring"]);
  const [, ev] = await outbox(accountId);
  assert.equal(ev.payload.data.token_version, 1);
  assert.ok(ev.payload.data.deadline);
  // A new version (a refresh that succeeded, still close to expiry here) is reported again.
  await adminDb()`update nv_accounts set mp_token_version = mp_token_version + 1 where id = ${accountId}`;
  await deliver();
  assert.deepEqual(await typesOf(accountId), ["connected", "expiring", "expiring"]);
});

Deno.test("delivery: 5xx, a hang past the timeout and a redirect are retried with the same webhook-id", async () => {
  startReceiver();
  const { accountId } = await provisionedPair();
  const [event] = await outbox(accountId);
  for (const mode of ["error", "hang", "redirect"] as Mode[]) {
    receiver.mode = mode;
    await parkOthers([accountId]);
    await makeDue(accountId);
    const report = await deliver();
    assert.equal(report.delivered, 0, mode);
    const [row] = await outbox(accountId);
    assert.equal(row.status, "pending", mode);
    assert.ok(row.next_attempt_at.getTime() > Date.now(), `${mode}: retried later`);
  }
  for (const r of hangs) r(undefined);
  receiver.mode = "ok";
  await drainAccount(accountId);
  const ids = receiver.deliveries.filter((d) => d.id === event.id);
  assert.ok(ids.length >= 4, `4 attempts of the same event (got ${ids.length})`);
  const [row] = await outbox(accountId);
  assert.equal(row.status, "delivered");
  assert.ok(row.attempts >= 4);
  // The same body each time (the signature may differ with its timestamp).
  assert.equal(new Set(ids.map((d) => d.body)).size, 1);
});

Deno.test("delivery: a later event of an account waits for the earlier one; concurrent changes keep order", async () => {
  startReceiver();
  receiver.mode = "error"; // background deliveries fail too: the first event holds the rest
  const { accountId } = await provisionedPair();
  // Concurrent changes of one account (revoke and reconnects race).
  await Promise.all([
    call("mp-revoke", { account_id: accountId }),
    connectFlow(accountId).catch(() => {}),
    call("mp-revoke", { account_id: accountId }),
  ]);
  const rows = await outbox(accountId);
  assert.deepEqual(rows.map((r) => r.seq), rows.map((_, i) => i), "seq 0, 1, 2, … without gaps");
  // The first one fails: nothing after it is sent.
  await parkOthers([accountId]);
  await makeDue(accountId);
  await deliver();
  const sent = receiver.deliveries.filter((d) => rows.some((r) => r.id === d.id));
  assert.ok(sent.every((d) => d.id === rows[0].id), "only the oldest event was attempted");
  receiver.mode = "ok";
  await drainAccount(accountId);
  const acked = receiver.deliveries.filter((d) => d.acked && rows.some((r) => r.id === d.id))
    .map((d) => d.id);
  assert.deepEqual([...new Set(acked)], rows.map((r) => r.id), "acknowledged in order");
});

Deno.test("invariant 10 in SQL: a run whose lease ran out records nothing; the event stays with its new owner", async () => {
  await withCronPaused("mp-deliver-events", async () => {
    // Written straight into the master: no function's background delivery claims its event.
    const accountId = await newAccount({ grant: (await sandbox.grants(1))[0] });
    assert.equal((await outbox(accountId)).length, 1, "its connected event");
    await parkOthers([accountId]);
    await makeDue(accountId);
    const [late, live] = [crypto.randomUUID(), crypto.randomUUID()];
    const claim = (owner: string, lease: string) =>
      adminDb()`select id from mp_claim_events(${owner}::uuid, 1, ${lease}::interval)`;
    const finish = async (owner: string, id: string) => {
      const [{ n }] = await adminDb()`select mp_finish_events(${owner}::uuid, ${[id]}::uuid[],
        array['delivered'], array[null]::timestamptz[], array[null]::text[]) as n`;
      return n;
    };
    // The first run's lease runs out at once (its POST hung past it); a second run takes the
    // event over while the first is still waiting on its answer.
    const [first] = await claim(late, "0 seconds");
    const [second] = await claim(live, "1 minute");
    assert.equal(second?.id, first?.id, "the event was taken over");
    assert.equal(await finish(late, first.id), 0, "the run that lost its lease records nothing");
    const [row] = await adminDb()`select status, lease_owner from mp_event_outbox
      where id = ${first.id}`;
    assert.deepEqual({ ...row }, { status: "pending", lease_owner: live });
    assert.equal(await finish(live, first.id), 1, "its new owner records it");
  });
});

Deno.test("delivery: after 3 days an event is failed; --redeliver puts it back", async () => {
  startReceiver();
  receiver.mode = "error";
  const { accountId } = await provisionedPair();
  await adminDb()`update mp_event_outbox set retry_from = now() - interval '3 days'
    where account_id = ${accountId}`;
  await parkOthers([accountId]);
  const report = await deliver();
  assert.ok(report.failed >= 1, JSON.stringify(report));
  const [row] = await outbox(accountId);
  assert.equal(row.status, "failed");
  // An event failed within the last 24 hours: mp-health is not ok and answers 503, same body.
  const health = await call("mp-health");
  assert.equal(health.status, 503);
  assert.equal(health.body.ok, false);
  assert.ok(health.body.outbox.failed >= 1);
  assert.ok(health.body.outbox.failed_24h >= 1);
  assert.equal(typeof health.body.outbox.pending, "number");
  assert.ok(health.body.problems.some((p: string) => /failed in the last 24 hours/.test(p)));
  assert.deepEqual(Object.keys(health.body.schedules).sort(), [
    "mp-deliver-events",
    "mp-probe",
    "mp-reconcile",
    "mp-refresh",
  ]);
  // deno task events --redeliver
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/events.ts", "--redeliver", "--json"],
    env: {
      ADMIN_DB_URL: stack.env("ADMIN_DB_URL"),
      BACKEND_DB_URL: stack.env("BACKEND_DB_URL"),
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const printed = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.ok(printed.redelivered >= 1);
  receiver.mode = "ok";
  await drainAccount(accountId);
});

Deno.test("mp-deliver-events records its run; mp-health reports it", async () => {
  await deliver();
  const health = await call("mp-health");
  const run = health.body.schedules["mp-deliver-events"];
  assert.ok(run.last_run_at, JSON.stringify(run));
  assert.equal(run.outcome, "completed");
  // A schedule whose last run is old, and that was scheduled long before, is stalled, and
  // mp-health says so (counted from the later of the two).
  await adminDb()`update mp_function_runs set last_finished_at = now() - interval '1 hour'
    where function_name = 'mp-deliver-events'`;
  await backendDb()`update mp_schedules set scheduled_at = now() - interval '1 hour'
    where function_name = 'mp-deliver-events'`;
  const stale = await call("mp-health");
  assert.equal(stale.body.schedules["mp-deliver-events"].stalled, true);
  assert.equal(stale.body.ok, false);
  assert.equal(stale.status, 503);
});

Deno.test("mp-events: commit order with two writers committing out of id order — nothing skipped, nothing repeated", async () => {
  const url = stack.env("ADMIN_DB_URL");
  const a = connectDb(url, { max: 1, fetchTypes: true });
  const b = connectDb(url, { max: 1, fetchTypes: true });
  const ids = [crypto.randomUUID(), crypto.randomUUID()];
  // Read up to now.
  let cursor: string | undefined;
  const seen: string[] = [];
  const readAll = async () => {
    for (;;) {
      const res = await call("mp-events", undefined, {
        query: `?limit=500${cursor ? `&after=${cursor}` : ""}`,
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      seen.push(...res.body.events.map((e: any) => e.id));
      cursor = res.body.next;
      if (res.body.events.length < 500) return;
    }
  };
  await readAll();
  let releaseA!: () => void;
  const holdA = new Promise<void>((r) => (releaseA = r));
  let insertedA!: () => void;
  const aInserted = new Promise<void>((r) => (insertedA = r));
  const txA = a.begin(async (sql) => {
    await sql`insert into mp_event_outbox (account_id, seq, type, payload)
      values (${
      ids[0]
    }, 0, 'mp.connection.revoked', '{"type":"mp.connection.revoked","timestamp":"2026-01-01T00:00:00.000Z","data":{}}')`;
    insertedA();
    await holdA;
  });
  await aInserted;
  await b.begin(async (sql) => {
    await sql`insert into mp_event_outbox (account_id, seq, type, payload)
      values (${
      ids[1]
    }, 0, 'mp.connection.revoked', '{"type":"mp.connection.revoked","timestamp":"2026-01-01T00:00:00.000Z","data":{}}')`;
  });
  const [countA] = await adminDb()`select count(*)::int as n from mp_event_outbox
    where account_id = ${ids[0]}`;
  assert.equal(countA.n, 0, "A's event is not committed yet");
  const [eventB] = await adminDb()`select id from mp_event_outbox where account_id = ${ids[1]}`;
  assert.ok(eventB, "B's event is committed");
  await readAll();
  assert.ok(!seen.includes(eventB.id), "B's event waits while A, an older transaction, is open");
  const mine = async () =>
    (await adminDb()`select id from mp_event_outbox where account_id = any (${ids}::uuid[])`)
      .map((r) => r.id);
  releaseA();
  await txA;
  await readAll();
  const events = await mine();
  assert.equal(events.length, 2);
  for (const id of events) assert.equal(seen.filter((s) => s === id).length, 1, "exactly once");
  assert.equal(new Set(seen).size, seen.length, "none repeated");
  await Promise.all([a.end({ timeout: 1 }), b.end({ timeout: 1 })]);
});

Deno.test("mp-events: bad input is 400 invalid_request; payloads as the contract's", async () => {
  for (
    const q of [
      "?after=garbage!",
      "?after=Zm9v",
      "?limit=0",
      "?limit=501",
      "?limit=abc",
      "?limit=1.5",
      "?other=1",
    ]
  ) {
    const res = await call("mp-events", undefined, { query: q });
    assert.equal(res.status, 400, q);
    assert.equal(res.body.error.code, "invalid_request", q);
  }
  assert.equal((await call("mp-events", undefined, { key: null })).status, 401);
  assert.equal((await call("mp-events", {}, { method: "POST" })).status, 405);
  const page = await call("mp-events", undefined, { query: "?limit=5" });
  assert.equal(page.status, 200);
  assert.equal(typeof page.body.next, "string");
  for (const e of page.body.events) {
    assert.deepEqual(Object.keys(e).sort(), ["data", "id", "timestamp", "type"]);
    assert.match(e.type, /^mp\.connection\./);
  }
});

Deno.test("mp-deliver-events: bad input is 400 invalid_request and changes nothing", async () => {
  const before = await adminDb()`select md5(string_agg(t::text, ',' order by pos)) as s
    from mp_event_outbox t`;
  for (
    const body of [
      { limit: 0 },
      { limit: 1001 },
      { limit: "5" },
      { limit: 1.5 },
      { x: 1 },
      "[]",
      { chain: 0 },
      { chain: 31 },
      { chain: "1" },
      { chain: 1.5 },
      { limit: 10, chain: null },
    ]
  ) {
    const res = await call("mp-deliver-events", body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(res.body.error.code, "invalid_request");
  }
  // A successor's link travels in a header (the body stays the contract's): 1–30 only.
  for (const chain of ["0", "31", "-1", "1.5", "x", "", "1 2", "0001"]) {
    const res = await call("mp-deliver-events", {}, { headers: { "x-mp-delivery-chain": chain } });
    assert.equal(res.status, 400, JSON.stringify(chain));
    assert.equal(res.body.error.code, "invalid_request");
  }
  assert.equal((await call("mp-deliver-events", "{not json")).status, 400);
  assert.equal((await call("mp-deliver-events", {}, { key: null })).status, 401);
  const after = await adminDb()`select md5(string_agg(t::text, ',' order by pos)) as s
    from mp_event_outbox t`;
  assert.equal(after[0].s, before[0].s);
});

Deno.test("retention: delivered events after 30 days, failed after 90, recent ones kept", async () => {
  const { accountId } = await provisionedPair();
  const ids = (await outbox(accountId)).map((r) => r.id);
  const mk = async (status: string, days: number) => {
    const [row] = await adminDb()`insert into mp_event_outbox (account_id, seq, type, payload,
        status, delivered_at, failed_at, created_at)
      values (${accountId}, 100, 'mp.connection.connected', '{}'::jsonb, ${status},
        case when ${status} = 'delivered' then now() - make_interval(days => ${days}) end,
        case when ${status} = 'failed' then now() - make_interval(days => ${days}) end,
        now() - make_interval(days => ${days}))
      returning id`;
    return row.id as string;
  };
  const oldDelivered = await mk("delivered", 31);
  const newDelivered = await mk("delivered", 29);
  const oldFailed = await mk("failed", 91);
  const newFailed = await mk("failed", 89);
  const [pruned] = await adminDb()`select * from mp_prune_retention()`;
  assert.ok(Number(pruned.events_delivered) >= 1);
  assert.ok(Number(pruned.events_failed) >= 1);
  const left = (await adminDb()`select id from mp_event_outbox where account_id = ${accountId}`)
    .map((r) => r.id);
  assert.ok(!left.includes(oldDelivered) && !left.includes(oldFailed));
  for (const id of [newDelivered, newFailed, ...ids]) assert.ok(left.includes(id));
});

// ---- bursts: parallel runs and the runs' own successors (docs/events.md, "Bursts") ----

/** `perAccount` events for each of `accounts` new accounts, as the triggers shape them, due now. */
async function seedEvents(accounts: number, perAccount: number): Promise<string[]> {
  const ids = Array.from({ length: accounts }, () => crypto.randomUUID());
  await adminDb()`
    insert into mp_event_outbox (account_id, seq, type, payload)
    select a.id, s.seq, 'mp.connection.at_risk',
           mp_event_payload('mp.connection.at_risk', now(), a.id, null, null, 'at_risk',
             'refresh_unconfirmed', null, s.seq)
      from unnest(${ids}::uuid[]) a(id)
     cross join generate_series(1, ${perAccount}::int) s(seq)
     order by s.seq, a.id`;
  return ids;
}

/** Per account, the event seqs in the order the receiver got them (first receipt of each id). */
async function receiptOrder(accounts: string[]): Promise<Map<string, number[]>> {
  const rows = await adminDb()`select id, account_id, seq from mp_event_outbox
    where account_id = any (${accounts}::uuid[])`;
  const byId = new Map(rows.map((r: any) => [r.id, r]));
  const order = new Map<string, number[]>(accounts.map((a) => [a, []]));
  const seen = new Set<string>();
  for (const d of receiver.deliveries) {
    const row: any = byId.get(d.id);
    if (!row || seen.has(d.id)) continue;
    seen.add(d.id);
    order.get(row.account_id)!.push(Number(row.seq));
  }
  return order;
}

async function allDelivered(accounts: string[]): Promise<boolean> {
  const [{ n }] = await adminDb()`select count(*)::int as n from mp_event_outbox
    where account_id = any (${accounts}::uuid[]) and status <> 'delivered'`;
  return n === 0;
}

Deno.test("delivery: parallel runs deliver every event, in order per account", async () => {
  startReceiver();
  receiver.mode = "ok";
  await parkOthers([]);
  const accounts = await seedEvents(30, 5);
  await parkOthers(accounts);
  // Six runs at once, again and again, each claiming small batches: they race for the same
  // accounts' oldest events under the lease.
  await eventually(async () => {
    await Promise.all(Array.from({ length: 6 }, () => deliver({ limit: 7 })));
    return await allDelivered(accounts);
  }, 30_000);
  const order = await receiptOrder(accounts);
  for (const [account, seqs] of order) {
    assert.deepEqual(seqs, [1, 2, 3, 4, 5], `account ${account}: received in order`);
  }
  const ids = (await adminDb()`select id from mp_event_outbox
    where account_id = any (${accounts}::uuid[])`).map((r: any) => r.id);
  const sent = new Set(receiver.deliveries.filter((d) => ids.includes(d.id)).map((d) => d.id));
  assert.equal(sent.size, ids.length, "every event sent");
});

Deno.test("delivery: a full run starts successors of itself that drain a backlog, in order", async () => {
  startReceiver();
  receiver.mode = "ok";
  await parkOthers([]);
  const accounts = await seedEvents(40, 3);
  await parkOthers(accounts);
  // One scheduled-like run of 5: it is full, so it starts lanes (chain 1, 2, …) that go on
  // without any further call until nothing is due.
  const report = await deliver({ limit: 5 });
  assert.equal(report.delivered, 5, JSON.stringify(report));
  assert.ok(report.continued >= 1 && report.continued <= 4, JSON.stringify(report));
  await eventually(() => allDelivered(accounts), 60_000);
  for (const [account, seqs] of await receiptOrder(accounts)) {
    assert.deepEqual(seqs, [1, 2, 3], `account ${account}: received in order`);
  }
  // The chain's last link starts nothing; a drained run neither.
  const more = await seedEvents(5, 1);
  await parkOthers(more);
  const last = await deliver({ limit: 1 }, 30);
  assert.equal(last.continued, 0, JSON.stringify(last));
  await parkOthers([]);
  const idle = await deliver({});
  assert.equal(idle.continued, 0);
});

/** After every test of this file: held requests let go, the receiver stopped, the pools closed. */
Deno.test.afterAll(async () => {
  for (const r of hangs) r(undefined);
  await server?.shutdown();
  await closeDbs();
});
