/**
 * A counting semaphore: at most `max` holders at once, waiters served first come, first
 * served. The refresher bounds its concurrency toward each MercadoPago application with it.
 */

/** Bounds how many tasks run at once. */
export class Limiter {
  #active = 0;
  #waiting: (() => void)[] = [];

  constructor(readonly max: number) {}

  /** Waits for a free slot; the returned function gives it back (call it exactly once). */
  async acquire(): Promise<() => void> {
    if (this.#active >= this.max) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active++;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next(); // the slot passes straight to the next waiter
      else this.#active--;
    };
  }
}

const shared = new Map<string, Limiter>();

/**
 * The isolate's limiter of capacity `max` for `key` (concurrent runs in one isolate share it;
 * each key, e.g. each MercadoPago application, has its own slots).
 */
export function sharedLimiter(max: number, key = ""): Limiter {
  const name = `${key}:${max}`;
  let limiter = shared.get(name);
  if (!limiter) shared.set(name, limiter = new Limiter(max));
  return limiter;
}
