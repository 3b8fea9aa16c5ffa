/**
 * A burst of events to the platform (docs/events.md, "Bursts"): 100,000 events
 * inserted straight into the Admin outbox as the triggers write them (`mp_event_payload`),
 * over 50,000 accounts with two events each — an `at_risk` then a `recovered`, as an outage
 * at MercadoPago and its end would write them; the second event of an account waits for the
 * first, so the burst is two rounds of 50,000 accounts, not 100,000 independent events.
 * A receiver on the gateway's port + 7 (the test profile's PLATFORM_WEBHOOK_URL) answers
 * every delivery after 50 ms, checks that no account's `recovered` arrives before its
 * `at_risk` was acknowledged, and verifies a sample of the signatures with the
 * `standardwebhooks` library. Delivery is triggered as production triggers it: one
 * scheduled-like `POST mp-deliver-events {}`, then the runs' own successors (lanes); should
 * the chains end before the outbox is drained, another scheduled-like run every 60 s, as
 * pg_cron would. Measured: the time until all are delivered, and per invocation (every run,
 * the successors included, from the gateway's "Edge request" lines) CPU, wall and peak heap.
 * The other benches' pending events are parked meanwhile and put back afterwards.
 * `BENCH_EVENTS` sets the size (`--quick`: 2,000).
 *
 * On its own: `deno run -A bench/events.ts [<state dir>]` against a running test-profile stack
 * (e.g. one started with local/launch.ts); nothing else may listen on the gateway's port + 7.
 */
import { Webhook } from "standardwebhooks";
import type { Bench, BenchRow } from "./types.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { costRows, type Invocation, invoke, LIMITS } from "./scale.ts";

/** The bench's accounts: ids `${ACCOUNT_PREFIX}<12 hex>`, so they are found and removed. */
const ACCOUNT_PREFIX = "e7e7e7e7-0000-4000-8000-";
const EVENTS = 100_000;
const QUICK_EVENTS = 2_000;
const PER_ACCOUNT = 2;
const ANSWER_MS = 50;
/** The target for the whole burst (docs/events.md, "Bursts"). */
const TARGET_S = 15 * 60;
/** Every this many deliveries, one signature is verified with the library. */
const VERIFY_EVERY = 500;
/** What pg_cron's schedule would do: a root run every minute. */
const CRON_MS = 60_000;

/** What the receiver saw. */
interface Received {
  deliveries: number;
  acked: Set<string>;
  /** Accounts whose first event is acknowledged. */
  firstAcked: Set<string>;
  outOfOrder: number;
  verified: number;
  sampled: number;
}

function startReceiver(port: number, secret: string, received: Received): Deno.HttpServer {
  const hook = new Webhook(secret);
  return Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
    const body = await req.text();
    const n = ++received.deliveries;
    const event = JSON.parse(body) as { type: string; data: { account_id: string } };
    const account = event.data.account_id;
    if (event.type === "mp.connection.recovered" && !received.firstAcked.has(account)) {
      received.outOfOrder++;
    }
    if (n % VERIFY_EVERY === 1) {
      received.sampled++;
      try {
        hook.verify(body, Object.fromEntries(req.headers));
        received.verified++;
      } catch { /* counted as not verified */ }
    }
    await new Promise((r) => setTimeout(r, ANSWER_MS));
    received.acked.add(req.headers.get("webhook-id") ?? "");
    if (event.type === "mp.connection.at_risk") received.firstAcked.add(account);
    return Response.json({ ok: true });
  });
}

/** Inserts `events` outbox rows over `events / PER_ACCOUNT` accounts, shaped as the triggers write them. */
async function seedBurst(admin: Sql, events: number): Promise<void> {
  const accounts = events / PER_ACCOUNT;
  await admin`
    insert into mp_event_outbox (account_id, seq, type, payload)
    select a.id, e.seq, e.type,
           mp_event_payload(e.type, now(), a.id, gen_random_uuid(), 900000000 + a.n,
             e.state, e.reason, e.deadline, 3)
      from (select n, (${ACCOUNT_PREFIX} || lpad(to_hex(n), 12, '0'))::uuid as id
              from generate_series(1, ${accounts}::int) n) a
     cross join (values
       (1, 'mp.connection.at_risk', 'at_risk', 'refresh_unconfirmed', now() + interval '30 days'),
       (2, 'mp.connection.recovered', 'connected', null, null::timestamptz)
     ) e(seq, type, state, reason, deadline)
     order by e.seq, a.n`;
  await admin`analyze mp_event_outbox`;
}

const mine = (admin: Sql) =>
  admin`account_id >= ${ACCOUNT_PREFIX + "000000000000"}::uuid
    and account_id <= ${ACCOUNT_PREFIX + "ffffffffffff"}::uuid`;

async function deliveredCount(admin: Sql): Promise<number> {
  const [{ n }] = await admin<{ n: number }[]>`select count(*)::int as n from mp_event_outbox
    where status = 'delivered' and ${mine(admin)}`;
  return n;
}

/** The gateway's "Edge request" lines of mp-deliver-events written after byte `from`. */
async function deliveryRuns(logFile: string, from: number): Promise<Invocation[]> {
  const text = new TextDecoder().decode((await Deno.readFile(logFile)).subarray(from));
  const runs: Invocation[] = [];
  for (const line of text.split("\n")) {
    if (!line.includes('"Edge request"') || !line.includes('"mp-deliver-events"')) continue;
    try {
      const l = JSON.parse(line);
      runs.push({
        status: l.status,
        body: {},
        cpuMs: l.cpu_ms,
        heapMb: l.heap_mb,
        wallMs: l.wall_ms,
        isolate: l.isolate,
      });
    } catch { /* a line cut by another writer */ }
  }
  return runs;
}

/** The most chain links and successors the runs logged (`Delivery continued` lines). */
async function chains(logFile: string, from: number) {
  const text = new TextDecoder().decode((await Deno.readFile(logFile)).subarray(from));
  let depth = 0;
  let successors = 0;
  for (const line of text.split("\n")) {
    if (!line.includes('"Delivery continued"')) continue;
    try {
      const l = JSON.parse(line);
      depth = Math.max(depth, Number(l.chain));
      successors += Number(l.successors);
    } catch { /* ignore */ }
  }
  return { depth, successors };
}

/** The events section of `deno task bench`. */
/**
 * Plays the schedule until the burst is delivered (or twice the target has passed): a root run
 * through the gateway every `CRON_MS`, its successors started by the runs themselves.
 */
async function driveBurst(
  env: Record<string, string>,
  logFile: string,
  admin: Sql,
  events: number,
): Promise<{ seconds: number; delivered: number; roots: Invocation[] }> {
  const started = performance.now();
  const roots: Invocation[] = [];
  let delivered = 0;
  let lastRoot = -Infinity;
  while (delivered < events && performance.now() - started < 2 * TARGET_S * 1000) {
    if (performance.now() - lastRoot >= CRON_MS) {
      lastRoot = performance.now();
      const root = await invoke(env, logFile, "mp-deliver-events", {});
      if (root.status !== 200) throw new Error(`mp-deliver-events answered ${root.status}`);
      roots.push(root);
    }
    await new Promise((r) => setTimeout(r, 500));
    delivered = await deliveredCount(admin);
  }
  return { seconds: (performance.now() - started) / 1000, delivered, roots };
}

/** Every delivery run logged since `from`, once the last ones answered and no lease is live. */
async function settledRuns(logFile: string, from: number, admin: Sql): Promise<Invocation[]> {
  let runs: Invocation[] = [];
  for (let i = 0, seen = -1; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    runs = await deliveryRuns(logFile, from);
    const [{ leased }] = await admin<{ leased: number }[]>`select count(*)::int as leased
      from mp_event_outbox where status = 'pending' and lease_until > now()`;
    if (leased === 0 && runs.length === seen) break;
    seen = runs.length;
  }
  return runs;
}

export const eventsBench: Bench = async (env) => {
  const events = Number(env.BENCH_EVENTS ?? (env.BENCH_QUICK === "1" ? QUICK_EVENTS : EVENTS));
  const logFile = `${env.BENCH_LOG_DIR ?? ".local/dev"}/stack.log`;
  const admin = connect(env.ADMIN_DB_URL, { max: 2 });
  const backend = connect(env.BACKEND_DB_URL, { max: 1 });
  const received: Received = {
    deliveries: 0,
    acked: new Set(),
    firstAcked: new Set(),
    outOfOrder: 0,
    verified: 0,
    sampled: 0,
  };
  const secret = env.PLATFORM_WEBHOOK_SECRETS.split(" ")[0];
  const server = startReceiver(Number(env.GATEWAY_PORT) + 7, secret, received);
  let parked: string[] = [];
  let paused = false;
  try {
    // The bench plays the schedule itself (deno task bench pauses every job anyway).
    paused = (await backend`update cron.job set active = false
      where jobname = 'mp-deliver-events' and active returning jobname`).length > 0;
    // The other benches' pending events wait meanwhile (they are put back afterwards).
    parked = (await admin<{ id: string }[]>`update mp_event_outbox
        set next_attempt_at = next_attempt_at + interval '1 day'
      where status = 'pending' returning id`).map((r) => r.id);
    await admin`delete from mp_event_outbox where ${mine(admin)}`;
    await seedBurst(admin, events);
    const size = events.toLocaleString("en");
    console.log(`bench: events: ${size} events seeded over ${events / PER_ACCOUNT} accounts`);

    const from = (await Deno.stat(logFile)).size;
    const { seconds, delivered, roots } = await driveBurst(env, logFile, admin, events);
    const runs = await settledRuns(logFile, from, admin);
    const { depth, successors } = await chains(logFile, from);
    const label = `mp-deliver-events: ${size} events inserted into the outbox by SQL (${
      (events / PER_ACCOUNT).toLocaleString("en")
    } accounts × ${PER_ACCOUNT}), receiver answering in ${ANSWER_MS} ms`;
    const rows: BenchRow[] = [
      {
        bench: label,
        metric: "time to deliver all",
        value: `${seconds.toFixed(0)} s (${delivered.toLocaleString("en")} delivered, ${
          (delivered / seconds).toFixed(0)
        } events/s)`,
        baseline: `target ${TARGET_S} s`,
        ratio: `${(seconds / TARGET_S).toFixed(2)}× target`,
        target: `all within ${TARGET_S / 60} min`,
        met: delivered === events && seconds <= TARGET_S,
      },
      {
        bench: label,
        metric: "invocations (scheduled-like roots + successors)",
        value:
          `${runs.length} (${roots.length} roots, ${successors} successors, deepest chain ${depth})`,
        baseline: `${received.deliveries.toLocaleString("en")} POSTs received, ${
          received.acked.size.toLocaleString("en")
        } distinct webhook-ids`,
        ratio: `${(received.deliveries / Math.max(1, delivered)).toFixed(3)} POSTs per event`,
        target: "every event once at least, none out of order",
        met: received.acked.size >= delivered && received.outOfOrder === 0 &&
          runs.every((r) => r.status === 200),
      },
      {
        bench: label,
        metric: "signatures verified by standardwebhooks (sample)",
        value: `${received.verified} of ${received.sampled}`,
        baseline: `1 in ${VERIFY_EVERY}`,
        ratio: "",
        target: "all",
        met: received.sampled > 0 && received.verified === received.sampled,
      },
      ...costRows(`${label}: every run`, runs, LIMITS.cpuMs),
    ];
    return rows;
  } finally {
    await server.shutdown().catch(() => {});
    await admin`delete from mp_event_outbox where ${mine(admin)}`.catch(() => {});
    if (parked.length > 0) {
      await admin`update mp_event_outbox set next_attempt_at = next_attempt_at - interval '1 day'
        where id = any(${pgArray(parked)}::uuid[]) and status = 'pending'`.catch(() => {});
    }
    if (paused) {
      await backend`update cron.job set active = true where jobname = 'mp-deliver-events'`
        .catch(() => {});
    }
    await Promise.all([admin.end({ timeout: 1 }), backend.end({ timeout: 1 })]);
  }
};

if (import.meta.main) {
  const { parseEnvFile } = await import("../local/launch.ts");
  const dir = Deno.args[0] ?? Deno.env.get("STACK_STATE_DIR") ?? ".local/dev";
  const env = parseEnvFile(await Deno.readTextFile(`${dir}/stack.env`));
  const size = Deno.env.get("BENCH_EVENTS");
  const rows = await eventsBench({
    BENCH_LOG_DIR: dir,
    ...env,
    ...(size ? { BENCH_EVENTS: size } : {}),
  });
  const { markdownTable, textTable } = await import("./table.ts");
  console.log(textTable(rows));
  console.log("");
  console.log(markdownTable(rows));
}
