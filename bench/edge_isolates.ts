/**
 * `deno run -A bench/edge_isolates.ts`: what the local gateway's isolates (subprocesses) cost —
 * the cold start of an isolate (first request to a function), the same for a Worker (the
 * alternative), the per-request overhead of a warm isolate against calling the handler
 * directly, and the CPU the gateway accounts for a 300 ms busy loop. No stack needed: the calls take a path that answers before
 * any database (the probe's counter; a real function's 401). Prints a small table.
 */
import { createGateway, functionEntrypoints } from "../local/gateway.ts";

const N = Number(Deno.env.get("EDGE_BENCH_N") ?? 300);
const PROBE = new URL("../tests/fixtures/probe/index.ts", import.meta.url);
const STAND_INS: Record<string, string> = {
  SUPABASE_SECRET_KEYS: JSON.stringify({ default: "sb_secret_bench_local_only" }),
  BACKEND_DB_URL: "postgres://nobody@127.0.0.1:9/none",
  ADMIN_DB_URL: "postgres://nobody@127.0.0.1:9/none",
  MP_TOKEN_KEYS: `bench:${btoa(String.fromCharCode(...new Uint8Array(32)))}`,
  MP_CLIENT_ID: "1234567",
  MP_CLIENT_SECRET: "bench-client-secret",
  MP_REDIRECT_URI: "http://127.0.0.1:9/functions/v1/mp-oauth-callback",
  MP_WEBHOOK_SECRET: "bench-webhook-secret-0123456789",
  APP_RETURN_URL: "http://127.0.0.1:9/app",
};

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const fmt = (x: number) => x.toFixed(2);

async function timeIt(n: number, f: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await f();
    out.push(performance.now() - t);
  }
  return out;
}

const rows: string[][] = [];
const row = (what: string, xs: number[]) =>
  rows.push([what, String(xs.length), fmt(quantile(xs, 0.5)), fmt(quantile(xs, 0.95))]);

const entrypoints = await functionEntrypoints();
const functions = new Map([["probe", PROBE], ...entrypoints]);
const cpu: string[] = [];
let lastCpuMs = 0;
const pids: number[] = [];
const rssBefore = Deno.memoryUsage().rss;
const gw = await createGateway({
  env: STAND_INS,
  functions,
  log: (l) => {
    if (l.msg === "Edge isolate started") {
      cpu.push(`${l.function}: boot_cpu_ms ${l.boot_cpu_ms}`);
      pids.push(l.pid as number);
    }
    if (l.msg === "Edge request") lastCpuMs = l.cpu_ms as number;
  },
});
const req = (name: string, path = "") =>
  new Request(`http://bench.test/functions/v1/${name}${path}`, { method: "GET" });

// Cold start: the first request to each function boots its isolate.
const cold: number[] = [];
for (const name of functions.keys()) {
  const t = performance.now();
  await (await gw.fetch(req(name, name === "probe" ? "/counter" : ""))).arrayBuffer();
  cold.push(performance.now() - t);
  console.log(`cold start ${name}: ${fmt(cold.at(-1)!)} ms`);
}
row("isolate cold start (first request, per function)", cold);
const rssPerIsolate = (Deno.memoryUsage().rss - rssBefore) / functions.size / 2 ** 20;
const isolateRss = pids.map((pid) =>
  Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1] ?? 0) / 1024
);

// CPU accounting: a 300 ms wall-clock busy loop, as the gateway accounts it.
const busy: number[] = [];
for (let i = 0; i < 5; i++) {
  await (await gw.fetch(req("probe", "/busy?ms=300&clock=wall"))).arrayBuffer();
  busy.push(lastCpuMs);
}

// Warm: the same request through the gateway vs the handler called directly.
const direct = (await import(PROBE.href)).default.fetch as (r: Request) => Promise<Response>;
const health = (await import(entrypoints.get("mp-health")!.href)).default.fetch as (
  r: Request,
) => Promise<Response>;
await timeIt(50, async () => await (await direct(req("probe", "/counter"))).arrayBuffer());
row(
  "probe direct",
  await timeIt(N, async () => await (await direct(req("probe", "/counter"))).arrayBuffer()),
);
row(
  "probe through gateway (warm isolate)",
  await timeIt(N, async () => await (await gw.fetch(req("probe", "/counter"))).arrayBuffer()),
);
row(
  "mp-health 401 direct",
  await timeIt(N, async () => await (await health(req("mp-health"))).arrayBuffer()),
);
row(
  "mp-health 401 through gateway",
  await timeIt(N, async () => await (await gw.fetch(req("mp-health"))).arrayBuffer()),
);
await gw.close();

// The alternative: a Worker per isolate, until it has imported the function (a data: URL
// module, so no extra file). Faster, but Deno 2.9 cannot stop a busy Worker (see gateway.ts).
const src = `await import(${JSON.stringify(entrypoints.get("mp-health")!.href)}); postMessage(1);`;
const workerUrl = `data:application/typescript,${encodeURIComponent(src)}`;
const viaWorker = await timeIt(5, async () => {
  const w = new Worker(workerUrl, { type: "module" });
  await new Promise((r) => (w.onmessage = r));
  w.terminate();
});
row("Worker cold start (import mp-health)", viaWorker);

console.log("\n| measure | n | p50 ms | p95 ms |\n| --- | --- | --- | --- |");
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
console.log(`\ncpu_ms accounted for a 300 ms busy loop: ${busy.join(", ")}`);
console.log(`isolate process RSS: ${isolateRss.map((x) => x.toFixed(0)).join(", ")} MiB`);
console.log(
  `gateway process RSS growth per isolate (excludes the isolates' own processes): ${
    rssPerIsolate.toFixed(1)
  } MiB`,
);
console.log(`\n${cpu.join("\n")}`);
