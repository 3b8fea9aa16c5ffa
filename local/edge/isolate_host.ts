/**
 * The host side of one isolate: a `deno run` subprocess bound to one function that serves one
 * request at a time, with the edge runtime's limits enforced from outside. CPU time is read
 * from its JS thread's `/proc/<pid>/task/<pid>/schedstat` before and after each request and
 * polled while one runs (so a busy loop is caught); the heap is what the isolate reports.
 * Termination is SIGKILL, which stops even a busy loop (Deno 2.9's `Worker.terminate()` does
 * not: a terminated Worker's thread keeps spinning, which is why isolates are not Workers).
 */
import type { EdgeLimits } from "./limits.ts";
import { type Clock, type ClockTimer, realClock } from "./clock.ts";
import { decode, encode, lines, MARK, writeAllSync } from "./channel.ts";
import {
  bootError,
  type FromIsolate,
  resourceLimit,
  shuttingDown,
  timeoutError,
  type ToIsolate,
  type UnloadReason,
  type WireRequest,
  type WireResponse,
  workerError,
} from "./protocol.ts";

/** A log sink: one object per line. */
export type LogSink = (entry: Record<string, unknown>) => void;

/** What a request ended with: the answer, the CPU it used, the isolate that served it. */
export interface Outcome {
  response: WireResponse;
  cpuMs: number;
  /** The highest heap the isolate reported while serving the request (MiB). */
  heapMb?: number;
  isolate?: string;
}

/** One request waiting for, or being served by, an isolate. */
export interface Job {
  request: WireRequest;
  settled: boolean;
  isolate?: EdgeIsolate;
  finish(outcome: Outcome): void;
}

/** Why an isolate stops taking requests or is terminated. */
type StopReason =
  | UnloadReason
  | "Idle"
  | "RequestTimeout"
  | "WorkerError"
  | "BootError"
  | "Shutdown";

/** What the pool hears from its isolates. */
interface IsolateHooks {
  /** The isolate can take a request. */
  available(isolate: EdgeIsolate): void;
  /** The isolate is gone (terminated); `bootFailed` when it never became ready. */
  gone(isolate: EdgeIsolate, bootFailed: boolean): void;
}

type Timer = ReturnType<typeof setInterval>;

const ISOLATE = new URL("./isolate.ts", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
const encoder = new TextEncoder();

/**
 * An isolate's environment: exactly the functions' env (what Supabase injects plus the
 * project's secrets), with only what a Deno process needs to run taken from the host.
 */
function isolateEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "DENO_DIR", "TMPDIR", "NO_COLOR"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) out[k] = v;
  }
  return { ...out, ...env };
}
/** Bytes in MiB, one decimal. */
const mib = (bytes: number) => Math.round(bytes / 2 ** 19) / 2;

/** V8's heap cap: the memory limit plus a quarter (at least 16 MB). */
const heapCapMb = (limitMb: number) => Math.ceil(limitMb + Math.max(16, limitMb / 4));
const ms = (ns: number) => Math.round(ns / 1e5) / 10;

/** One isolate (subprocess) of one function; created by the function's pool. */
export class EdgeIsolate {
  /** booting → idle ⇄ busy → dead. */
  state: "booting" | "idle" | "busy" | "dead" = "booting";
  /** Set once the isolate takes no new requests (past half a limit, idle, errored). */
  retiring?: StopReason;
  /** Settles once the process has exited and its output was read to the end. */
  readonly done: Promise<void>;
  private readonly child: Deno.ChildProcess;
  private readonly stdin: WritableStreamDefaultWriter<Uint8Array>;
  private readonly started = performance.now();
  private readonly timers: ClockTimer[] = [];
  private schedstat?: string;
  private cpuNs = 0;
  private heap = 0;
  private requests = 0;
  private job?: Job;
  private jobStartNs = 0;
  private jobId = 0;
  private poll?: Timer;
  private idle?: ClockTimer;
  /** `EdgeRuntime.waitUntil` promises pending in the isolate: it is not retired while any is. */
  private background = 0;
  private readonly unloaded = new Set<UnloadReason>();

  constructor(
    readonly fn: string,
    readonly id: string,
    entrypoint: URL,
    private readonly limits: EdgeLimits,
    private readonly hooks: IsolateHooks,
    private readonly log: LogSink,
    env?: Record<string, string>,
    /** The clock of the wall-clock and idle timers (a test's own, or real time). */
    private readonly clock: Clock = realClock,
  ) {
    this.child = new Deno.Command(Deno.execPath(), {
      // V8's own heap cap a little above the limit: the backstop for an allocation burst that
      // never yields to report its heap (V8 then aborts the process with SIGTRAP).
      args: [
        "run",
        "-A",
        `--config=${ROOT}deno.json`,
        `--v8-flags=--max-old-space-size=${heapCapMb(limits.memoryMb)}`,
        ISOLATE,
      ],
      cwd: ROOT,
      ...(env ? { env: isolateEnv(env), clearEnv: true } : {}),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.schedstat = `/proc/${this.child.pid}/task/${this.child.pid}/schedstat`;
    this.stdin = this.child.stdin.getWriter();
    const reading = this.read(this.child.stdout);
    const status = this.child.status.then((s) => {
      const how = s.signal ? `signal ${s.signal}` : `exit code ${s.code}`;
      const reason = s.signal === "SIGTRAP" || s.signal === "SIGABRT"
        ? "Memory" // V8: "Fatal JavaScript out of memory"
        : this.state === "booting"
        ? "BootError"
        : "WorkerError";
      this.stop(reason, `process ended (${how})`);
    });
    this.done = Promise.all([reading, status]).then(() => {});
    const wall = limits.wallClockMs;
    this.timers.push(
      clock.setTimeout(() => this.retire("WallClockTime"), wall / 2),
      clock.setTimeout(
        () => this.unload("WallClockTime"),
        (wall * limits.beforeunloadWallClockPct) / 100,
      ),
      clock.setTimeout(() => this.stop("WallClockTime"), wall),
    );
    this.send({
      type: "init",
      entrypoint: entrypoint.href,
      name: fn,
      isolate: id,
      heapReportMs: limits.pollMs * 2,
    });
  }

  /** True when the isolate can take a request now. */
  get available(): boolean {
    return this.state === "idle" && !this.retiring;
  }

  /** Hands the isolate its one request. */
  dispatch(job: Job): void {
    this.state = "busy";
    this.job = job;
    job.isolate = this;
    this.clock.clearTimeout(this.idle);
    this.jobStartNs = this.readCpuNs();
    this.jobHeapPeak = this.heap;
    this.send({ type: "request", id: ++this.jobId, request: job.request });
    this.poll = setInterval(() => this.check(), this.limits.pollMs);
  }

  /**
   * Takes no new requests; terminates now when idle, else after booting or its request — and,
   * as the runtime does, only once its background work (`EdgeRuntime.waitUntil`) has settled.
   */
  retire(reason: StopReason): void {
    if (this.state === "dead") return;
    this.retiring ??= reason;
    if (this.state === "idle" && this.background === 0) this.stop(this.retiring, undefined, true);
  }

  /** Terminates the isolate at once; a pending request gets the answer the reason calls for. */
  stop(reason: StopReason, detail?: string, graceful = false): void {
    if (this.state === "dead") return;
    const bootFailed = this.state === "booting" && reason === "BootError";
    const cpuMs = this.cpuMsNow();
    const jobCpuMs = this.jobCpuMs();
    this.state = "dead";
    try {
      this.child.kill("SIGKILL");
    } catch { /* already gone */ }
    this.stdin.abort().catch(() => {});
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.clock.clearTimeout(this.idle);
    clearInterval(this.poll);
    const job = this.job;
    this.job = undefined;
    if (job) {
      const response = reason === "CPUTime" || reason === "Memory"
        ? resourceLimit()
        : reason === "WallClockTime" || reason === "RequestTimeout"
        ? timeoutError()
        : reason === "Shutdown"
        ? shuttingDown()
        : reason === "BootError"
        ? bootError()
        : workerError();
      job.finish({ response, cpuMs: jobCpuMs, heapMb: mib(this.jobHeapPeak), isolate: this.id });
    }
    this.log({
      level: graceful || reason === "Shutdown" ? "info" : "warn",
      msg: graceful ? "Edge isolate retired" : "Edge isolate terminated",
      function: this.fn,
      isolate: this.id,
      reason,
      ...(detail ? { detail } : {}),
      requests: this.requests,
      cpu_ms: cpuMs,
      heap_mb: Math.round(this.heap / 2 ** 20),
      age_ms: Math.round(performance.now() - this.started),
    });
    this.hooks.gone(this, bootFailed);
  }

  private send(msg: ToIsolate) {
    if (this.state === "dead") return;
    this.stdin.write(encoder.encode(`${encode(msg)}\n`)).catch(() => {});
  }

  /** Reads the isolate's stdout: message lines to `receive`, the rest to our stdout. */
  private async read(stdout: ReadableStream<Uint8Array>) {
    try {
      for await (const line of lines(stdout)) {
        const at = line.indexOf(MARK);
        const text = at < 0 ? line : line.slice(0, at);
        if (at !== 0) writeAllSync(Deno.stdout, encoder.encode(`${text}\n`));
        if (at >= 0) this.receive(decode<FromIsolate>(line.slice(at + 1)));
      }
    } catch { /* the process was killed mid-line */ }
  }

  private receive(msg: FromIsolate) {
    if (this.state === "dead") return;
    this.heap = msg.heap;
    if (this.job) this.jobHeapPeak = Math.max(this.jobHeapPeak, msg.heap);
    switch (msg.type) {
      case "ready": {
        this.log({
          level: "info",
          msg: "Edge isolate started",
          function: this.fn,
          isolate: this.id,
          pid: this.child.pid,
          boot_ms: Math.round(performance.now() - this.started),
          boot_cpu_ms: ms(this.readCpuNs()),
        });
        // A threshold passed while the module loaded: dispatch now that it can listen.
        for (const reason of this.unloaded) this.send({ type: "beforeunload", reason });
        if (this.retiring) return this.stop(this.retiring, undefined, true);
        this.becomeIdle();
        return;
      }
      case "boot_error":
        return this.stop("BootError", msg.message);
      case "heap":
        this.check();
        return;
      case "background":
        this.background = msg.pending;
        if (this.background === 0 && this.retiring && this.state === "idle") {
          this.stop(this.retiring, undefined, true);
        }
        return;
      case "unloaded":
        this.log({
          level: "info",
          msg: "Edge beforeunload dispatched",
          function: this.fn,
          isolate: this.id,
          reason: msg.reason,
        });
        return;
      case "response":
      case "error": {
        const job = this.job;
        if (!job || msg.id !== this.jobId) return;
        if (this.check()) return; // went over a limit: terminated, the job got its 546
        this.endJob();
        this.requests++;
        job.finish({
          response: msg.type === "response" ? msg.response : workerError(),
          cpuMs: this.lastJobCpuMs,
          heapMb: mib(this.jobHeapPeak),
          isolate: this.id,
        });
        if (msg.type === "error") this.retiring ??= "WorkerError";
        if (msg.type === "error" || (this.retiring && this.background === 0)) {
          this.stop(this.retiring!, undefined, msg.type === "response");
        } else this.becomeIdle();
      }
    }
  }

  private lastJobCpuMs = 0;
  private jobHeapPeak = 0;

  private endJob() {
    clearInterval(this.poll);
    const now = this.readCpuNs();
    const used = Math.max(0, now - this.jobStartNs);
    this.cpuNs += used;
    this.lastJobCpuMs = ms(used);
    this.job = undefined;
  }

  private becomeIdle() {
    this.state = "idle";
    this.clock.clearTimeout(this.idle);
    this.idle = this.clock.setTimeout(() => this.retire("Idle"), this.limits.idleTimeoutMs);
    this.hooks.available(this);
  }

  /** Applies the CPU and memory limits; true when the isolate was terminated. */
  private check(): boolean {
    if (this.state === "dead") return true;
    const { cpuMs, memoryMb } = this.limits;
    const cpu = this.cpuMsNow();
    const heapMb = this.heap / 2 ** 20;
    if (cpu > cpuMs) {
      this.stop("CPUTime", `${cpu} ms of CPU`);
      return true;
    }
    if (heapMb > memoryMb) {
      this.stop("Memory", `${Math.round(heapMb)} MB of heap`);
      return true;
    }
    if (cpu >= (cpuMs * this.limits.beforeunloadCpuPct) / 100) this.unload("CPUTime");
    if (heapMb >= (memoryMb * this.limits.beforeunloadMemoryPct) / 100) this.unload("Memory");
    if (cpu > cpuMs / 2) this.retire("CPUTime");
    else if (heapMb > memoryMb / 2) this.retire("Memory");
    return this.dead;
  }

  /** True once terminated. */
  get dead(): boolean {
    return this.state === "dead";
  }

  /** Dispatches `beforeunload` in the isolate once per reason (after its module loaded). */
  unload(reason: UnloadReason): void {
    if (this.state === "dead" || this.unloaded.has(reason)) return;
    this.unloaded.add(reason);
    if (this.state !== "booting") this.send({ type: "beforeunload", reason });
  }

  /** CPU time over the isolate's requests so far, the running one included. */
  private cpuMsNow(): number {
    const running = this.job ? Math.max(0, this.readCpuNs() - this.jobStartNs) : 0;
    return ms(this.cpuNs + running);
  }

  private jobCpuMs(): number {
    return this.job ? ms(Math.max(0, this.readCpuNs() - this.jobStartNs)) : 0;
  }

  private lastCpuNs = 0;

  /** The isolate JS thread's time on CPU in ns (first field of its schedstat). */
  private readCpuNs(): number {
    if (!this.schedstat) return 0;
    try {
      const text = Deno.readTextFileSync(this.schedstat);
      this.lastCpuNs = Number(text.slice(0, text.indexOf(" ")));
    } catch { /* the thread is gone: keep the last reading */ }
    return this.lastCpuNs;
  }
}
