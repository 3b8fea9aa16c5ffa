/**
 * The one bounded read-ahead pipeline of the bulk passes (backfill, key rotation, the batched
 * sync): keyset pages read one ahead of their use, and the work on them kept to a bounded
 * number in flight, the first failure rethrown.
 */

/**
 * Reads keyset pages one ahead of their use: `read(last)` gives the page after row `last` (the
 * previous page's last row; `undefined` for the first), and a page shorter than `pageSize` is
 * the last. `use` runs on each page in order while the next one is being read.
 */
export async function forEachPage<T>(
  read: (last: T | undefined) => Promise<T[]>,
  pageSize: number,
  use: (page: T[]) => Promise<void>,
): Promise<void> {
  let next: Promise<T[]> | undefined = read(undefined);
  while (next) {
    const page: T[] = await next;
    next = page.length === pageSize ? read(page[page.length - 1]) : undefined;
    next?.catch(() => {}); // awaited on the next turn; an early exit must not leave it unhandled
    await use(page);
  }
}

/**
 * At most `depth` tasks in flight: `add` resolves once there is room for the next one, and
 * rethrows the first failure of any task; `finish` waits for all and rethrows it too.
 */
export class BoundedTasks {
  #inFlight: Promise<void>[] = [];
  #failure: unknown;
  #failed = false;

  constructor(private readonly depth: number) {}

  /** Adds a running task; waits while `depth` are in flight. */
  async add(task: Promise<unknown>): Promise<void> {
    this.#inFlight.push(task.then(() => {}, (err) => {
      if (!this.#failed) [this.#failed, this.#failure] = [true, err];
    }));
    if (this.#inFlight.length >= this.depth) await this.#inFlight.shift();
    if (this.#failed) throw this.#failure;
  }

  /** Waits for every task added; rethrows the first failure. */
  async finish(): Promise<void> {
    await Promise.all(this.#inFlight.splice(0));
    if (this.#failed) throw this.#failure;
  }
}
