/**
 * The clock behind the gateway's timers (wall clock, request timeout, idle retirement). The
 * real one is `setTimeout`; a test passes a `ManualClock` and moves time itself, so a limit's
 * outcome never depends on how fast the machine is.
 */

/** A timer handle of a `Clock`. */
export type ClockTimer = { readonly id: number } | ReturnType<typeof setTimeout>;

/** What the gateway's timers need. */
export interface Clock {
  setTimeout(fn: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer | undefined): void;
}

/** Real time. */
export const realClock: Clock = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
};

/** A clock that moves only when the test says: `advance(ms)` fires what falls due, in order. */
export class ManualClock implements Clock {
  private now = 0;
  private next = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  /** Milliseconds advanced so far. */
  get elapsed(): number {
    return this.now;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    const id = ++this.next;
    this.timers.set(id, { at: this.now + Math.max(0, ms), fn });
    return { id };
  }

  clearTimeout(timer: ClockTimer | undefined): void {
    if (timer && typeof timer === "object" && "id" in timer) this.timers.delete(timer.id);
  }

  /** Moves time by `ms`, firing every timer due meanwhile (earliest first, then in creation order). */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) {
        if (entry[1].at <= until && (!due || entry[1].at < due[1].at)) due = entry;
      }
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = until;
  }
}
