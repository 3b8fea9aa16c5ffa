/**
 * Invariant 8 at the webhook's claim, in SQL (`mp_claim_webhook_delivery`): a delivery is
 * acted on once — a replay of one handled or being handled is refused, however often it comes —
 * and one whose handling failed, or was abandoned over 2 minutes ago, may be claimed again;
 * each delivery stays one row with its request-controlled text bounded. (Mutants of the claim
 * in tests/mutation/mutants.ts.)
 */
import assert from "node:assert/strict";
import { adminDb, closeDbs } from "./_stack.ts";

Deno.test.afterAll(closeDbs);

async function claim(requestId: string, action = "application.deauthorized"): Promise<boolean> {
  const [{ claimed }] = await adminDb()`select mp_claim_webhook_delivery(${requestId}, ${action},
    42::bigint) as claimed`;
  return claimed;
}

async function finish(requestId: string, status: "done" | "failed") {
  await adminDb()`select mp_finish_webhook_delivery(${requestId}, ${status})`;
}

async function rows(requestId: string) {
  return await adminDb()`select status, attempts, length(request_id) as id_length,
    length(action) as action_length from mp_webhook_deliveries
    where request_id = left(${requestId}, 128)`;
}

Deno.test("invariant 8: a delivery being handled or handled is not claimed again; one row however often it comes", async () => {
  const id = `claim-${crypto.randomUUID()}`;
  assert.equal(await claim(id), true, "a new delivery is claimed");
  for (let i = 0; i < 5; i++) assert.equal(await claim(id), false, "being handled: refused");
  await finish(id, "done");
  for (let i = 0; i < 5; i++) assert.equal(await claim(id), false, "handled: refused");
  const r = await rows(id);
  assert.equal(r.length, 1);
  assert.deepEqual([r[0].status, r[0].attempts], ["done", 1]);
});

Deno.test("a delivery whose handling failed, or was abandoned over 2 minutes ago, is claimed again — once", async () => {
  const failed = `claim-${crypto.randomUUID()}`;
  assert.equal(await claim(failed), true);
  await finish(failed, "failed");
  assert.equal(await claim(failed), true, "failed: MercadoPago's redelivery is handled");
  assert.equal(await claim(failed), false, "…by one claimer");

  const abandoned = `claim-${crypto.randomUUID()}`;
  assert.equal(await claim(abandoned), true);
  await adminDb()`update mp_webhook_deliveries set claimed_at = now() - interval '119 seconds'
    where request_id = ${abandoned}`;
  assert.equal(await claim(abandoned), false, "claimed under 2 minutes ago: still being handled");
  await adminDb()`update mp_webhook_deliveries set claimed_at = now() - interval '121 seconds'
    where request_id = ${abandoned}`;
  assert.equal(await claim(abandoned), true, "abandoned: claimed again");
  assert.equal(await claim(abandoned), false);
  const r = await rows(abandoned);
  assert.deepEqual([r.length, r[0].attempts], [1, 2]);
});

Deno.test("invariant 8: the claim stores at most 128 characters of request id and 64 of action", async () => {
  const long = `claim-${crypto.randomUUID()}-`.padEnd(300, "x");
  assert.equal(await claim(long, "a".repeat(300)), true);
  const r = await rows(long);
  assert.deepEqual([r.length, r[0].id_length, r[0].action_length], [1, 128, 64]);
});
