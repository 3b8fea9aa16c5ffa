/**
 * The isolates of one function: a request goes to an idle isolate, or a new one is started
 * (up to `maxIsolates`), or it waits in a FIFO queue; every request is bounded by the
 * request timeout, queueing included.
 */
import type { EdgeLimits } from "./limits.ts";
import { type Clock, realClock } from "./clock.ts";
import {
  bootError,
  shuttingDown,
  timeoutError,
  type UnloadReason,
  type WireRequest,
} from "./protocol.ts";
import { EdgeIsolate, type Job, type LogSink, type Outcome } from "./isolate_host.ts";

/** The isolate pool of one function. */
export class FunctionPool {
  private readonly isolates = new Set<EdgeIsolate>();
  /** Stopped isolates whose process has not been reaped yet. */
  private readonly exiting = new Set<EdgeIsolate>();
  private readonly queue: Job[] = [];
  private started = 0;
  private closed = false;

  constructor(
    readonly name: string,
    private readonly entrypoint: URL,
    private readonly limits: EdgeLimits,
    private readonly log: LogSink,
    /** The isolates' whole environment; undefined: they inherit the process's. */
    private readonly env?: Record<string, string>,
    /** The clock of the request timeout and the isolates' timers. */
    private readonly clock: Clock = realClock,
  ) {}

  /** Serves one request on an isolate of this function; never rejects. */
  run(request: WireRequest): Promise<Outcome> {
    if (this.closed) return Promise.resolve({ response: shuttingDown(), cpuMs: 0 });
    return new Promise<Outcome>((resolve) => {
      const job: Job = {
        request,
        settled: false,
        finish: (outcome) => {
          if (job.settled) return;
          job.settled = true;
          this.clock.clearTimeout(timer);
          resolve(outcome);
        },
      };
      const timer = this.clock.setTimeout(() => {
        if (job.isolate) return job.isolate.stop("RequestTimeout");
        this.dequeue(job);
        job.finish({ response: timeoutError(), cpuMs: 0 });
      }, this.limits.requestTimeoutMs);
      this.queue.push(job);
      this.pump();
    });
  }

  /** Terminates every isolate, answers every queued request 503, and waits for the exits. */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.finish({ response: shuttingDown(), cpuMs: 0 });
    const all = [...this.isolates, ...this.exiting];
    for (const isolate of all) isolate.stop("Shutdown");
    await Promise.all(all.map((i) => i.done));
  }

  /**
   * Dispatches `beforeunload` (once per reason) to every live isolate now, as the runtime does
   * at a limit's threshold; returns how many isolates it went to.
   */
  unload(reason: UnloadReason): number {
    for (const isolate of this.isolates) isolate.unload(reason);
    return this.isolates.size;
  }

  /** Terminates every live isolate now, as the runtime does at a limit; returns how many. */
  terminate(reason: UnloadReason): number {
    const all = [...this.isolates];
    for (const isolate of all) isolate.stop(reason);
    return all.length;
  }

  /** Isolates alive now (booting, idle or busy). */
  get size(): number {
    return this.isolates.size;
  }

  private dequeue(job: Job) {
    const at = this.queue.indexOf(job);
    if (at >= 0) this.queue.splice(at, 1);
  }

  /** Gives queued requests to idle isolates, then starts isolates for the rest. */
  private pump() {
    if (this.closed) return;
    for (const isolate of this.isolates) {
      if (!this.queue.length) return;
      if (isolate.available) isolate.dispatch(this.queue.shift()!);
    }
    let booting = [...this.isolates].filter((i) => i.state === "booting").length;
    while (this.queue.length > booting && this.isolates.size < this.limits.maxIsolates) {
      this.spawn();
      booting++;
    }
  }

  private spawn() {
    const id = `${this.name}#${++this.started}`;
    const isolate = new EdgeIsolate(
      this.name,
      id,
      this.entrypoint,
      this.limits,
      {
        available: () => this.pump(),
        gone: (gone, bootFailed) => {
          this.isolates.delete(gone);
          this.exiting.add(gone);
          gone.done.then(() => this.exiting.delete(gone));
          // One failed boot fails one waiting request, so a broken function cannot loop.
          if (bootFailed) this.queue.shift()?.finish({ response: bootError(), cpuMs: 0 });
          this.pump();
        },
      },
      this.log,
      this.env,
      this.clock,
    );
    this.isolates.add(isolate);
  }
}
