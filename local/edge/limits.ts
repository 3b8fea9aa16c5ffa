/**
 * The edge runtime's limits for the local gateway: production defaults (Supabase hosted
 * Edge Functions), overridable per gateway or by `EDGE_*` environment variables of the stack.
 */

/** Limits applied to every isolate of every function; all times in ms. */
export interface EdgeLimits {
  /** CPU time an isolate may use over its life, summed over its requests (2000). */
  cpuMs: number;
  /** JS heap an isolate may hold, in MB (256). */
  memoryMb: number;
  /** Life of an isolate from its start; it is terminated at this age (150 000). */
  wallClockMs: number;
  /** Time a request may wait for its answer, queueing included, before a 504 (150 000). */
  requestTimeoutMs: number;
  /** Isolates per function at most; further requests queue FIFO (8). */
  maxIsolates: number;
  /** An isolate idle this long is retired (30 000). */
  idleTimeoutMs: number;
  /** Percent of the wall clock at which `beforeunload` is dispatched (90). */
  beforeunloadWallClockPct: number;
  /** Percent of the CPU limit at which `beforeunload` is dispatched (90). */
  beforeunloadCpuPct: number;
  /** Percent of the memory limit at which `beforeunload` is dispatched (90). */
  beforeunloadMemoryPct: number;
  /** Request body bytes the gateway reads; it passes at most this plus one byte (1 MiB). */
  maxBodyBytes: number;
  /** How often a busy isolate's CPU time is read, and its heap reported (25). */
  pollMs: number;
}

/** Supabase hosted Edge Functions' limits. */
export const DEFAULT_LIMITS: Readonly<EdgeLimits> = Object.freeze({
  cpuMs: 2000,
  memoryMb: 256,
  wallClockMs: 150_000,
  requestTimeoutMs: 150_000,
  maxIsolates: 8,
  idleTimeoutMs: 30_000,
  beforeunloadWallClockPct: 90,
  beforeunloadCpuPct: 90,
  beforeunloadMemoryPct: 90,
  maxBodyBytes: 1024 * 1024,
  pollMs: 25,
});

/** The environment variable that overrides each limit. */
const LIMIT_VARIABLES: Record<keyof EdgeLimits, string> = {
  cpuMs: "EDGE_CPU_LIMIT_MS",
  memoryMb: "EDGE_MEMORY_LIMIT_MB",
  wallClockMs: "EDGE_WALL_CLOCK_MS",
  requestTimeoutMs: "EDGE_REQUEST_TIMEOUT_MS",
  maxIsolates: "EDGE_MAX_ISOLATES",
  idleTimeoutMs: "EDGE_IDLE_TIMEOUT_MS",
  beforeunloadWallClockPct: "EDGE_BEFOREUNLOAD_WALL_CLOCK_PCT",
  beforeunloadCpuPct: "EDGE_BEFOREUNLOAD_CPU_PCT",
  beforeunloadMemoryPct: "EDGE_BEFOREUNLOAD_MEMORY_PCT",
  maxBodyBytes: "EDGE_MAX_BODY_BYTES",
  pollMs: "EDGE_POLL_MS",
};

/** The limits set by `EDGE_*` variables in `env` (positive numbers only; others ignored). */
export function limitsFromEnv(
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Partial<EdgeLimits> {
  const out: Partial<EdgeLimits> = {};
  for (const [key, name] of Object.entries(LIMIT_VARIABLES) as [keyof EdgeLimits, string][]) {
    const n = Number(env[name]);
    if (env[name] !== undefined && env[name] !== "" && Number.isFinite(n) && n > 0) out[key] = n;
  }
  return out;
}

/** Defaults, then `EDGE_*` variables, then explicit overrides. */
export function resolveLimits(overrides: Partial<EdgeLimits> = {}): EdgeLimits {
  return { ...DEFAULT_LIMITS, ...limitsFromEnv(), ...overrides };
}
