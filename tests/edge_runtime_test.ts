/**
 * The local gateway behaves like the Supabase edge runtime (docs/local-stack.md): isolates bound to one
 * function serving one request at a time with their own module state, and the CPU, memory,
 * wall-clock and request-timeout limits with the runtime's answers. Each test starts its own
 * gateway in this process, with tests/fixtures/probe mounted and small limits.
 *
 * No outcome depends on the machine's speed: each limit is set far from what the work needs
 * (or the work runs until the limit stops it), time-based limits run on a `ManualClock` the
 * test moves, and concurrency is held open by a latch the test releases (the probe's `hold`).
 * Waits for log lines are bounded only against a hang.
 */
import assert from "node:assert/strict";
import { createGateway, functionEntrypoints, type Gateway } from "../local/gateway.ts";
import { type Clock, ManualClock } from "../local/edge/clock.ts";
import {
  DEFAULT_LIMITS,
  type EdgeLimits,
  limitsFromEnv,
  resolveLimits,
} from "../local/edge/limits.ts";
import { logLine } from "./_stack.ts";

const PROBE = new URL("./fixtures/probe/index.ts", import.meta.url);
const BROKEN = new URL("./fixtures/broken/index.ts", import.meta.url);

/** Small limits: big enough that a probe isolate boots and answers, small enough to hit. */
const SMALL: Partial<EdgeLimits> = {
  cpuMs: 2000,
  memoryMb: 256,
  wallClockMs: 60_000,
  requestTimeoutMs: 30_000,
  maxIsolates: 4,
  idleTimeoutMs: 30_000,
};

type Line = Record<string, unknown>;

/** A gateway over the probe (also mounted as `probe2`) whose log lines are collected. */
async function probeGateway(
  limits: Partial<EdgeLimits> = {},
  env: Record<string, string> = {},
  clock?: Clock,
) {
  const lines: Line[] = [];
  const gw = await createGateway({
    env,
    functions: { probe: PROBE, probe2: PROBE, broken: BROKEN },
    limits: { ...SMALL, ...limits },
    log: (line) => lines.push(line),
    clock,
  });
  return { gw, lines };
}

/** Waits until `lines` holds `n` lines with `msg` (bounded only against a hang). */
async function untilLines(lines: Line[], msg: string, n = 1): Promise<Line[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const found = lines.filter((l) => l.msg === msg);
    if (found.length >= n) return found;
    if (Date.now() > deadline) throw new Error(`no ${n} × "${msg}" in the gateway's log`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The isolate that served the request with `rid`, from the gateway's request lines. */
function servedBy(lines: Line[], rid: string): string {
  return requestLines(lines).find((l) => l.request_id === rid)!.isolate as string;
}

interface ProbeAnswer {
  token: string;
  count: number;
  unloads: string[];
}

async function call(gw: Gateway, path: string, init?: RequestInit) {
  const res = await gw.fetch(new Request(`http://gateway.test/functions/v1/${path}`, init));
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, body: body as ProbeAnswer & Line };
}

const requestLines = (lines: Line[]) => lines.filter((l) => l.msg === "Edge request");

Deno.test("one request at a time per isolate: concurrent requests get separate isolates", async () => {
  const latch = await Deno.makeTempDir({ prefix: "probe-latch-" });
  const { gw, lines } = await probeGateway({}, { PROBE_LATCH_DIR: latch });
  try {
    // Both requests are held until both isolates serve one: neither can take the other's.
    const both = Promise.all([call(gw, "probe/hold?rid=A"), call(gw, "probe/hold?rid=B")]);
    await untilLines(lines, "Edge isolate started", 2);
    await Deno.writeTextFile(`${latch}/go`, "");
    const [a, b] = await both;
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.notEqual(a.body.token, b.body.token, "two isolates, two module instances");
    assert.equal(a.body.count, 1, "module state is per isolate");
    assert.equal(b.body.count, 1);
    // A sequential request reuses an idle isolate (the first started): its state carries on.
    const c = await call(gw, "probe/counter?rid=C");
    assert.equal(servedBy(lines, "C"), "probe#1");
    const first = servedBy(lines, "A") === "probe#1" ? a : b;
    assert.equal(c.body.token, first.body.token);
    assert.equal(c.body.count, 2);
    const started = lines.filter((l) => l.msg === "Edge isolate started");
    assert.equal(started.length, 2);
  } finally {
    await gw.close();
    await Deno.remove(latch, { recursive: true });
  }
});

Deno.test("requests queue FIFO for a free isolate once the pool is at its maximum", async () => {
  const { gw } = await probeGateway({ maxIsolates: 1 });
  try {
    const answers = await Promise.all([
      call(gw, "probe/sleep?ms=200"),
      call(gw, "probe/sleep?ms=10"),
      call(gw, "probe/counter"),
    ]);
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
    assert.equal(new Set(answers.map((a) => a.body.token)).size, 1, "one isolate served all");
    assert.deepEqual(answers.map((a) => a.body.count), [1, 2, 3], "in arrival order");
  } finally {
    await gw.close();
  }
});

Deno.test("isolates are bound to one function", async () => {
  const { gw, lines } = await probeGateway();
  try {
    const a = await call(gw, "probe/counter");
    const b = await call(gw, "probe2/counter");
    const a2 = await call(gw, "probe/counter");
    assert.notEqual(a.body.token, b.body.token);
    assert.equal(b.body.count, 1, "probe2's isolate does not share probe's module state");
    assert.equal(a2.body.token, a.body.token);
    assert.equal(a2.body.count, 2);
    const served = requestLines(lines).map((l) => `${l.function}:${l.isolate}`);
    assert.deepEqual(served, ["probe:probe#1", "probe2:probe2#1", "probe:probe#1"]);
  } finally {
    await gw.close();
  }
});

Deno.test("an isolate's environment is exactly the functions' env", async () => {
  Deno.env.set("PROBE_HOST_ONLY", "the gateway process's own");
  const { gw } = await probeGateway({}, { PROBE_ENV_CHECK: "from-the-gateway" });
  try {
    const res = await call(gw, "probe/env?name=PROBE_ENV_CHECK");
    assert.equal(res.body.value, "from-the-gateway");
    const host = await call(gw, "probe/env?name=PROBE_HOST_ONLY");
    assert.equal(host.body.value ?? null, null, "the host's variables do not leak in");
  } finally {
    await gw.close();
    Deno.env.delete("PROBE_HOST_ONLY");
  }
});

Deno.test("CPU time is accounted per request and logged as cpu_ms", async () => {
  const { gw, lines } = await probeGateway({ cpuMs: 5000 });
  try {
    // The probe spins until its JS thread's own CPU clock (the one the gateway reads) moved
    // 200 ms, so the request used at least that, and one thread cannot use more than its wall time.
    const res = await call(gw, "probe/busy?ms=200&rid=busy-1");
    assert.equal(res.status, 200);
    const line = requestLines(lines).at(-1)!;
    assert.equal(line.status, 200);
    assert.equal(line.request_id, "busy-1");
    assert.equal(typeof line.wall_ms, "number");
    const cpu = line.cpu_ms as number;
    assert.ok(cpu >= 199.9, `cpu_ms ${cpu} for a 200 ms busy loop`);
    assert.ok(cpu <= (line.wall_ms as number) + 1, `cpu_ms ${cpu} within wall_ms ${line.wall_ms}`);
  } finally {
    await gw.close();
  }
});

Deno.test("past half the CPU limit the request succeeds and the isolate retires", async () => {
  // 1,100 ms of CPU: past half of 2,000, with 900 ms to spare below the limit.
  const { gw, lines } = await probeGateway({ cpuMs: 2000 });
  try {
    const first = await call(gw, "probe/busy?ms=1100");
    assert.equal(first.status, 200, "the request that crosses half still gets its answer");
    const next = await call(gw, "probe/counter");
    assert.equal(next.status, 200);
    assert.notEqual(next.body.token, first.body.token, "the next request gets a new isolate");
    assert.equal(next.body.count, 1);
    const retired = lines.find((l) => l.msg === "Edge isolate retired");
    assert.equal(retired?.reason, "CPUTime");
  } finally {
    await gw.close();
  }
});

Deno.test("over the CPU limit: terminated at once, 546 WORKER_RESOURCE_LIMIT, isolate replaced", async () => {
  const { gw, lines } = await probeGateway({ cpuMs: 400 });
  try {
    const before = await call(gw, "probe/counter");
    // 20 s of CPU asked for, 400 ms allowed: only the limit can end it before its loop does.
    const res = await call(gw, "probe/busy?ms=20000");
    assert.equal(res.status, 546);
    assert.equal(res.headers.get("sb-error-code"), "WORKER_RESOURCE_LIMIT");
    assert.equal(res.body.code, "WORKER_RESOURCE_LIMIT");
    assert.equal(typeof res.body.message, "string");
    const killed = lines.find((l) => l.msg === "Edge isolate terminated");
    assert.equal(killed?.reason, "CPUTime");
    const cpu = requestLines(lines).at(-1)!.cpu_ms as number;
    assert.ok(cpu < 20_000, `terminated before its loop ended (${cpu} ms)`);
    assert.ok((killed!.cpu_ms as number) > 400, "not before the limit");
    // Terminated means stopped: the runaway isolate's process is gone, not spinning on.
    const pid = lines.find((l) => l.msg === "Edge isolate started")!.pid as number;
    const deadline = Date.now() + 60_000; // against a hang only
    while (await Deno.stat(`/proc/${pid}`).then(() => true, () => false)) {
      assert.ok(Date.now() < deadline, `isolate process ${pid} still exists`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const after = await call(gw, "probe/counter");
    assert.equal(after.status, 200);
    assert.notEqual(after.body.token, before.body.token, "a new isolate serves the next request");
  } finally {
    await gw.close();
  }
});

Deno.test("over the memory limit: 546 WORKER_RESOURCE_LIMIT", async () => {
  const { gw, lines } = await probeGateway({ memoryMb: 100, cpuMs: 10_000 });
  try {
    // 110 MiB held, then the request waits for good: only the isolate's heap report can end it.
    const res = await call(gw, "probe/alloc?mb=110&until=Never");
    assert.equal(res.status, 546);
    assert.equal(res.headers.get("sb-error-code"), "WORKER_RESOURCE_LIMIT");
    const killed = lines.find((l) => l.msg === "Edge isolate terminated");
    assert.equal(killed?.reason, "Memory");
    assert.match(String(killed?.detail), /MB of heap/, "caught by the heap report");
    const after = await call(gw, "probe/counter");
    assert.equal(after.status, 200);
    assert.equal(after.body.count, 1);
  } finally {
    await gw.close();
  }
});

Deno.test("a synchronous allocation burst past the limit still answers 546 (V8 heap cap)", async () => {
  const { gw, lines } = await probeGateway({ memoryMb: 48, cpuMs: 10_000 });
  try {
    const res = await call(gw, "probe/alloc?mb=400");
    assert.equal(res.status, 546);
    assert.equal(res.headers.get("sb-error-code"), "WORKER_RESOURCE_LIMIT");
    const killed = lines.find((l) => l.msg === "Edge isolate terminated");
    assert.equal(killed?.reason, "Memory");
    const after = await call(gw, "probe/counter");
    assert.equal(after.status, 200);
  } finally {
    await gw.close();
  }
});

Deno.test("past half the memory limit the request succeeds and the isolate retires", async () => {
  const { gw, lines } = await probeGateway({ memoryMb: 200, cpuMs: 10_000 });
  try {
    const first = await call(gw, "probe/alloc?mb=120&hold_ms=200");
    assert.equal(first.status, 200);
    const next = await call(gw, "probe/counter");
    assert.notEqual(next.body.token, first.body.token);
    assert.equal(lines.find((l) => l.msg === "Edge isolate retired")?.reason, "Memory");
  } finally {
    await gw.close();
  }
});

Deno.test("wall clock: beforeunload is dispatched, then the isolate is terminated (504)", async () => {
  const file = await Deno.makeTempFile({ prefix: "probe-unload-" });
  const clock = new ManualClock();
  const { gw, lines } = await probeGateway(
    { wallClockMs: 4000, beforeunloadWallClockPct: 50 },
    { PROBE_UNLOAD_FILE: file },
    clock,
  );
  try {
    // Dispatched at 50% of the wall clock: a request waiting for it is answered.
    const waiting = call(gw, "probe/wait-unload");
    await untilLines(lines, "Edge isolate started", 1); // serving the request now
    clock.advance(2000);
    const waited = await waiting;
    assert.equal(waited.status, 200);
    assert.deepEqual(waited.body.unloads, ["WallClockTime"]);
    // A request arriving past half the wall clock gets a fresh isolate...
    const sleeping = call(gw, "probe/sleep?ms=600000");
    await untilLines(lines, "Edge isolate started", 2);
    clock.advance(2000); // half of the new isolate's wall clock: beforeunload
    await untilLines(lines, "Edge beforeunload dispatched", 2);
    clock.advance(2000); // its whole wall clock, still serving
    const fresh = await sleeping;
    assert.notEqual(fresh.body.token, waited.body.token);
    // ...which, still serving at its wall clock, is terminated: 504.
    assert.equal(fresh.status, 504);
    const reasons = (await Deno.readTextFile(file)).trim().split("\n");
    assert.deepEqual(reasons, ["WallClockTime", "WallClockTime"], "each isolate got beforeunload");
    const killed = lines.filter((l) => l.msg === "Edge isolate terminated");
    assert.deepEqual(killed.map((l) => l.reason), ["WallClockTime"]);
  } finally {
    await gw.close();
    await Deno.remove(file).catch(() => {});
  }
});

Deno.test("EdgeRuntime.waitUntil: an isolate retiring at its answer lives until its background work settles", async () => {
  const file = await Deno.makeTempFile({ prefix: "probe-background-" });
  const clock = new ManualClock();
  const { gw, lines } = await probeGateway(
    { wallClockMs: 4000, beforeunloadWallClockPct: 50 },
    { PROBE_BACKGROUND_FILE: file },
    clock,
  );
  try {
    const answer = call(gw, "probe/background?ms=300&until_unload=1");
    await untilLines(lines, "Edge isolate started", 1); // serving the request now
    clock.advance(2000); // half its wall clock: it retires at its answer, beforeunload comes
    assert.equal((await answer).status, 200);
    const [retired] = await untilLines(lines, "Edge isolate retired", 1);
    assert.equal(retired.reason, "WallClockTime");
    assert.equal(await Deno.readTextFile(file), "done", "the background work ran to its end");
    assert.ok(!lines.some((l) => l.msg === "Edge isolate terminated"));
  } finally {
    await gw.close();
    await Deno.remove(file).catch(() => {});
  }
});

Deno.test("no answer within the request timeout: 504, queued requests too", async () => {
  const clock = new ManualClock();
  const { gw, lines } = await probeGateway({ requestTimeoutMs: 3000, maxIsolates: 1 }, {}, clock);
  try {
    const answers = Promise.all([
      call(gw, "probe/sleep?ms=600000"),
      call(gw, "probe/counter"),
    ]);
    await untilLines(lines, "Edge isolate started", 1); // the first is served, the second queued
    clock.advance(3000);
    const [slow, queued] = await answers;
    assert.equal(slow.status, 504);
    assert.equal(queued.status, 504, "a request still queued at the timeout gets 504 too");
    const after = await call(gw, "probe/counter");
    assert.equal(after.status, 200, "the pool recovers");
    assert.ok(
      lines.some((l) => l.msg === "Edge isolate terminated" && l.reason === "RequestTimeout"),
    );
  } finally {
    await gw.close();
  }
});

Deno.test("a thrown error answers 500, an uncaught one too; boot failure answers 503", async () => {
  const { gw } = await probeGateway();
  try {
    const before = await call(gw, "probe/counter");
    const thrown = await call(gw, "probe/throw");
    assert.equal(thrown.status, 500);
    assert.equal(thrown.body.code, "WORKER_ERROR");
    const crashed = await call(gw, "probe/crash");
    assert.equal(crashed.status, 500);
    const after = await call(gw, "probe/counter");
    assert.equal(after.status, 200);
    assert.notEqual(after.body.token, before.body.token, "the errored isolate was replaced");
    const boot = await call(gw, "broken/anything");
    assert.equal(boot.status, 503);
    assert.equal(boot.body.code, "BOOT_ERROR");
  } finally {
    await gw.close();
  }
});

Deno.test("the host passes at most maxBodyBytes + 1 of a chunked body", async () => {
  const { gw } = await probeGateway({ maxBodyBytes: 1000 });
  try {
    const chunks = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 5; i++) c.enqueue(new Uint8Array(700));
        c.close();
      },
    });
    const res = await call(gw, "probe/body", { method: "POST", body: chunks });
    assert.equal(res.status, 200);
    assert.equal(res.body.bytes, 1001);
    assert.equal(res.body.length, null, "no content-length was made up");
  } finally {
    await gw.close();
  }
});

Deno.test("the real functions run in isolates: a call without a key answers 401 JSON", async () => {
  const entrypoints = await functionEntrypoints();
  const lines: Line[] = [];
  // The isolate's whole environment (mp-health checks its configuration, then the key,
  // before touching a database).
  const env: Record<string, string> = {
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: "sb_secret_probe_local_only" }),
    BACKEND_DB_URL: "postgres://nobody@127.0.0.1:9/none",
    ADMIN_DB_URL: "postgres://nobody@127.0.0.1:9/none",
  };
  const gw = await createGateway({
    env,
    functions: new Map([["mp-health", entrypoints.get("mp-health")!]]),
    limits: SMALL,
    log: (line) => lines.push(line),
  });
  try {
    const res = await call(gw, "mp-health");
    assert.equal(res.status, 401);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    assert.equal((res.body as unknown as { error: { code: string } }).error.code, "unauthorized");
    assert.equal(requestLines(lines)[0]?.isolate, "mp-health#1");
  } finally {
    await gw.close();
  }
});

Deno.test({
  name: "the stack serves the functions through the gateway and logs each request's CPU",
  async fn() {
    const rid = `edge-test-${crypto.randomUUID()}`;
    const res = await fetch(`${Deno.env.get("FUNCTIONS_URL")}/mp-health`, {
      headers: { "x-request-id": rid },
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "unauthorized");
    const line = JSON.parse(await logLine('"msg":"Edge request"', rid));
    assert.equal(line.function, "mp-health");
    assert.equal(line.status, 401);
    assert.equal(typeof line.cpu_ms, "number");
    assert.match(line.isolate, /^mp-health#\d+$/);
  },
});

Deno.test("limits come from EDGE_* variables, then explicit options", () => {
  const env = { EDGE_CPU_LIMIT_MS: "300", EDGE_MAX_ISOLATES: "2", EDGE_WALL_CLOCK_MS: "nope" };
  assert.deepEqual(limitsFromEnv(env), { cpuMs: 300, maxIsolates: 2 });
  assert.deepEqual(limitsFromEnv({}), {});
  assert.equal(resolveLimits({ cpuMs: 123 }).cpuMs, 123);
  assert.equal(DEFAULT_LIMITS.cpuMs, 2000);
  assert.equal(DEFAULT_LIMITS.memoryMb, 256);
  assert.equal(DEFAULT_LIMITS.wallClockMs, 150_000);
  assert.equal(DEFAULT_LIMITS.requestTimeoutMs, 150_000);
});

Deno.test("beforeunload is dispatched for CPUTime and Memory past their thresholds", async () => {
  const { gw } = await probeGateway({
    cpuMs: 2000,
    beforeunloadCpuPct: 10,
    memoryMb: 400,
    beforeunloadMemoryPct: 10,
  });
  try {
    // Each request runs until its beforeunload arrives: 200 ms of CPU, 40 MB of heap, both
    // far from the limits (2 s, 400 MB) and from retiring (half of each).
    const cpu = await call(gw, "probe/busy?until=CPUTime&ms=5");
    assert.equal(cpu.status, 200);
    assert.deepEqual(cpu.body.unloads, ["CPUTime"], "dispatched while the request still ran");
    const mem = await call(gw, "probe/alloc?mb=64&until=Memory");
    assert.equal(mem.status, 200);
    assert.ok(mem.body.unloads.includes("Memory"), `unloads: ${mem.body.unloads}`);
  } finally {
    await gw.close();
  }
});

Deno.test("an idle isolate retires after the idle timeout", async () => {
  const clock = new ManualClock();
  const { gw, lines } = await probeGateway({ idleTimeoutMs: 300 }, {}, clock);
  try {
    const first = await call(gw, "probe/counter");
    assert.equal(lines.find((l) => l.msg === "Edge isolate retired"), undefined);
    clock.advance(299);
    assert.equal(lines.find((l) => l.msg === "Edge isolate retired"), undefined, "not before");
    clock.advance(1);
    assert.equal(lines.find((l) => l.msg === "Edge isolate retired")?.reason, "Idle");
    const next = await call(gw, "probe/counter");
    assert.notEqual(next.body.token, first.body.token);
    assert.equal(next.body.count, 1);
  } finally {
    await gw.close();
  }
});
