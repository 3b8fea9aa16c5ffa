/**
 * `deno task bench [--quick] [--only a,b]`: starts its own local stack (ports 30321–30326, or
 * from `STACK_PORT_BASE`; `.local/bench`), runs the benchmarks against it (all, or those
 * `--only` names), prints one table, stores each bench's rows with the run's commit, date and
 * machine in bench/results/bench.json (a bench not run keeps its stored rows) and re-renders
 * bench/RESULTS.md from the stores (bench/results.ts). `--quick` runs tiny sizes (to prove the
 * bench still runs, e.g. in CI) and writes under `.local/bench/` instead. The stack's pg_cron
 * jobs are paused (the benches drive the functions themselves). Nothing here asserts a time:
 * the exit code is 1 only when a benchmark could not run.
 */
import { parseArgs } from "node:util";
import postgres from "postgres";
import { launchStack } from "../local/launch.ts";
import type { Bench, BenchRow } from "./types.ts";
import { textTable } from "./table.ts";
import {
  BENCH_STORE,
  type BenchEntry,
  type BenchRunInfo,
  loadBenchStore,
  mergeBenches,
  RESULTS_FILE,
  writeJson,
  writeResults,
} from "./results.ts";

import { checkoutBench } from "./checkout.ts";
import { refreshBench } from "./refresh.ts";
import { backfillBench } from "./backfill.ts";
import { scaleBench } from "./scale.ts";
import { eventsBench } from "./events.ts";
import { CHAOS_STACK_ENV, chaosBench } from "./chaos.ts";
import { SITES_STACK_ENV, sitesBench } from "./sites.ts";
import { burstBench } from "./burst.ts";
import { probeBench } from "./probe.ts";

const ROOT = new URL("../", import.meta.url).pathname;
// `STACK_STATE_DIR` moves the state folder (as `STACK_PORT_BASE` moves the ports).
const STATE_DIR = Deno.env.get("STACK_STATE_DIR") || ".local/bench";
// By default below Linux's ephemeral range (32768–60999): a probe retrying fast can otherwise
// connect to itself on a cold-start port and leave it "already in use" for the server about to
// bind it. `STACK_PORT_BASE` moves it (its cold-start ports are base + 10 … + 70).
const PORT_BASE = Number(Deno.env.get("STACK_PORT_BASE") || 30321);

/** Every benchmark, in the order it runs. */
const BENCHES: [string, Bench][] = [
  ["checkout", checkoutBench],
  ["refresh", refreshBench],
  ["backfill", backfillBench],
  ["scale", scaleBench],
  ["events", eventsBench],
  ["probe", probeBench],
  // After probe: its outage opens the application's persisted circuit breaker.
  ["burst", burstBench],
  ["chaos", chaosBench],
  ["sites", sitesBench],
];

/** The benches that need a stack of their own, with the variables it is launched with. */
const STACK_ENVS: Record<string, Record<string, string>> = {
  sites: SITES_STACK_ENV,
  chaos: CHAOS_STACK_ENV,
};

/** Environment additions that make each benchmark small under `--quick`. */
const QUICK_ENV: Record<string, string> = {
  BENCH_QUICK: "1",
  BENCH_BACKFILL_ACCOUNTS: "1000",
  BENCH_BACKFILL_NAIVE_SAMPLE: "100",
  BENCH_SCALE_ACCOUNTS: "2000",
  BENCH_EVENTS: "2000",
  BENCH_BURST_ACCOUNTS: "200",
  BENCH_PROBE_ACCOUNTS: "2000",
  BENCH_PROBE_RUNS: "3",
  BENCH_SITES_ACCOUNTS: "7000",
  BENCH_SITES_DUE: "50",
};

async function text(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "";
  }
}

/** CPU, cores, RAM, OS, Deno and PostgreSQL versions, and the date. */
async function machine(env: Record<string, string>): Promise<[string, string][]> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const osRelease = await Deno.readTextFile("/etc/os-release").catch(() => "");
  const cpu = cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "unknown";
  const memKb = Number(meminfo.match(/^MemTotal:\s*(\d+)/m)?.[1] ?? 0);
  const os = osRelease.match(/^PRETTY_NAME="?([^"\n]+)"?$/m)?.[1] ?? Deno.build.os;
  let pg = "";
  const sql = postgres(env.BACKEND_DB_URL, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`select current_setting('server_version') as v`;
    pg = `PostgreSQL ${row.v}`;
  } catch {
    pg = await text(`${env.PG_BIN}/postgres`, ["--version"]);
  } finally {
    await sql.end({ timeout: 1 });
  }
  return [
    ["CPU", `${cpu} (${navigator.hardwareConcurrency} cores)`],
    ["RAM", `${(memKb / 1024 / 1024).toFixed(1)} GiB`],
    ["OS", `${os}, kernel ${Deno.osRelease()}`],
    ["Deno", `${Deno.version.deno} (V8 ${Deno.version.v8})`],
    ["PostgreSQL", pg],
    ["Date", new Date().toISOString()],
  ];
}

/**
 * Pauses every pg_cron job of the bench's own stack (refresh every 10 minutes, reconcile every
 * minute, retention): a scheduled run landing in a measurement is noise, and the stack is
 * thrown away after the bench.
 */
async function pauseSchedules(env: Record<string, string>) {
  for (const url of [env.BACKEND_DB_URL, env.ADMIN_DB_URL]) {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await sql`update cron.job set active = false`;
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
}

/** The commit measured: HEAD, and whether tracked files differ from it. */
async function commitOf(): Promise<{ commit: string; dirty: boolean | null }> {
  const commit = await text("git", ["-C", ROOT, "rev-parse", "HEAD"]);
  if (!commit) return { commit: "unknown", dirty: null };
  const status = await text("git", ["-C", ROOT, "status", "--porcelain", "--untracked-files=no"]);
  return { commit, dirty: status !== "" };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
    },
  });
  const quick = values.quick!;
  const only = values.only?.split(",").map((s) => s.trim()).filter(Boolean);
  const unknown = only?.filter((n) => !BENCHES.some(([name]) => name === n)) ?? [];
  if (unknown.length > 0) {
    console.error(`bench: no bench named ${unknown.join(", ")} (${BENCHES.map(([n]) => n)})`);
    return 2;
  }
  const benches = BENCHES.filter(([name]) => !only || only.includes(name));
  const started = performance.now();
  const { commit, dirty } = await commitOf();
  const date = new Date().toISOString();
  const measured: { name: string; rows: BenchRow[] }[] = [];
  let failed = 0;
  let host: [string, string][] = [];
  // One stack for the benches that need nothing special, then one for each that needs its own
  // (e.g. seven applications), one after the other in the same state folder and ports.
  const groups = [
    benches.filter(([name]) => !STACK_ENVS[name]),
    ...benches.filter(([name]) => STACK_ENVS[name]).map((b) => [b]),
  ].filter((g) => g.length > 0);
  for (const group of groups) {
    const stackEnv = STACK_ENVS[group[0][0]] ?? {};
    console.log(
      `bench: starting the local stack (${STATE_DIR}, ports ${PORT_BASE}–${PORT_BASE + 3}${
        Object.entries(stackEnv).map(([k, v]) => `, ${k}=${v}`).join("")
      })`,
    );
    const stack = await launchStack({ stateDir: STATE_DIR, portBase: PORT_BASE, env: stackEnv });
    try {
      const env = { ...stack.env, BENCH_LOG_DIR: STATE_DIR, ...(quick ? QUICK_ENV : {}) };
      if (host.length === 0) host = await machine(env);
      await pauseSchedules(env);
      for (const [name, bench] of group) {
        const t = performance.now();
        console.log(`bench: ${name}${quick ? " (quick)" : ""} …`);
        try {
          measured.push({ name, rows: await bench(env) });
          console.log(`bench: ${name} done in ${((performance.now() - t) / 1000).toFixed(1)} s`);
        } catch (err) {
          failed++;
          const message = (err as Error).message ?? String(err);
          console.error(`bench: ${name} failed: ${message}`);
          measured.push({
            name,
            rows: [{
              bench: name,
              metric: "error",
              value: message.slice(0, 120),
              baseline: "",
              ratio: "",
              target: "",
              met: false,
            }],
          });
        }
      }
    } finally {
      await stack.stop();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const run: BenchRunInfo = {
    command: ["deno task bench", ...Deno.args].join(" "),
    commit,
    dirty,
    date,
    seconds: Math.round(seconds),
    benches: benches.map(([name]) => name),
    machine: host.filter(([k]) => k !== "Date"),
  };
  const entries: BenchEntry[] = measured.map((m) => ({ name: m.name, run, rows: m.rows }));
  const order = BENCHES.map(([name]) => name);
  // A quick run proves the bench runs; it never stands in for a measured figure.
  const store = quick ? `${ROOT}${STATE_DIR}/results.quick.json` : BENCH_STORE;
  const out = quick ? `${ROOT}${STATE_DIR}/RESULTS.quick.md` : RESULTS_FILE;
  const merged = mergeBenches(
    quick ? { benches: [] } : await loadBenchStore(store),
    entries,
    order,
  );
  await writeJson(store, merged);
  await writeResults(out, merged, quick ? null : undefined);
  console.log("");
  console.log(textTable(measured.flatMap((m) => m.rows)));
  console.log("");
  console.log(
    `bench: stored ${store.slice(ROOT.length)}, wrote ${out.slice(ROOT.length)} in ${
      seconds.toFixed(0)
    } s`,
  );
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
