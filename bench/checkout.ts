/**
 * The checkout benchmarks (docs/contract.md, get-mp-config): get-mp-config's fast path under concurrent load against
 * the floor (bench/floor.ts: a bare server doing the same primary-key SELECT), the logged
 * fallback as a ratio to the fast path, and the cold start of every function against a bare
 * `deno serve` of the floor. Each server runs as its own `deno serve` process with the same
 * environment; the load generator runs in this process. `BENCH_QUICK=1` in the environment
 * passed in runs tiny sizes. How each figure is measured: docs/benchmarks.md ("Checkout").
 */
import type { Bench, BenchRow } from "./types.ts";
import { connect, FUNCTION_POOL_MAX, type Sql } from "../shared/platform/db.ts";
import { encryptSecret, importKeyRing } from "../shared/platform/crypto.ts";
import { parseKeyRing } from "../shared/platform/config.ts";
import { functionEntrypoints } from "../local/gateway.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const FLOOR = `${ROOT}bench/floor.ts`;

/** The sizes of one run. */
interface Sizes {
  clients: number;
  concurrency: number;
  warmupMs: number;
  roundMs: number;
  rounds: number;
  coldRuns: number;
}

const FULL: Sizes = {
  clients: 2000,
  concurrency: 32,
  warmupMs: 2000,
  roundMs: 3000,
  rounds: 4,
  coldRuns: 7,
};
const QUICK: Sizes = {
  clients: 50,
  concurrency: 8,
  warmupMs: 200,
  roundMs: 500,
  rounds: 1,
  coldRuns: 1,
};

/** Latencies and counts of one measured load. */
interface Load {
  ok: number;
  bad: number;
  seconds: number;
  latencies: number[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hex = (n: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0"))
    .join("");

/** Sends POSTs of `bodies` with `concurrency` workers for `ms`; `good` judges an answer. */
async function load(
  url: string,
  headers: Record<string, string>,
  bodies: string[],
  concurrency: number,
  ms: number,
  good: (status: number, text: string) => boolean,
): Promise<Load> {
  const client = Deno.createHttpClient({});
  const latencies: number[] = [];
  let ok = 0;
  let bad = 0;
  let next = Math.floor(Math.random() * bodies.length);
  const started = performance.now();
  const end = started + ms;
  const worker = async () => {
    while (performance.now() < end) {
      const body = bodies[next++ % bodies.length];
      const t = performance.now();
      try {
        const res = await fetch(url, { method: "POST", headers, body, client });
        const text = await res.text();
        if (good(res.status, text)) ok++;
        else bad++;
      } catch {
        bad++;
      }
      latencies.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  client.close();
  return { ok, bad, seconds, latencies };
}

function merge(loads: Load[]): Load {
  return {
    ok: loads.reduce((n, l) => n + l.ok, 0),
    bad: loads.reduce((n, l) => n + l.bad, 0),
    seconds: loads.reduce((n, l) => n + l.seconds, 0),
    latencies: loads.flatMap((l) => l.latencies),
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Throughput (answers per second, good or not), p50 and p99 in ms. */
function stats(l: Load) {
  const sorted = [...l.latencies].sort((a, b) => a - b);
  return {
    rps: (l.ok + l.bad) / l.seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    bad: l.bad,
  };
}

/** A `deno serve` child on `port`, stopped by `stop()`. */
function serve(entry: string, port: number, env: Record<string, string>, logFile?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["serve", "-A", "--host", "127.0.0.1", "--port", String(port), entry],
    cwd: ROOT,
    env: { ...env, NO_COLOR: "1" },
    stdin: "null",
    stdout: logFile ? "piped" : "null",
    stderr: logFile ? "piped" : "null",
  }).spawn();
  let pumped: Promise<unknown> = Promise.resolve();
  if (logFile) {
    pumped = (async () => {
      const file = await Deno.open(logFile, { write: true, create: true, truncate: true });
      const copy = async (s: ReadableStream<Uint8Array>) => {
        for await (const chunk of s) await file.write(chunk);
      };
      await Promise.all([copy(child.stdout), copy(child.stderr)]);
      file.close();
    })();
  }
  return {
    /** SIGTERM (deno serve drains open connections), SIGKILL when that takes over 5 s. */
    async stop() {
      const signal = (s: Deno.Signal) => {
        try {
          child.kill(s);
        } catch { /* already gone */ }
      };
      signal("SIGTERM");
      const timer = setTimeout(() => signal("SIGKILL"), 5000);
      await child.status;
      clearTimeout(timer);
      await pumped;
    },
  };
}

/** Waits until `url` answers `good`; throws after 30 s. */
async function ready(url: string, init: () => RequestInit, good: (s: number) => boolean) {
  const client = Deno.createHttpClient({});
  const deadline = Date.now() + 30_000;
  try {
    for (;;) {
      try {
        const res = await fetch(url, { ...init(), client });
        await res.body?.cancel();
        if (good(res.status)) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new Error(`${url} never became ready`);
      await sleep(20);
    }
  } finally {
    client.close();
  }
}

/** Milliseconds from spawning `deno serve entry` to its first answer to `probe`. */
async function coldStart(
  entry: string,
  port: number,
  env: Record<string, string>,
  probe: () => RequestInit,
): Promise<number> {
  const client = Deno.createHttpClient({});
  const url = `http://127.0.0.1:${port}/`;
  const started = performance.now();
  const server = serve(entry, port, env);
  try {
    const deadline = started + 60_000;
    for (;;) {
      try {
        const res = await fetch(url, { ...probe(), client, redirect: "manual" });
        await res.body?.cancel();
        return performance.now() - started;
      } catch {
        if (performance.now() > deadline) throw new Error(`${entry} never answered`);
        await sleep(2);
      }
    }
  } finally {
    await server.stop();
    client.close();
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Modules in the import graph of `entry`: local/remote ES modules and npm packages. */
async function importGraph(entry: string): Promise<{ modules: number; npm: string[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "null",
  }).output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { kind: string; specifier: string }[];
  };
  return {
    modules: info.modules.filter((m) => m.kind !== "npm").length,
    npm: info.modules.filter((m) => m.kind === "npm").map((m) =>
      m.specifier.replace(/^npm:\/?/, "")
    ),
  };
}

/** Seeds `n` synced clients (fast path) and `n` accounts fed to missing clients (fallback). */
async function seed(env: Record<string, string>, n: number, backend: Sql, admin: Sql) {
  const ring = await importKeyRing(parseKeyRing(env.MP_TOKEN_KEYS));
  const expires = new Date(Date.now() + 180 * 86_400_000);
  const fast: string[] = [];
  const fallback: string[] = [];
  const accounts: Record<string, unknown>[] = [];
  const clients: Record<string, unknown>[] = [];
  for (let i = 0; i < 2 * n; i++) {
    const id = crypto.randomUUID();
    const clientId = crypto.randomUUID();
    const token = `APP_USR-bench-${hex(16)}`;
    const publicKey = `APP_USR-pk-bench-${hex(8)}`;
    accounts.push({
      id,
      backend_client_id: clientId,
      mp_connected: true,
      mp_user_id: 9_000_000_000 + i,
      mp_access_token_encrypted: await encryptSecret(ring, id, "access_token", token),
      mp_refresh_token: await encryptSecret(ring, id, "refresh_token", `TG-bench-${hex(16)}`),
      mp_public_key: publicKey,
      mp_expires_in: 15_552_000,
      mp_token_expires_at: expires,
      mp_token_version: 1,
    });
    if (i < n) {
      fast.push(clientId);
      clients.push({
        id: clientId,
        mp_access_token: token,
        mp_public_key: publicKey,
        mp_token_version: 1,
        mp_synced_at: new Date(),
      });
    } else {
      fallback.push(clientId);
    }
  }
  for (let i = 0; i < accounts.length; i += 500) {
    await admin`insert into nv_accounts ${admin(accounts.slice(i, i + 500))}`;
  }
  for (let i = 0; i < clients.length; i += 500) {
    await backend`insert into clients ${backend(clients.slice(i, i + 500))}`;
  }
  return { fast, fallback, accountIds: accounts.map((a) => a.id as string) };
}

const fmt = (n: number, digits = 1) => Number.isFinite(n) ? n.toFixed(digits) : "n/a";
const ratio = (a: number, b: number) => b > 0 ? `${(a / b).toFixed(2)}×` : "n/a";

/** Throughput, latency and wrong answers of one load. */
type LoadStats = ReturnType<typeof stats>;

/**
 * The rows of one load against its baseline (`base.name`): throughput (unless `noThroughput`;
 * a target when `rpsTarget` × the baseline's is asked), p50, p99 (a target when `p99Target` ×
 * the baseline's is asked), and the wrong answers, which must be 0.
 */
function compareRows(
  bench: string,
  got: LoadStats,
  base: {
    stats: LoadStats;
    name: string;
    bad: string;
    rpsTarget?: number;
    p99Target?: number;
    noThroughput?: boolean;
    noBaselineBad?: boolean;
  },
): BenchRow[] {
  const b = base.stats;
  const rows: BenchRow[] = [];
  if (!base.noThroughput) {
    rows.push({
      bench,
      metric: "throughput req/s",
      value: fmt(got.rps, 0),
      baseline: `${fmt(b.rps, 0)} (${base.name})`,
      ratio: ratio(got.rps, b.rps),
      target: base.rpsTarget ? `≥ ${base.rpsTarget}× ${base.name}` : "",
      met: base.rpsTarget ? got.rps >= base.rpsTarget * b.rps : null,
    });
  }
  rows.push(
    {
      bench,
      metric: "p50 ms",
      value: fmt(got.p50, 2),
      baseline: `${fmt(b.p50, 2)} (${base.name})`,
      ratio: ratio(got.p50, b.p50),
      target: "",
      met: null,
    },
    {
      bench,
      metric: "p99 ms",
      value: fmt(got.p99, 2),
      baseline: `${fmt(b.p99, 2)} (${base.name})`,
      ratio: ratio(got.p99, b.p99),
      target: base.p99Target ? `≤ ${base.p99Target}× ${base.name}` : "",
      met: base.p99Target ? got.p99 <= base.p99Target * b.p99 : null,
    },
    {
      bench,
      metric: base.bad,
      value: String(got.bad),
      baseline: base.noBaselineBad ? "" : `${b.bad} (${base.name})`,
      ratio: "",
      target: "0",
      met: got.bad === 0,
    },
  );
  return rows;
}

/** get-mp-config under load vs the floor, the fallback, and every function's cold start. */
export const checkoutBench: Bench = async (env) => {
  const sizes = env.BENCH_QUICK === "1" ? QUICK : FULL;
  const base = Number(env.GATEWAY_PORT) + 10;
  const logDir = `${ROOT}${env.BENCH_LOG_DIR ?? ".local/bench"}`;
  await Deno.mkdir(logDir, { recursive: true });
  const backend = connect(env.BACKEND_DB_URL, { max: 4 });
  const admin = connect(env.ADMIN_DB_URL, { max: 4 });
  const rows: BenchRow[] = [];
  const seeded = await seed(env, sizes.clients, backend, admin);
  try {
    const fnPort = base;
    const floorPort = base + 1;
    const fn = serve(
      `${ROOT}supabase/functions/get-mp-config/index.ts`,
      fnPort,
      env,
      `${logDir}/get-mp-config.log`,
    );
    const floor = serve(FLOOR, floorPort, { ...env, FLOOR_POOL_SIZE: String(FUNCTION_POOL_MAX) });
    try {
      const headers = { apikey: env.SECRET_KEY, "content-type": "application/json" };
      const bodies = (ids: string[]) => ids.map((id) => JSON.stringify({ client_id: id }));
      const fastBodies = bodies(seeded.fast);
      const fallbackBodies = bodies(seeded.fallback);
      const probe = () => ({ method: "POST", headers, body: fastBodies[0] });
      await ready(`http://127.0.0.1:${fnPort}/`, probe, (s) => s === 200);
      await ready(`http://127.0.0.1:${floorPort}/`, probe, (s) => s === 200);

      const fnUrl = `http://127.0.0.1:${fnPort}/`;
      const floorUrl = `http://127.0.0.1:${floorPort}/`;
      const isFast = (s: number, t: string) => s === 200 && t.includes('"source":"fast_path"');
      const isFallback = (s: number, t: string) => s === 200 && t.includes('"source":"fallback"');
      const is200 = (s: number) => s === 200;
      const c = sizes.concurrency;
      await load(floorUrl, headers, fastBodies, c, sizes.warmupMs, is200);
      await load(fnUrl, headers, fastBodies, c, sizes.warmupMs, isFast);
      await load(fnUrl, headers, fallbackBodies, c, sizes.warmupMs, isFallback);
      const floorLoads: Load[] = [];
      const fastLoads: Load[] = [];
      const fallbackLoads: Load[] = [];
      for (let r = 0; r < sizes.rounds; r++) {
        // Alternate which of the two goes first, so drift within a round favours neither.
        const floorRound = () => load(floorUrl, headers, fastBodies, c, sizes.roundMs, is200);
        const fastRound = () => load(fnUrl, headers, fastBodies, c, sizes.roundMs, isFast);
        if (r % 2 === 0) {
          floorLoads.push(await floorRound());
          fastLoads.push(await fastRound());
        } else {
          fastLoads.push(await fastRound());
          floorLoads.push(await floorRound());
        }
        fallbackLoads.push(
          await load(fnUrl, headers, fallbackBodies, c, sizes.roundMs, isFallback),
        );
      }
      rows.push(
        ...compareRows(`get-mp-config fast path (c=${c})`, stats(merge(fastLoads)), {
          stats: stats(merge(floorLoads)),
          name: "floor",
          rpsTarget: 0.9,
          p99Target: 1.5,
          bad: "non-200 (or not fast_path) answers",
        }),
        ...compareRows(`get-mp-config fallback (c=${c})`, stats(merge(fallbackLoads)), {
          stats: stats(merge(fastLoads)),
          name: "fast path",
          bad: "non-200 (or not fallback) answers",
          noBaselineBad: true,
        }),
      );

      // One request at a time, as a hosted isolate serves them: the same two, concurrency 1.
      const serial: { floor: Load[]; fast: Load[] } = { floor: [], fast: [] };
      for (let r = 0; r < sizes.rounds; r++) {
        serial.floor.push(await load(floorUrl, headers, fastBodies, 1, sizes.roundMs, is200));
        serial.fast.push(await load(fnUrl, headers, fastBodies, 1, sizes.roundMs, isFast));
      }
      rows.push(
        ...compareRows(
          "get-mp-config fast path (c=1, one request at a time)",
          stats(merge(serial.fast)),
          {
            stats: stats(merge(serial.floor)),
            name: "floor",
            p99Target: 1.5,
            bad: "non-200 (or not fast_path) answers",
            noThroughput: true,
          },
        ),
      );
    } finally {
      await Promise.all([fn.stop(), floor.stop()]);
    }

    rows.push(...await coldStarts(env, sizes, base + 10, seeded.fast[0]));

    const graph = await importGraph(`${ROOT}supabase/functions/get-mp-config/index.ts`);
    const floorGraph = await importGraph(FLOOR);
    rows.push({
      bench: "get-mp-config import graph",
      metric: "ES modules + npm packages",
      value: `${graph.modules} + ${graph.npm.length} (${graph.npm.join(", ")})`,
      baseline: `${floorGraph.modules} + ${floorGraph.npm.length} (floor)`,
      ratio: "",
      target: "small",
      met: null,
    });
  } finally {
    await backend`delete from clients where id in ${backend(seeded.fast)}`.catch(() => {});
    await admin`delete from mp_credential_events where client_id in ${admin(seeded.fallback)}`
      .catch(() => {});
    await admin`delete from nv_accounts where id in ${admin(seeded.accountIds)}`.catch(() => {});
    await Promise.all([backend.end({ timeout: 1 }), admin.end({ timeout: 1 })]);
  }
  return rows;
};

/** Cold start of the floor and of every function, median of `sizes.coldRuns` fresh processes. */
async function coldStarts(
  env: Record<string, string>,
  sizes: Sizes,
  firstPort: number,
  clientId: string,
): Promise<BenchRow[]> {
  let port = firstPort;
  const nextPort = () => (port = port >= firstPort + 60 ? firstPort : port + 1);
  const fastRequest = () => ({
    method: "POST",
    headers: { apikey: env.SECRET_KEY, "content-type": "application/json" },
    body: JSON.stringify({ client_id: clientId }),
  });
  const anonymous = () => ({ method: "POST", body: "{}" });
  const unauthenticated = (name: string) =>
    name === "mp-oauth-callback" ? () => ({ method: "GET" }) : anonymous;
  // Each entry: [what, module, probe]. The floor answers a GET without touching the database
  // (req.json() throws: a 500), the baseline for the probes that need no database either.
  const entries: [string, string, () => RequestInit][] = [
    ["floor", FLOOR, fastRequest],
    ["floor bare", FLOOR, () => ({ method: "GET" })],
  ];
  for (const [name, url] of await functionEntrypoints()) {
    if (name === "get-mp-config") entries.push([`${name} fast`, url.pathname, fastRequest]);
    entries.push([name, url.pathname, unauthenticated(name)]);
  }
  // One untimed start of each fills the module cache; then the timed starts go round-robin,
  // so a busy moment of the machine hits every entry alike.
  for (const [, entry, probe] of entries) await coldStart(entry, nextPort(), env, probe);
  const times = new Map<string, number[]>(entries.map(([what]) => [what, []]));
  for (let i = 0; i < sizes.coldRuns; i++) {
    for (const [what, entry, probe] of entries) {
      times.get(what)!.push(await coldStart(entry, nextPort(), env, probe));
    }
  }
  const ms = (what: string) => median(times.get(what)!);
  const floorMs = ms("floor");
  const floorBareMs = ms("floor bare");
  const rows: BenchRow[] = [];
  const row = (name: string, what: string, value: number, db: boolean, target: boolean) => {
    const base = db ? floorMs : floorBareMs;
    rows.push({
      bench: `cold start ${name}`,
      metric: `first response ms (${what})`,
      value: fmt(value, 0),
      baseline: `${fmt(base, 0)} (bare serve${db ? ", same SELECT" : ", no database"})`,
      ratio: ratio(value, base),
      target: target ? "≤ 1.5× bare serve" : "",
      met: target ? value <= 1.5 * base : null,
    });
  };
  for (const [name] of await functionEntrypoints()) {
    if (name === "get-mp-config") row(name, "fast path", ms(`${name} fast`), true, true);
    row(name, name === "mp-oauth-callback" ? "302, no state" : "no key", ms(name), false, false);
  }
  return rows;
}
