/** The bounded read-ahead pipeline (`shared/platform/pipeline.ts`) the bulk passes share. */
import assert from "node:assert/strict";
import { BoundedTasks, forEachPage } from "../shared/platform/pipeline.ts";

/** A promise and the functions that settle it, held by the test (no timers). */
function latch<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => [resolve, reject] = [res, rej]);
  return { promise, resolve, reject };
}

Deno.test("forEachPage: keyset pages in order, the next read before the current page is used, stopping at a short page", async () => {
  const rows = Array.from({ length: 7 }, (_, i) => i + 1);
  const reads: (number | undefined)[] = [];
  const log: string[] = [];
  await forEachPage(
    (last: number | undefined) => {
      reads.push(last);
      log.push(`read after ${last}`);
      const from = last ?? 0;
      return Promise.resolve(rows.filter((r) => r > from).slice(0, 3));
    },
    3,
    (page) => {
      log.push(`use ${page.join(",")}`);
      return Promise.resolve();
    },
  );
  assert.deepEqual(reads, [undefined, 3, 6]);
  assert.deepEqual(log, [
    "read after undefined",
    "read after 3",
    "use 1,2,3",
    "read after 6",
    "use 4,5,6",
    "use 7",
  ]);
});

Deno.test("BoundedTasks: at most depth in flight; the first failure is rethrown by add and finish", async () => {
  const tasks = new BoundedTasks(2);
  const a = latch(), b = latch(), c = latch();
  await tasks.add(a.promise);
  let third = false;
  const adding = tasks.add(b.promise).then(() => third = true);
  await Promise.resolve();
  assert.equal(third, false, "the second add waits: two in flight");
  a.resolve();
  await adding;
  assert.equal(third, true);
  b.reject(new Error("first"));
  c.reject(new Error("second"));
  await assert.rejects(() => tasks.add(c.promise), /first/);
  await assert.rejects(() => tasks.finish(), /first/);
});
