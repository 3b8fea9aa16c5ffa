/**
 * An event burst produced by state changes (docs/contract.md, "Events to the platform"; docs/events.md,
 * "Bursts"): N due accounts (`BENCH_BURST_ACCOUNTS`, default 50,000; `--quick` 200), each a grant
 * the sandbox issued, whose served tokens expire 7 days and B seconds from the seeding
 * (`BENCH_BURST_OUTAGE_S`, default 60 s + 40 ms per account, at least 420 s: longer than
 * mp-refresh's 5-minute lease, which a run that lost an outcome keeps): due for mp-refresh (within its
 * 60-day window) and outside the 7-day last-resort window for B seconds.
 *
 * 1. **Outage.** MercadoPago answers 500 to every call (the sandbox's
 *    `error_500` fault: refused before processing, so the refresh tokens stay good at
 *    MercadoPago). mp-refresh is called with its scheduled body (`{"limit": 200}`) back to back
 *    — the schedule compressed: each run's breaker stops it after 3 unknown outcomes in a row —
 *    until every account is `at_risk` (`refresh_unconfirmed`), or until B − 30 s have passed.
 * 2. **Recovery.** The fault is cleared. Once the seeded tokens are within 7 days of expiry (B
 *    after the seeding, by the clock: nothing is moved by SQL) each at-risk account gets its one
 *    last-resort refresh; mp-refresh is called back to back until every account is `connected`.
 * 3. Delivery throughout, as production triggers it: mp-refresh delivers in the background of
 *    its answers, and a scheduled-like root `POST mp-deliver-events {}` every 60 s (its
 *    successors started by the runs themselves), until every event is delivered (or 15 minutes
 *    after the recovery, at most).
 *
 * Every event in the bench accounts' outbox is written by the system: the `at_risk` and
 * `recovered` events by mp-refresh's state changes, `expiring` ones by mp-deliver-events once the
 * tokens are within 7 days. Only the seeding's own `connected` events (one per inserted
 * account) are deleted before the outage. A receiver on the gateway's port + 7 (the test
 * profile's PLATFORM_WEBHOOK_URL) answers each delivery after 50 ms and verifies every
 * signature with the `standardwebhooks` library. Reported, with `met` computed: the events
 * produced by type; delivered (distinct webhook-ids acknowledged, the outbox's `delivered`);
 * signatures verified; order per account (each event received only after the account's
 * previous one was acknowledged; `at_risk` before `recovered` for every account); delivery time
 * per event (written → acknowledged) against 15 minutes and the throughput; CPU, wall and heap
 * of every mp-refresh and mp-deliver-events invocation (the gateway's log lines) against the
 * limits of docs/scale.md. The pg_cron jobs are paused while it runs.
 *
 * Since 060eada each application's circuit breaker is persisted (`mp_app_breakers`): once a run's
 * breaker opens, later runs skip the site for 10 minutes (doubling up to 2 hours), then one
 * half-open trial call. So an outage puts about 10 accounts at risk per backoff, by design, and
 * this bench's outage phase (the schedule compressed, runs back to back) no longer puts N
 * accounts at risk within its budget: its first rows then say NO, which is the system working as
 * the contract says, not a delivery failure. A burst of N `at_risk` events now comes only from a
 * site failing for 3 days (`refresh_failing`), which a bench reaches only by moving time in SQL.
 *
 * On its own: `deno run -A bench/burst.ts [<state dir>]` against a running test-profile stack;
 * nothing else may listen on the gateway's port + 7.
 */
import { Webhook } from "standardwebhooks";
import type { Bench, BenchRow } from "./types.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { parseKeyRing } from "../shared/platform/config.ts";
import { encryptSecret, importKeyRing } from "../shared/platform/crypto.ts";
import type { MpGrant as Grant } from "../local/sandbox.ts";
import { sandboxControl } from "./refresh.ts";
import { costRows, type Invocation, LIMITS } from "./scale.ts";

/** The bench's accounts and clients: ids `<prefix><12 hex>`, so they are found and removed. */
const ACCOUNT_PREFIX = "b0b0b0b0-acc0-4000-8000-";
const CLIENT_PREFIX = "b0b0b0b0-c11e-4000-8000-";
const ACCOUNTS = 50_000;
const QUICK_ACCOUNTS = 200;
/** mp-refresh's scheduled body (shared/schedules/jobs.ts). */
const REFRESH_BODY = { limit: 200 };
const ANSWER_MS = 50;
/** The bar: each event delivered within 15 minutes (docs/events.md, "Bursts"). */
const TARGET_S = 15 * 60;
/** What pg_cron's schedule would do: a delivery root run every minute. */
const CRON_MS = 60_000;
const DAY_MS = 86_400_000;
const GRANTS_PER_CALL = 10_000;
const INSERT_CHUNK = 500;
/**
 * The shortest outage budget: longer than mp-refresh's 5-minute lease, so an account whose run
 * lost its outcome (a database timeout) is flagged or claimed again before the window opens.
 */
const OUTAGE_MIN_S = 420;

const idOf = (prefix: string, n: number) => prefix + n.toString(16).padStart(12, "0");
const mine = (sql: Sql, column = "id") =>
  sql`${sql(column)} between ${idOf(ACCOUNT_PREFIX, 0)}::uuid
    and ${idOf(ACCOUNT_PREFIX, 0xffffffffffff)}::uuid`;

/** One event as the receiver saw it: when first received and first acknowledged (a shared counter). */
interface Receipt {
  account: string;
  type: string;
  received: number;
  acked: number;
  ackedAt: number;
}

/** What the receiver saw. */
interface Received {
  deliveries: number;
  verified: number;
  unverified: number;
  byId: Map<string, Receipt>;
  tick: number;
}

function startReceiver(port: number, secret: string, got: Received): Deno.HttpServer {
  const hook = new Webhook(secret);
  return Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
    const body = await req.text();
    got.deliveries++;
    const id = req.headers.get("webhook-id") ?? "";
    try {
      hook.verify(body, Object.fromEntries(req.headers));
      got.verified++;
    } catch {
      got.unverified++;
      return new Response("bad signature", { status: 401 });
    }
    const event = JSON.parse(body) as { type: string; data: { account_id: string } };
    let receipt = got.byId.get(id);
    if (!receipt) {
      receipt = {
        account: event.data.account_id,
        type: event.type,
        received: ++got.tick,
        acked: 0,
        ackedAt: 0,
      };
      got.byId.set(id, receipt);
    }
    await new Promise((r) => setTimeout(r, ANSWER_MS));
    if (!receipt.acked) {
      receipt.acked = ++got.tick;
      receipt.ackedAt = Date.now();
    }
    return Response.json({ ok: true });
  });
}

/** Seeds `n` connected accounts from sandbox grants, their tokens expiring at `expires`. */
async function seedAccounts(
  env: Record<string, string>,
  admin: Sql,
  backend: Sql,
  n: number,
  expires: Date,
): Promise<void> {
  const ring = await importKeyRing(parseKeyRing(env.MP_TOKEN_KEYS));
  for (let start = 0; start < n; start += GRANTS_PER_CALL) {
    const count = Math.min(GRANTS_PER_CALL, n - start);
    const { grants } = (await sandboxControl(env, "grants", { count })) as { grants: Grant[] };
    for (let i = 0; i < grants.length; i += INSERT_CHUNK) {
      const rows = await Promise.all(
        grants.slice(i, i + INSERT_CHUNK).map(async (g, k) => {
          const id = idOf(ACCOUNT_PREFIX, start + i + k);
          return {
            id,
            backend_client_id: idOf(CLIENT_PREFIX, start + i + k),
            mp_connected: true,
            mp_user_id: g.user_id,
            mp_access_token_encrypted: await encryptSecret(
              ring,
              id,
              "access_token",
              g.access_token,
            ),
            mp_refresh_token: await encryptSecret(ring, id, "refresh_token", g.refresh_token),
            mp_public_key: g.public_key,
            mp_expires_in: g.expires_in,
            mp_token_expires_at: expires,
            mp_live_mode: g.live_mode,
            mp_scope: g.scope,
            mp_token_version: 1,
          };
        }),
      );
      await backend`insert into clients (id) select unnest(${
        pgArray(rows.map((r) => r.backend_client_id))
      }::uuid[])`;
      await admin`insert into nv_accounts ${admin(rows)}`;
    }
  }
}

async function clearAccounts(admin: Sql, backend: Sql): Promise<void> {
  await admin`delete from mp_event_outbox where ${mine(admin, "account_id")}`;
  await admin`delete from mp_credential_events where ${mine(admin, "account_id")}`;
  await admin`delete from nv_accounts where ${mine(admin)}`;
  await backend`delete from clients where id between ${idOf(CLIENT_PREFIX, 0)}::uuid
    and ${idOf(CLIENT_PREFIX, 0xffffffffffff)}::uuid`;
}

/** The bench accounts per connection state. */
async function states(admin: Sql): Promise<Record<string, number>> {
  const rows = await admin<{ state: string; n: number }[]>`
    select mp_state as state, count(*)::int as n from nv_accounts where ${mine(admin)}
     group by mp_state`;
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

/** The bench accounts a refresh run holds a live lease on (a run that lost its outcome keeps it). */
async function leased(admin: Sql): Promise<number> {
  const [{ n }] = await admin<{ n: number }[]>`select count(*)::int as n from nv_accounts
    where ${mine(admin)} and mp_refresh_lease_expires_at > now()`;
  return n;
}

/** The bench accounts' events not yet delivered (pending or failed). */
async function undelivered(admin: Sql): Promise<number> {
  const [{ n }] = await admin<{ n: number }[]>`select count(*)::int as n from mp_event_outbox
    where status <> 'delivered' and ${mine(admin, "account_id")}`;
  return n;
}

/** The sandbox's counters (`GET /__sandbox/stats`): what MercadoPago was asked and answered. */
interface SandboxStats {
  token_calls: number;
  refreshes: number;
  refresh_token_reuse: number;
  users_me_calls: number;
}

async function sandboxStats(env: Record<string, string>): Promise<SandboxStats> {
  const res = await fetch(`${env.SANDBOX_URL}/__sandbox/stats`);
  if (!res.ok) throw new Error(`sandbox stats: ${res.status}`);
  return await res.json();
}

/** Calls a function through the gateway (its cost is read from the gateway's log afterwards). */
async function call(env: Record<string, string>, name: string, body: unknown) {
  const res = await fetch(`${env.FUNCTIONS_URL}/${name}`, {
    method: "POST",
    headers: { apikey: env.SECRET_KEY, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => ({})) };
}

/** The gateway's "Edge request" lines of function `name` written after byte `from`. */
async function edgeRuns(logFile: string, from: number, name: string): Promise<Invocation[]> {
  const text = new TextDecoder().decode((await Deno.readFile(logFile)).subarray(from));
  const runs: Invocation[] = [];
  for (const line of text.split("\n")) {
    if (!line.includes('"Edge request"') || !line.includes(`"${name}"`)) continue;
    try {
      const l = JSON.parse(line);
      if (l.msg !== "Edge request" || l.function !== name) continue;
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

/** An event of the bench accounts as the outbox holds it after the run. */
interface OutboxEvent {
  id: string;
  account_id: string;
  seq: number;
  type: string;
  created_ms: number;
  status: string;
}

/** What the events came to, for {@link burstVerdict}. */
export interface BurstOutcome {
  accounts: number;
  /** Accounts that became at_risk during the outage / connected after the recovery. */
  atRisk: number;
  connected: number;
  produced: number;
  byType: Record<string, number>;
  /** Distinct events acknowledged by the receiver / marked delivered in the outbox. */
  acked: number;
  delivered: number;
  verified: number;
  deliveries: number;
  /** Events received before the account's previous event was acknowledged. */
  outOfOrder: number;
  /** Accounts whose at_risk was not acknowledged before their recovered was received. */
  recoveredFirst: number;
  /** Accounts with both an at_risk and a recovered event. */
  pairs: number;
  /** The longest time from an event's writing to its acknowledgement, in seconds. */
  maxDelayS: number;
}

/**
 * Whether the burst met the bars: every account at risk then connected again, every event
 * produced acknowledged and delivered, every delivery's signature verified, every account's
 * events in order (at_risk before recovered), each within 15 minutes of being written. Pure.
 */
export function burstVerdict(o: BurstOutcome) {
  return {
    produced: o.atRisk === o.accounts && o.connected === o.accounts &&
      (o.byType["mp.connection.at_risk"] ?? 0) === o.accounts &&
      (o.byType["mp.connection.recovered"] ?? 0) === o.accounts,
    delivered: o.produced > 0 && o.acked === o.produced && o.delivered === o.produced,
    verified: o.deliveries > 0 && o.verified === o.deliveries,
    ordered: o.outOfOrder === 0 && o.recoveredFirst === 0 && o.pairs === o.accounts,
    onTime: o.maxDelayS <= TARGET_S,
  };
}

/** Order per account from the receipts: each event received after the previous one's ack. */
function orderOf(events: OutboxEvent[], got: Received) {
  const byAccount = new Map<string, OutboxEvent[]>();
  for (const e of events) {
    const list = byAccount.get(e.account_id) ?? [];
    list.push(e);
    byAccount.set(e.account_id, list);
  }
  let outOfOrder = 0;
  let recoveredFirst = 0;
  let pairs = 0;
  for (const list of byAccount.values()) {
    list.sort((a, b) => a.seq - b.seq);
    for (let i = 1; i < list.length; i++) {
      const prev = got.byId.get(list[i - 1].id);
      const next = got.byId.get(list[i].id);
      if (prev && next && next.received < prev.acked) outOfOrder++;
    }
    const risk = list.find((e) => e.type === "mp.connection.at_risk");
    const back = list.find((e) => e.type === "mp.connection.recovered");
    if (risk && back) {
      pairs++;
      const r = got.byId.get(risk.id);
      const b = got.byId.get(back.id);
      if (!r || !b || b.received < r.acked || back.seq < risk.seq) recoveredFirst++;
    }
  }
  return { outOfOrder, recoveredFirst, pairs };
}

/** The burst section of `deno task bench`. */
export const burstBench: Bench = async (env) => {
  const quick = env.BENCH_QUICK === "1";
  const accounts = Number(
    Deno.env.get("BENCH_BURST_ACCOUNTS") ?? env.BENCH_BURST_ACCOUNTS ??
      (quick ? QUICK_ACCOUNTS : ACCOUNTS),
  );
  const outageS = Number(
    Deno.env.get("BENCH_BURST_OUTAGE_S") ?? env.BENCH_BURST_OUTAGE_S ??
      Math.max(OUTAGE_MIN_S, Math.round(60 + accounts * 0.04)),
  );
  if (!(Number.isInteger(accounts) && accounts > 0 && outageS >= 60)) {
    throw new Error("burst: BENCH_BURST_ACCOUNTS > 0 and BENCH_BURST_OUTAGE_S ≥ 60");
  }
  const logFile = `${env.BENCH_LOG_DIR ?? ".local/dev"}/stack.log`;
  const admin = connect(env.ADMIN_DB_URL, { max: 3, timeoutMs: 600_000 });
  const backend = connect(env.BACKEND_DB_URL, { max: 2, timeoutMs: 600_000 });
  const got: Received = { deliveries: 0, verified: 0, unverified: 0, byId: new Map(), tick: 0 };
  const secret = env.PLATFORM_WEBHOOK_SECRETS.split(" ")[0];
  const server = startReceiver(Number(env.GATEWAY_PORT) + 7, secret, got);
  const size = accounts.toLocaleString("en");
  let paused: string[] = [];
  try {
    paused = (await backend<{ jobname: string }[]>`update cron.job set active = false
      where active returning jobname`).map((r) => r.jobname);
    await sandboxControl(env, "reset", {});
    await clearAccounts(admin, backend);
    const seededAt = Date.now();
    // Due for mp-refresh; inside the 7-day last-resort window only `outageS` from now.
    const expires = new Date(seededAt + 7 * DAY_MS + outageS * 1000);
    await seedAccounts(env, admin, backend, accounts, expires);
    await admin`delete from mp_event_outbox where ${mine(admin, "account_id")}`;
    await admin`vacuum analyze nv_accounts`;
    console.log(
      `bench: burst: seeded ${size} accounts in ${((Date.now() - seededAt) / 1000).toFixed(0)} s`,
    );
    const from = (await Deno.stat(logFile)).size;
    let lastRoot = -Infinity;
    let roots = 0;
    const deliverIfDue = async () => {
      if (performance.now() - lastRoot < CRON_MS) return;
      lastRoot = performance.now();
      const root = await call(env, "mp-deliver-events", {});
      if (root.status !== 200) throw new Error(`mp-deliver-events answered ${root.status}`);
      roots++;
    };

    // 1. Outage: every token call answers 500 until every account is at risk.
    const atStart = await sandboxStats(env);
    await sandboxControl(env, "faults", { mode: "error_500", count: 1_000_000_000 });
    const outageStarted = performance.now();
    const outageEnd = seededAt + (outageS - 30) * 1000;
    let outageRuns = 0;
    let unavailable = 0;
    let atRisk = 0;
    let answeredAtRisk = 0;
    while (Date.now() < outageEnd) {
      const run = await call(env, "mp-refresh", REFRESH_BODY);
      outageRuns++;
      if (run.status === 503) unavailable++;
      else if (run.status !== 200) throw new Error(`mp-refresh answered ${run.status}`);
      else {
        answeredAtRisk += (run.body.results as { status: string }[])
          .filter((r) => r.status === "at_risk").length;
      }
      await deliverIfDue();
      const idle = run.status === 200 && run.body.claimed === 0;
      if (answeredAtRisk >= accounts || outageRuns % 50 === 0 || idle) {
        atRisk = (await states(admin)).at_risk ?? 0;
        if (atRisk >= accounts) break;
      }
      if (idle) {
        // What is left is leased by runs that lost an outcome (a database timeout): its lease
        // runs out (5 minutes) and the next run flags or claims it.
        if ((await leased(admin)) === 0) break;
        await new Promise((r) => setTimeout(r, 5000));
      }
    }
    atRisk = (await states(admin)).at_risk ?? 0;
    const outageSeconds = (performance.now() - outageStarted) / 1000;
    await sandboxControl(env, "faults", { mode: "none" });
    const atRecovery = await sandboxStats(env);
    console.log(
      `bench: burst: ${atRisk} at risk after ${outageRuns} mp-refresh runs (${
        outageSeconds.toFixed(0)
      } s)`,
    );

    // 2. Recovery, once the tokens are within the last-resort window (by the clock).
    while (Date.now() < seededAt + outageS * 1000 + 2000) {
      await deliverIfDue();
      await new Promise((r) => setTimeout(r, 1000));
    }
    const recoveryStarted = performance.now();
    let recoveryRuns = 0;
    let connected = 0;
    // Bounded by time, not runs: an account whose run lost its answer (a database timeout) waits
    // out its 5-minute lease before a run claims it again.
    const recoveryEnd = performance.now() + Math.max(900, accounts * 0.06) * 1000;
    while (performance.now() < recoveryEnd) {
      const run = await call(env, "mp-refresh", REFRESH_BODY);
      recoveryRuns++;
      if (run.status === 503) unavailable++;
      else if (run.status !== 200) throw new Error(`mp-refresh answered ${run.status}`);
      await deliverIfDue();
      connected = (await states(admin)).connected ?? 0;
      if (connected >= accounts) break;
      if (run.status === 200 && run.body.claimed === 0) {
        if ((await leased(admin)) === 0) break;
        await new Promise((r) => setTimeout(r, 5000));
      }
    }
    const recoverySeconds = (performance.now() - recoveryStarted) / 1000;
    const atEnd = await sandboxStats(env);
    const mp = (a: SandboxStats, b: SandboxStats) =>
      `${b.token_calls - a.token_calls} token calls, ${b.refreshes - a.refreshes} refreshed, ` +
      `${b.refresh_token_reuse - a.refresh_token_reuse} refresh tokens reused, ` +
      `${b.users_me_calls - a.users_me_calls} /users/me`;
    console.log(
      `bench: burst: ${connected} connected after ${recoveryRuns} mp-refresh runs (${
        recoverySeconds.toFixed(0)
      } s)`,
    );

    // 3. Delivery of what is left, by the schedule (and the runs' successors).
    const drainUntil = performance.now() + TARGET_S * 1000;
    while ((await undelivered(admin)) > 0 && performance.now() < drainUntil) {
      await deliverIfDue();
      await new Promise((r) => setTimeout(r, 1000));
    }
    // Let the last runs answer and log.
    for (let i = 0, seen = -1; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const n = (await edgeRuns(logFile, from, "mp-deliver-events")).length;
      const [{ leased }] = await admin<{ leased: number }[]>`select count(*)::int as leased
        from mp_event_outbox where status = 'pending' and lease_until > now()`;
      if (leased === 0 && n === seen) break;
      seen = n;
    }
    const allSeconds = (performance.now() - outageStarted) / 1000;

    const events = await admin<OutboxEvent[]>`
      select id::text, account_id::text, seq::int, type, status,
             (extract(epoch from created_at) * 1000)::float8 as created_ms
        from mp_event_outbox where ${mine(admin, "account_id")}`;
    const byType: Record<string, number> = {};
    for (const e of events) byType[e.type] = (byType[e.type] ?? 0) + 1;
    const delays = events.flatMap((e) => {
      const r = got.byId.get(e.id);
      return r?.ackedAt ? [(r.ackedAt - e.created_ms) / 1000] : [];
    }).sort((a, b) => a - b);
    const order = orderOf(events, got);
    const outcome: BurstOutcome = {
      accounts,
      atRisk,
      connected,
      produced: events.length,
      byType,
      acked: events.filter((e) => got.byId.get(e.id)?.acked).length,
      delivered: events.filter((e) => e.status === "delivered").length,
      verified: got.verified,
      deliveries: got.deliveries,
      ...order,
      maxDelayS: delays.length ? delays[delays.length - 1] : Infinity,
    };
    const v = burstVerdict(outcome);
    const refreshRuns = await edgeRuns(logFile, from, "mp-refresh");
    const deliverRuns = await edgeRuns(logFile, from, "mp-deliver-events");
    const label = `${size} due accounts, MercadoPago answering 500 to every call (sandbox ` +
      `error_500) then recovering; mp-refresh {"limit":200} back to back, mp-deliver-events every ` +
      `60 s and its lanes, receiver answering in ${ANSWER_MS} ms`;
    const types = Object.entries(byType).sort().map(([t, n]) => `${t.slice(14)} ${n}`).join(", ");
    const first = events.reduce((m, e) => Math.min(m, e.created_ms), Infinity);
    const lastAck = [...got.byId.values()].reduce((m, r) => Math.max(m, r.ackedAt), 0);
    const deliverS = (lastAck - first) / 1000;
    const p50 = delays.length ? delays[Math.floor((delays.length - 1) / 2)] : NaN;
    return [
      {
        bench: label,
        metric: "accounts at risk (outage) / connected again (recovery)",
        value: `${atRisk} / ${connected} of ${size}`,
        baseline:
          `outage: ${outageRuns} runs in ${outageSeconds.toFixed(0)} s (MercadoPago: ${
            mp(atStart, atRecovery)
          }); recovery (last resort, tokens within 7 days of expiry ${outageS} s after ` +
          `seeding): ${recoveryRuns} runs in ${recoverySeconds.toFixed(0)} s (MercadoPago: ${
            mp(atRecovery, atEnd)
          }); ${unavailable} answered 503`,
        ratio: "",
        target: "every account at_risk, then connected",
        met: atRisk === accounts && connected === accounts,
      },
      {
        bench: label,
        metric: "events produced by the state changes",
        value: `${events.length.toLocaleString("en")} (${types})`,
        baseline: `${size} accounts × (at_risk + recovered)`,
        ratio: `${(events.length / accounts).toFixed(2)} per account`,
        target: "one at_risk and one recovered per account",
        met: v.produced,
      },
      {
        bench: label,
        metric: "delivered (acknowledged by the receiver / delivered in the outbox)",
        value: `${outcome.acked.toLocaleString("en")} / ${outcome.delivered.toLocaleString("en")}`,
        baseline: `${got.deliveries.toLocaleString("en")} POSTs received; ${roots} ` +
          `scheduled-like roots`,
        ratio: `${(got.deliveries / Math.max(1, outcome.acked)).toFixed(3)} POSTs per event`,
        target: "every event produced",
        met: v.delivered,
      },
      {
        bench: label,
        metric: "signatures verified by standardwebhooks (every delivery)",
        value: `${got.verified.toLocaleString("en")} of ${got.deliveries.toLocaleString("en")}`,
        baseline: "",
        ratio: "",
        target: "all",
        met: v.verified,
      },
      {
        bench: label,
        metric: "order per account (received after the previous event's ack)",
        value: `${order.outOfOrder} out of order; ${order.recoveredFirst} recovered before ` +
          `at_risk's ack`,
        baseline: `${order.pairs.toLocaleString("en")} accounts with at_risk and recovered`,
        ratio: "",
        target: "0, 0, every account",
        met: v.ordered,
      },
      {
        bench: label,
        metric: "delivery time per event, written → acknowledged (p50 / max)",
        value:
          `${p50.toFixed(1)} / ${outcome.maxDelayS.toFixed(1)} s; all in ${
            deliverS.toFixed(0)
          } s from the first written (${(outcome.acked / Math.max(1, deliverS)).toFixed(0)} ` +
          `events/s), ${allSeconds.toFixed(0)} s in all`,
        baseline: `target ${TARGET_S} s`,
        ratio: `${(outcome.maxDelayS / TARGET_S).toFixed(2)}× target`,
        target: `each within ${TARGET_S / 60} min`,
        met: v.onTime,
      },
      ...costRows(`mp-refresh, ${label}`, refreshRuns, LIMITS.cpuMs),
      ...costRows(`mp-deliver-events, ${label}`, deliverRuns, LIMITS.cpuMs),
    ] satisfies BenchRow[];
  } finally {
    await server.shutdown().catch(() => {});
    await sandboxControl(env, "faults", { mode: "none" }).catch(() => {});
    await clearAccounts(admin, backend).catch(() => {});
    // The outage's persisted breaker would keep the next bench's runs off the site: cleared,
    // as the bench's accounts are.
    await admin`delete from mp_app_breakers`.catch(() => {});
    await backend`update cron.job set active = true where jobname = any(${pgArray(paused)})`
      .catch(() => {});
    await Promise.all([admin.end({ timeout: 1 }), backend.end({ timeout: 1 })]);
  }
};

if (import.meta.main) {
  const { parseEnvFile } = await import("../local/launch.ts");
  const dir = Deno.args[0] ?? Deno.env.get("STACK_STATE_DIR") ?? ".local/dev";
  const env = parseEnvFile(await Deno.readTextFile(`${dir}/stack.env`));
  const rows = await burstBench({ BENCH_LOG_DIR: dir, ...env });
  const { markdownTable, textTable } = await import("./table.ts");
  console.log(textTable(rows));
  console.log("");
  console.log(markdownTable(rows));
}
