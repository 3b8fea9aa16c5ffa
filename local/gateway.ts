/**
 * The local stand-in for the Supabase edge runtime behind `/functions/v1/<name>` (docs/local-stack.md).
 *
 * Each function runs in isolates bound to it, each serving ONE request at a time with its
 * own module state (its own import of the function's index.ts); concurrent requests get more
 * isolates, up to `maxIsolates` per function, then queue FIFO within the request timeout.
 * Isolates are `deno run` subprocesses (local/edge/isolate.ts; messages over stdin/stdout,
 * see local/edge/channel.ts), not Workers, because Deno 2.9's `Worker.terminate()` does not
 * stop a worker that is busy: its thread keeps spinning (measured: CPU still climbing seconds
 * after terminate), so a runaway function could not be "terminated at once", and a process
 * with such a thread never exits. SIGKILL stops a subprocess at once. The price, measured on
 * the 2-core dev box (bench/edge_isolates.ts): cold start (first request to a function,
 * module import included) ~160 ms p50 against ~80–140 ms for a Worker; a warm request costs
 * ~1.0–1.2 ms more than calling the handler directly (~0.7 ms for a Worker); ~50 MiB RSS per
 * isolate. CPU is read from the isolate's JS thread, `/proc/<pid>/task/<pid>/schedstat`
 * (a 300 ms busy loop is accounted 294–315 ms). The heap is checked from the isolate's reports
 * (every ~50 ms while it serves, and with each answer); an allocation burst that never yields
 * is stopped by V8's own cap (`--max-old-space-size`, the limit plus a quarter), which aborts
 * the process (SIGTRAP) and also answers 546. Given `env`, an isolate's environment is exactly
 * that (what Supabase injects plus the project's secrets; only PATH, HOME, DENO_DIR, TMPDIR
 * come from the host), so a function cannot read the stack's own variables.
 *
 * Limits (local/edge/limits.ts; production defaults, then `EDGE_*` variables of the process,
 * then `limits`): CPU (counted while the isolate serves requests, like the runtime's CPU
 * timer; module boot is logged as `boot_cpu_ms`, not charged) and heap accumulate over an
 * isolate's life; past half of either it finishes its request and retires; over the limit it
 * is terminated at once and the request answers 546 `sb-error-code: WORKER_RESOURCE_LIMIT`.
 * Past half its wall clock an isolate takes no new request; at `beforeunload*Pct` of the wall
 * clock, CPU or memory limit, `beforeunload` (detail.reason `WallClockTime`, `CPUTime`,
 * `Memory`) is dispatched on its globalThis; at the wall clock it is terminated (a pending
 * request answers 504). No answer within the request timeout (queueing included): 504, and
 * the isolate serving it is terminated. A thrown or uncaught error: 500 `WORKER_ERROR`, the
 * isolate replaced; a module that fails to load: 503 `BOOT_ERROR`. Idle isolates retire. Work
 * handed to `EdgeRuntime.waitUntil` (background work after the answer) keeps its isolate alive: a
 * retiring isolate ends once that work has settled (its wall clock still ends it).
 * One JSON line per request (`msg: "Edge request"`, `cpu_ms`, `wall_ms`, …) and per isolate
 * start, retirement and termination (with `reason`) goes to stdout; the functions' own
 * console output goes straight to the process's stdout/stderr, as before.
 */
import { parse } from "smol-toml";
import { type EdgeLimits, resolveLimits } from "./edge/limits.ts";
import { FunctionPool } from "./edge/pool.ts";
import type { UnloadReason, WireRequest, WireResponse } from "./edge/protocol.ts";
import type { Clock } from "./edge/clock.ts";
import type { LogSink } from "./edge/isolate_host.ts";

/** A handler as `Deno.serve` takes it (and as a function's index.ts default-exports it). */
export type Fetch = (
  req: Request,
  info?: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

/** What a gateway is made of. */
interface GatewayOptions {
  /** The functions' whole environment (what Supabase injects plus the secrets). */
  env?: Record<string, string>;
  /** Overrides of the limits (after the defaults and the `EDGE_*` variables). */
  limits?: Partial<EdgeLimits>;
  /** Other path prefixes served in-process, e.g. `{ "/app": page }`. */
  extra?: Record<string, Fetch>;
  /** name → entrypoint (URL or absolute path); default: supabase/config.toml. */
  functions?: Map<string, URL> | Record<string, URL | string>;
  /** Where the JSON log lines go (default: one line each on stdout). */
  log?: LogSink;
  /**
   * The clock of the wall-clock, request-timeout and idle timers (default: real time). Tests
   * pass a `ManualClock` (local/edge/clock.ts) and move time themselves.
   */
  clock?: Clock;
}

/** A running gateway. */
export interface Gateway {
  /** The HTTP handler for `Deno.serve`. */
  fetch(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response>;
  /** Terminates every isolate and answers queued requests 503. */
  close(): Promise<void>;
  /** The limits in force. */
  readonly limits: EdgeLimits;
  /**
   * For tests: dispatches `beforeunload` with `reason` to every live isolate of `name` now,
   * as the runtime does at a limit's threshold; returns how many isolates it reached. Each
   * isolate logs `Edge beforeunload dispatched` once its listeners have run.
   */
  unload(name: string, reason: UnloadReason): number;
  /** For tests: terminates every live isolate of `name` now, as at a limit; returns how many. */
  terminate(name: string, reason: UnloadReason): number;
}

/** The variables the Supabase runtime injects into every function. */
const INJECTED_VARIABLES = [
  "SUPABASE_URL",
  "SUPABASE_DB_URL",
  "SUPABASE_SECRET_KEYS",
  "SUPABASE_PUBLISHABLE_KEYS",
  "SUPABASE_ANON_KEY",
  "SUPABASE_SERVICE_ROLE_KEY",
] as const;

const SUPABASE_DIR = new URL("../supabase/", import.meta.url);
const NULL_BODY = new Set([101, 103, 204, 205, 304]);
const DROPPED_RESPONSE_HEADERS = new Set(["content-length", "transfer-encoding", "connection"]);

/** Reads the `[functions.*]` blocks of supabase/config.toml: name → entrypoint URL. */
export async function functionEntrypoints(): Promise<Map<string, URL>> {
  const toml = parse(await Deno.readTextFile(new URL("config.toml", SUPABASE_DIR))) as {
    functions?: Record<string, { entrypoint?: string; enabled?: boolean }>;
  };
  const out = new Map<string, URL>();
  for (const [name, fn] of Object.entries(toml.functions ?? {})) {
    if (fn.enabled === false) continue;
    out.set(name, new URL(fn.entrypoint ?? `./functions/${name}/index.ts`, SUPABASE_DIR));
  }
  return out;
}

const stdoutLog: LogSink = (entry) =>
  console.log(JSON.stringify({ ...entry, time: new Date().toISOString() }));

/** Reads at most `cap` bytes of the body (the rest is discarded); null when it has none. */
async function readCapped(req: Request, cap: number): Promise<ArrayBuffer | null> {
  if (req.body === null || req.method === "GET" || req.method === "HEAD") return null;
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size < cap) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.length;
  }
  if (size >= cap) await reader.cancel().catch(() => {});
  const out = new Uint8Array(Math.min(size, cap));
  let at = 0;
  for (const c of chunks) {
    const part = c.subarray(0, out.length - at);
    out.set(part, at);
    at += part.length;
  }
  return out.buffer;
}

function toResponse(wire: WireResponse): Response {
  const headers = wire.headers.filter(([k]) => !DROPPED_RESPONSE_HEADERS.has(k.toLowerCase()));
  return new Response(NULL_BODY.has(wire.status) ? null : wire.body, {
    status: wire.status,
    statusText: wire.statusText,
    headers,
  });
}

function entrypointMap(fns: GatewayOptions["functions"]): Map<string, URL> | undefined {
  if (!fns || fns instanceof Map) return fns;
  return new Map(
    Object.entries(fns).map(([k, v]) => [k, v instanceof URL ? v : new URL(`file://${v}`)]),
  );
}

/**
 * Starts a gateway whose isolates get exactly `env` (or inherit the process's without it), and
 * serves `/functions/v1/<name>` from per-function isolate pools started on first request,
 * `extra` prefixes in-process, and `/health`.
 */
export async function createGateway(opts: GatewayOptions = {}): Promise<Gateway> {
  const limits = resolveLimits(opts.limits);
  const log = opts.log ?? stdoutLog;
  const missing = INJECTED_VARIABLES.filter((k) => opts.env && opts.env[k] === undefined);
  if (opts.env && missing.length) {
    log({ level: "warn", msg: "Edge env lacks injected variables", missing });
  }
  const entrypoints = entrypointMap(opts.functions) ?? await functionEntrypoints();
  const pools = new Map<string, FunctionPool>();
  let closed = false;

  const invoke = async (name: string, entry: URL, req: Request, info?: Deno.ServeHandlerInfo) => {
    const started = performance.now();
    let pool = pools.get(name);
    if (!pool) {
      pools.set(name, pool = new FunctionPool(name, entry, limits, log, opts.env, opts.clock));
    }
    const addr = info?.remoteAddr as Deno.NetAddr | undefined;
    const wire: WireRequest = {
      method: req.method,
      url: req.url,
      headers: [...req.headers],
      body: await readCapped(req, limits.maxBodyBytes + 1),
      ...(addr?.hostname ? { remoteAddr: { hostname: addr.hostname, port: addr.port } } : {}),
    };
    const outcome = await pool.run(wire);
    const status = outcome.response.status;
    const requestId = outcome.response.headers.find(([k]) => k.toLowerCase() === "x-request-id");
    log({
      level: status >= 500 ? "warn" : "info",
      msg: "Edge request",
      function: name,
      status,
      cpu_ms: outcome.cpuMs,
      ...(outcome.heapMb !== undefined ? { heap_mb: outcome.heapMb } : {}),
      wall_ms: Math.round(performance.now() - started),
      isolate: outcome.isolate ?? null,
      ...(requestId ? { request_id: requestId[1] } : {}),
    });
    return toResponse(outcome.response);
  };

  return {
    limits,
    unload: (name, reason) => pools.get(name)?.unload(reason) ?? 0,
    terminate: (name, reason) => pools.get(name)?.terminate(reason) ?? 0,
    async fetch(req, info) {
      const path = new URL(req.url).pathname;
      const match = path.match(/^\/functions\/v1\/([a-z0-9-]+)(?:\/|$)/);
      if (match) {
        const entry = entrypoints.get(match[1]);
        if (entry && !closed) return await invoke(match[1], entry, req, info);
        return Response.json({ error: { code: "not_found", message: "no such function" } }, {
          status: closed ? 503 : 404,
        });
      }
      for (const [prefix, fn] of Object.entries(opts.extra ?? {})) {
        if (path === prefix || path.startsWith(`${prefix}/`)) return await fn(req, info);
      }
      if (path === "/health") return Response.json({ ok: true });
      return new Response("not found", { status: 404 });
    },
    async close() {
      closed = true;
      await Promise.all([...pools.values()].map((pool) => pool.close()));
    },
  };
}
