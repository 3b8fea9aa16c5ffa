/** The counting semaphore that bounds concurrent MercadoPago calls (no stack needed). */
import assert from "node:assert/strict";
import { Limiter, sharedLimiter } from "../shared/platform/limiter.ts";

Deno.test("Limiter: never more than max holders, waiters served in arrival order", async () => {
  const limiter = new Limiter(2);
  let active = 0;
  let peak = 0;
  const order: number[] = [];
  const gates: (() => void)[] = [];
  const tasks = [0, 1, 2, 3, 4].map(async (i) => {
    const release = await limiter.acquire();
    order.push(i);
    active++;
    peak = Math.max(peak, active);
    await new Promise<void>((resolve) => gates.push(resolve));
    active--;
    release();
  });
  while (order.length < 5) {
    await new Promise((r) => setTimeout(r, 0));
    assert.ok(active <= 2);
    gates.shift()?.();
  }
  gates.forEach((g) => g());
  await Promise.all(tasks);
  assert.equal(peak, 2);
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
});

Deno.test("Limiter: releasing twice frees one slot only", async () => {
  const limiter = new Limiter(1);
  const release = await limiter.acquire();
  release();
  release();
  const a = await limiter.acquire();
  let second = false;
  const b = limiter.acquire().then((r) => {
    second = true;
    return r;
  });
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(second, false, "a double release must not open a second slot");
  a();
  (await b)();
});

Deno.test("sharedLimiter: one limiter per capacity in the isolate", () => {
  assert.equal(sharedLimiter(3), sharedLimiter(3));
  assert.notEqual(sharedLimiter(3), sharedLimiter(4));
  assert.equal(sharedLimiter(5).max, 5);
});
