/**
 * The pure decisions behind mp-health (docs/contract.md, "mp-reconcile / mp-health") and the
 * background delivery (docs/events.md, "Push"): when a schedule is stalled, what makes `ok`
 * false, the connection figures by state, how a failed delivery is named, and that
 * `defineFunction` starts a function's declared follow-up after its answer — errors included —
 * and never after a refused request.
 */
import assert from "node:assert/strict";
import { scheduleStatuses } from "../shared/schedules/runs.ts";
import { healthProblems } from "../shared/operations/health.ts";
import { connectionTotals } from "../shared/store/account_status.ts";
import { attemptError, attemptResult, noAnswerOf, receiverHost } from "../shared/events/deliver.ts";
import { defineFunction, json } from "../shared/platform/http.ts";
import { DomainError } from "../shared/platform/errors.ts";

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const now = new Date("2026-12-07T12:00:00Z");
const ago = (ms: number) => new Date(now.getTime() - ms);
const run = (function_name: string, at: Date) => ({
  function_name,
  last_finished_at: at,
  outcome: "completed",
});
const scheduled = (function_name: string, at: Date) => ({ function_name, scheduled_at: at });

Deno.test("stalled: a fresh deploy whose jobs were just scheduled is not stalled before its first runs were due", () => {
  const all = ["mp-refresh", "mp-reconcile", "mp-probe", "mp-deliver-events"];
  const s = scheduleStatuses([], all.map((f) => scheduled(f, ago(30 * S))), now);
  for (const name of all) {
    assert.equal(s[name as keyof typeof s].stalled, false, name);
    assert.equal(s[name as keyof typeof s].last_run_at, null);
    assert.equal(s[name as keyof typeof s].scheduled_at, ago(30 * S).toISOString());
  }
  // Twice the interval after scheduling with no run: stalled (every minute: after 2 minutes).
  const late = scheduleStatuses([], all.map((f) => scheduled(f, ago(2 * M + S))), now);
  assert.equal(late["mp-reconcile"].stalled, true);
  assert.equal(late["mp-refresh"].stalled, false, "every 10 minutes: 20 minutes to go");
  const exactly = scheduleStatuses([], [scheduled("mp-probe", ago(2 * M))], now);
  assert.equal(exactly["mp-probe"].stalled, false, "at exactly twice the interval: not yet");
});

Deno.test("stalled: counted from the later of the last completed run and the moment it was scheduled", () => {
  const s = scheduleStatuses(
    [
      run("mp-refresh", ago(21 * M)), // rescheduled 1 minute ago: counted from then
      run("mp-reconcile", ago(30 * S)), // ran recently, scheduled long ago
      run("mp-probe", ago(3 * M)), // both old
    ],
    [
      scheduled("mp-refresh", ago(1 * M)),
      scheduled("mp-reconcile", ago(10 * H)),
      scheduled("mp-probe", ago(4 * M)),
    ],
    now,
  );
  assert.equal(s["mp-refresh"].stalled, false);
  assert.equal(s["mp-refresh"].interval_s, 10 * 60);
  assert.equal(s["mp-reconcile"].stalled, false);
  assert.equal(s["mp-probe"].stalled, true);
  assert.equal(s["mp-deliver-events"].stalled, true, "neither scheduled nor ever run");
  assert.equal(s["mp-deliver-events"].scheduled_at, null);
  // Two records of one function: the later one counts.
  const two = scheduleStatuses(
    [],
    [scheduled("mp-probe", ago(10 * H)), scheduled("mp-probe", ago(S))],
    now,
  );
  assert.equal(two["mp-probe"].stalled, false);
});

const fine = { stalled: false, interval_s: 60 };
const outbox = { delivery: "on" as const, oldest_pending_age_s: null, failed_24h: 0 };

Deno.test("ok: false while a schedule is stalled, an event is pending over 15 minutes, or one failed in 24 hours", () => {
  assert.deepEqual(healthProblems({ "mp-probe": fine }, outbox), []);
  const stalled = healthProblems({ "mp-probe": { stalled: true, interval_s: 60 } }, outbox);
  assert.equal(stalled.length, 1);
  assert.match(stalled[0], /mp-probe stalled/);
  // 15 minutes exactly is still fine; a second more is not.
  assert.deepEqual(healthProblems({}, { ...outbox, oldest_pending_age_s: 15 * 60 }), []);
  const old = healthProblems({}, { ...outbox, oldest_pending_age_s: 15 * 60 + 1 });
  assert.equal(old.length, 1);
  assert.match(old[0], /oldest pending event is 15 min old \(over 15 min\)/);
  // Before mp-deliver-events first ran, delivery is not known to be off: the rule holds.
  assert.equal(
    healthProblems({}, { ...outbox, delivery: "unknown", oldest_pending_age_s: 20 * 60 }).length,
    1,
  );
  // With delivery off the events wait for mp-events: pending is not a failure.
  assert.deepEqual(
    healthProblems({}, { ...outbox, delivery: "off", oldest_pending_age_s: 24 * 3600 }),
    [],
  );
  const failed = healthProblems({}, { ...outbox, failed_24h: 2 });
  assert.deepEqual(failed, ["2 event(s) failed in the last 24 hours"]);
  assert.equal(
    healthProblems({ "mp-refresh": { stalled: true, interval_s: 600 } }, {
      ...outbox,
      oldest_pending_age_s: 3600,
      failed_24h: 1,
    }).length,
    3,
  );
});

Deno.test("connection figures: one definition, by state; the states add up to the accounts", () => {
  const t = connectionTotals(
    { connected: 4, at_risk: 2, reauth_required: 3, revoked: 1, not_connected: 5 },
    2,
  );
  assert.deepEqual(t, {
    accounts: 15,
    connected: 4,
    expiring_7d: 2,
    needs_reauth: 3,
    at_risk: 2,
    states: { connected: 4, at_risk: 2, reauth_required: 3, revoked: 1, not_connected: 5 },
  });
  assert.equal(Object.values(t.states).reduce((a, b) => a + b, 0), t.accounts);
  // States never counted are 0; a state outside the five shows as a gap in the sum.
  const odd = connectionTotals({ connected: 1, bogus: 2 }, 0);
  assert.equal(odd.states.reauth_required, 0);
  assert.equal(odd.accounts, 3);
  assert.notEqual(Object.values(odd.states).reduce((a, b) => a + b, 0), odd.accounts);
});

Deno.test("delivery errors name the receiver's host and the cause, never the URL's path, query or user", () => {
  const host = receiverHost("https://user:pw@receiver.example/hooks/SECRET-PATH?sig=abc");
  assert.equal(host, "receiver.example");
  assert.equal(receiverHost("http://127.0.0.1:25999/platform/events"), "127.0.0.1:25999");
  assert.equal(receiverHost("not a url"), "the receiver");
  const err = (answer: Parameters<typeof attemptError>[1], ms = 15_000) =>
    attemptError("127.0.0.1:25999", answer, ms);
  assert.equal(err({ noAnswer: "refused" }), "127.0.0.1:25999 refused the connection");
  assert.equal(
    attemptError("receiver.example", { noAnswer: "dns" }, 15_000),
    "receiver.example: DNS lookup failed",
  );
  assert.equal(
    attemptError("receiver.example", { noAnswer: "tls" }, 15_000),
    "receiver.example: TLS handshake failed",
  );
  assert.equal(err({ noAnswer: "timeout" }), "127.0.0.1:25999 timed out after 15 s");
  assert.equal(err({ noAnswer: "timeout" }, 1500), "127.0.0.1:25999 timed out after 1.5 s");
  assert.equal(err({ status: 500 }), "127.0.0.1:25999 answered 500");
  assert.equal(err({ status: 404 }), "127.0.0.1:25999 answered 404");
  assert.equal(err({ status: 307 }), "127.0.0.1:25999 answered 307 (a redirect, not followed)");
  assert.match(err({ noAnswer: "closed" }), /^127\.0\.0\.1:25999 closed the connection/);
  assert.match(err({ noAnswer: "network" }), /^127\.0\.0\.1:25999 could not be reached/);
  // Only a 2xx acknowledges.
  assert.deepEqual(attemptResult("h", { status: 200 }, 15_000), { ok: true });
  assert.deepEqual(attemptResult("h", { status: 204 }, 15_000), { ok: true });
  for (const status of [301, 302, 307, 308, 400, 410, 500, 503]) {
    assert.equal(attemptResult("h", { status }, 15_000).ok, false, String(status));
  }
  assert.deepEqual(attemptResult("h", { noAnswer: "refused" }, 15_000), {
    ok: false,
    error: "h refused the connection",
  });
});

/** A fetch error as Deno 2 throws it: TypeError "fetch failed" with the reason in its cause. */
const fetchFailed = (reason: string) =>
  new TypeError("fetch failed", {
    cause: new Error(
      `error sending request for url (http://x/SECRET): client error (Connect): ${reason}`,
    ),
  });

Deno.test("delivery errors: the cause is read from the fetch error and its causes", () => {
  assert.equal(
    noAnswerOf(fetchFailed("tcp connect error: Connection refused (os error 111)")),
    "refused",
  );
  assert.equal(
    noAnswerOf(
      fetchFailed("dns error: failed to lookup address information: Name or service not known"),
    ),
    "dns",
  );
  assert.equal(
    noAnswerOf(fetchFailed("received corrupt message of type InvalidContentType")),
    "tls",
  );
  assert.equal(noAnswerOf(fetchFailed("invalid peer certificate: UnknownIssuer")), "tls");
  assert.equal(
    noAnswerOf(new DOMException("The operation was aborted due to timeout", "TimeoutError")),
    "timeout",
  );
  assert.equal(noAnswerOf(fetchFailed("connection closed before message completed")), "closed");
  assert.equal(
    noAnswerOf(new TypeError("Fetch failed: Requests to port 22 are blocked")),
    "blocked",
  );
  assert.equal(noAnswerOf(new TypeError("fetch failed")), "network");
  assert.equal(noAnswerOf(undefined), "network");
});

// ---- the platform's follow-up after a function's answer (defineFunction's `changes`) ----

/** A function declaring `changes`, answering as `outcome` says; what followed is counted. */
function declared(outcome: (input: { fail?: string }) => Response, when?: boolean) {
  const follow = { calls: 0 };
  const handler = defineFunction({
    name: "follow-up-probe",
    methods: ["POST"],
    auth: "public",
    needs: [],
    changes: {
      name: "probe",
      run: () => {
        follow.calls++;
        return Promise.resolve();
      },
      ...(when === undefined ? {} : { when: () => when }),
    },
    async run({ req }) {
      const body = await req.json().catch(() => ({}));
      return outcome(body);
    },
  });
  return { handler, follow };
}

const post = (body: unknown) =>
  new Request("http://fn.test/", {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
  });

Deno.test("changes: the follow-up starts after the answer, errors included, held by EdgeRuntime.waitUntil", async () => {
  const held: Promise<unknown>[] = [];
  const g = globalThis as { EdgeRuntime?: unknown };
  const before = g.EdgeRuntime;
  g.EdgeRuntime = { waitUntil: (p: Promise<unknown>) => held.push(p) };
  try {
    const { handler, follow } = declared((input) => {
      if (input.fail === "reauth") {
        throw new DomainError("mp_reauth_required", "the seller must connect again");
      }
      if (input.fail === "bad") throw new DomainError("invalid_request", "bad");
      return json(200, { ok: true });
    });
    assert.equal((await handler(post({}))).status, 200);
    assert.equal(follow.calls, 1);
    // The report path's answer: 404 mp_reauth_required after the change — it follows too.
    assert.equal((await handler(post({ fail: "reauth" }))).status, 404);
    assert.equal(follow.calls, 2);
    assert.equal(held.length, 2, "each follow-up handed to EdgeRuntime.waitUntil");
    await Promise.all(held);
    // A refused request (400) changed nothing: no follow-up; a wrong method never reaches run.
    assert.equal((await handler(post({ fail: "bad" }))).status, 400);
    assert.equal((await handler(new Request("http://fn.test/", { method: "GET" }))).status, 405);
    assert.equal(follow.calls, 2);
  } finally {
    g.EdgeRuntime = before;
  }
});

Deno.test("changes: `when` limits the follow-up to the requests that may change something", async () => {
  const off = declared(() => json(200, {}), false);
  assert.equal((await off.handler(post({}))).status, 200);
  assert.equal(off.follow.calls, 0);
  const on = declared(() => json(200, {}), true);
  assert.equal((await on.handler(post({}))).status, 200);
  assert.equal(on.follow.calls, 1);
});

Deno.test("changes: `when` sees the answer (a callback sent back with invalid_state used nothing: no follow-up)", async () => {
  const seen: number[] = [];
  const follow = { calls: 0 };
  const handler = defineFunction({
    name: "follow-up-answer",
    methods: ["GET"],
    auth: "public",
    needs: [],
    changes: {
      name: "probe",
      run: () => {
        follow.calls++;
        return Promise.resolve();
      },
      when: (_input, answer) => {
        seen.push(answer.status);
        return !answer.headers.get("location")?.includes("reason=invalid_state");
      },
    },
    run: ({ req }) =>
      Promise.resolve(
        new Response(null, {
          status: 302,
          headers: { location: `https://app.test/?${new URL(req.url).search.slice(1)}` },
        }),
      ),
  });
  await handler(new Request("http://fn.test/?mp=error&reason=invalid_state"));
  assert.equal(follow.calls, 0);
  await handler(new Request("http://fn.test/?mp=connected&account_id=x"));
  assert.equal(follow.calls, 1);
  assert.deepEqual(seen, [302, 302]);
});
