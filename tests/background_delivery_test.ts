// deno-lint-ignore-file no-explicit-any
/**
 * Background delivery (docs/events.md, "Push"): a function that changes a connection delivers
 * the events of its change in the background of its own request, whatever it answered. With
 * the schedules paused (mp-deliver-events included) and nobody calling mp-deliver-events, a
 * checkout report that makes an account `reauth_required` — answered 404 `mp_reauth_required`
 * — gets the account's events to the platform's receiver (the one the test stack's
 * PLATFORM_WEBHOOK_URL points at: the gateway's port + 7, run by this file), in order, signed.
 */
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import {
  adminDb,
  call,
  eventually,
  logLine,
  pauseJobsDuringFile,
  provisionedPair,
  sandbox,
  stack,
} from "./_stack.ts";

interface Received {
  id: string;
  type: string;
  account_id: string;
}

const received: Received[] = [];
let server: Deno.HttpServer | undefined;
/** Pending events of other accounts this file made wait, given back after it. */
let parked: string[] = [];

function startReceiver() {
  const [first] = stack.env("PLATFORM_WEBHOOK_SECRETS").split(" ");
  const hook = new Webhook(first);
  server ??= Deno.serve(
    {
      hostname: "127.0.0.1",
      port: Number(new URL(stack.functionsUrl).port) + 7,
      onListen: () => {},
    },
    async (req) => {
      const body = await req.text();
      const event = hook.verify(body, Object.fromEntries(req.headers)) as any;
      received.push({
        id: req.headers.get("webhook-id")!,
        type: event.type,
        account_id: event.data.account_id,
      });
      return Response.json({ ok: true });
    },
  );
}

pauseJobsDuringFile(undefined, async () => {
  await server?.shutdown();
  if (parked.length) {
    await adminDb()`update mp_event_outbox set next_attempt_at = now()
      where id = any(${parked}::uuid[]) and status = 'pending'`;
  }
});

Deno.test("a rejected-token report answered 404 mp_reauth_required delivers its event in the background, without mp-deliver-events", async () => {
  startReceiver();
  const p = await provisionedPair();
  // Other files' pending events wait, so the background run's 50 are this account's.
  parked = (await adminDb()`update mp_event_outbox set next_attempt_at = now() + interval '1 hour'
    where status = 'pending' and account_id <> ${p.accountId} and next_attempt_at <= now()
    returning id`).map((r) => r.id);
  const [job] = await adminDb()`select runs from mp_function_runs
    where function_name = 'mp-deliver-events'`;
  await sandbox.invalidate(p.seller, "grant");
  const rid = `bg-${crypto.randomUUID()}`;
  const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 }, {
    headers: { "x-request-id": rid },
  });
  assert.equal(res.status, 404, JSON.stringify(res.body));
  assert.equal(res.body.error.code, "mp_reauth_required");
  // Liveness bound only: the receiver gets both of the account's events, in order.
  const mine = await eventually(() => {
    const got = received.filter((r) => r.account_id === p.accountId);
    return Promise.resolve(got.some((r) => r.type === "mp.connection.reauth_required") && got);
  }, 30_000);
  const rows = await adminDb()`select id, type, status from mp_event_outbox
    where account_id = ${p.accountId} order by seq`;
  assert.deepEqual(rows.map((r) => r.type), [
    "mp.connection.connected",
    "mp.connection.reauth_required",
  ]);
  assert.deepEqual(mine.map((r) => r.id), rows.map((r) => r.id), "each once, in order");
  await eventually(async () => {
    const [{ n }] = await adminDb()`select count(*)::int as n from mp_event_outbox
      where account_id = ${p.accountId} and status <> 'delivered'`;
    return n === 0;
  }, 30_000);
  // Nobody ran mp-deliver-events: its run count did not move; the report's own request did it.
  const [after] = await adminDb()`select runs from mp_function_runs
    where function_name = 'mp-deliver-events'`;
  assert.equal(after?.runs, job?.runs);
  const line = JSON.parse(await logLine('"Event delivery run finished"', `"request_id":"${rid}"`));
  assert.equal(line.background, "connection");
  assert.ok(line.delivered >= 2);
});
