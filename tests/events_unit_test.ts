// deno-lint-ignore-file no-explicit-any
/**
 * The pure decisions of event delivery and the pull API (docs/contract.md, "Events to the
 * platform"): the retry schedule, the outcome of an attempt, the cursor, the query of mp-events,
 * the webhook secrets' parsing, the schedules' `stalled`, and the signatures as the
 * `standardwebhooks` library verifies them.
 */
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { nextAttemptAt, retryDelayMs } from "../shared/events/schedule.ts";
import { decodeCursor, encodeCursor } from "../shared/events/cursor.ts";
import { attemptResult, DELIVER_MAX_LIMIT, outcomeOf } from "../shared/events/deliver.ts";
import { DELIVER_CHAIN_MAX, DELIVER_LANES, successorsToStart } from "../shared/events/lanes.ts";
import { EventsQuery } from "../shared/events/pull.ts";
import { signatureHeaders, signers } from "../shared/events/sign.ts";
import { loadConfig, parseWebhookSecrets } from "../shared/platform/config.ts";
import { scheduleStatuses } from "../shared/schedules/runs.ts";
import { DomainError } from "../shared/platform/errors.ts";
import { validate } from "../shared/platform/input.ts";

const S = 1000;
const M = 60 * S;
const H = 60 * M;
/** docs/events.md "Push: mp-deliver-events": an event is retried for 3 days from its creation. */
const THREE_DAYS = 3 * 24 * H;
const secret = () =>
  `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))))}`;

Deno.test("retry schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then every 10 h", () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7, 8, 20].map(retryDelayMs),
    [5 * S, 5 * M, 30 * M, 2 * H, 5 * H, 10 * H, 10 * H, 10 * H, 10 * H],
  );
  assert.equal(retryDelayMs(0), 5 * S);
});

Deno.test("retry schedule: retried for 3 days from creation, then failed (null)", () => {
  const created = new Date("2026-01-01T00:00:00Z");
  const now = new Date(created.getTime() + 10 * S);
  assert.deepEqual(nextAttemptAt(created, 1, now), new Date(now.getTime() + 5 * S));
  const late = new Date(created.getTime() + THREE_DAYS - 9 * H);
  assert.deepEqual(nextAttemptAt(created, 9, late), null);
  const inside = new Date(created.getTime() + THREE_DAYS - 10 * H);
  assert.deepEqual(
    nextAttemptAt(created, 9, inside),
    new Date(created.getTime() + THREE_DAYS),
  );
  // Walking the schedule from creation: failed after about 3 days, never before.
  let at = created;
  let attempts = 0;
  for (;;) {
    attempts++;
    const next = nextAttemptAt(created, attempts, at);
    if (!next) break;
    at = next;
  }
  assert.ok(at.getTime() - created.getTime() <= THREE_DAYS);
  assert.ok(at.getTime() - created.getTime() > THREE_DAYS - 10 * H);
  assert.equal(attempts, 12); // at 0, 5 s, 5 min, 35 min, 2.6 h, 7.6 h, 17.6 h … 67.6 h
});

Deno.test("attempt results: only a 2xx acknowledges; 3xx, 4xx, 5xx and no answer are retried", () => {
  const result = (answer: Parameters<typeof attemptResult>[1]) =>
    attemptResult("receiver.example", answer, 15_000);
  assert.deepEqual(result({ status: 200 }), { ok: true });
  assert.deepEqual(result({ status: 204 }), { ok: true });
  for (const s of [301, 302, 307, 308]) {
    assert.match((result({ status: s }) as any).error, /redirect/);
  }
  for (const s of [400, 404, 410, 500, 503]) assert.equal(result({ status: s }).ok, false);
  assert.deepEqual(result({ noAnswer: "timeout" }), {
    ok: false,
    error: "receiver.example timed out after 15 s",
  });
  const now = new Date();
  const event = { id: "e", retry_from: now, attempts: 1 };
  assert.deepEqual(outcomeOf(event, { ok: true }, now), { id: "e", outcome: "delivered" });
  assert.equal(outcomeOf(event, { ok: false, error: "http 500" }, now).outcome, "retry");
  const old = { id: "e", retry_from: new Date(now.getTime() - THREE_DAYS), attempts: 3 };
  assert.deepEqual(outcomeOf(old, { ok: false, error: "http 500" }, now), {
    id: "e",
    outcome: "failed",
    error: "http 500",
  });
});

Deno.test("cursor: round trip; anything else is refused", () => {
  for (const p of [{ xid: "0", pos: "0" }, { xid: "123456789012", pos: "42" }]) {
    const c = encodeCursor(p);
    assert.match(c, /^[A-Za-z0-9_-]+$/);
    assert.deepEqual(decodeCursor(c), p);
  }
  for (
    const bad of [
      "",
      "garbage!",
      "Zm9v",
      btoa("c1.1"),
      btoa("c1.1.2.3"),
      btoa("c1.-1.2"),
      btoa("c1.01.2"),
      btoa(`c1.${2n ** 64n}.1`),
      btoa(`c1.1.${2n ** 63n}`),
      "a".repeat(200),
    ]
  ) {
    assert.equal(decodeCursor(bad.replace(/=+$/, "")), null, bad);
  }
});

Deno.test("mp-events query: limit 1–500 and a cursor of ours, else 400 invalid_request", () => {
  const parse = (q: Record<string, unknown>) => validate(EventsQuery, q);
  assert.deepEqual(parse({}), { limit: 100 });
  assert.deepEqual(
    parse({ limit: "500", after: encodeCursor({ xid: "5", pos: "6" }) }),
    {
      after: { xid: "5", pos: "6" },
      limit: 500,
    },
  );
  for (
    const q of [
      { limit: "0" },
      { limit: "501" },
      { limit: "x" },
      { limit: "1e2" },
      { after: "zz" },
      { a: "1" },
    ]
  ) {
    assert.throws(
      () => parse(q),
      (e: unknown) => e instanceof DomainError && e.code === "invalid_request",
    );
  }
});

Deno.test("PLATFORM_WEBHOOK_SECRETS: whsec_ base64, space-separated; malformed names no secret", () => {
  const [a, b] = [secret(), secret()];
  assert.deepEqual(parseWebhookSecrets(`${a}  ${b}`), [a, b]);
  for (const bad of ["", "whsec_", "nope", "whsec_!!!!", "whsec_YQ=="]) {
    assert.throws(() => parseWebhookSecrets(bad));
  }
  const off = loadConfig({});
  assert.equal(off.platformWebhookUrl, undefined);
  assert.equal(off.platformWebhookTimeoutMs, 15_000);
  const on = loadConfig({
    PLATFORM_WEBHOOK_URL: "https://platform.example/hooks",
    PLATFORM_WEBHOOK_SECRETS: `${a} ${b}`,
    PLATFORM_WEBHOOK_TIMEOUT_MS: "1500",
  });
  assert.deepEqual(on.platformWebhookSecrets, [a, b]);
  assert.equal(on.platformWebhookTimeoutMs, 1500);
  const missing = loadConfig({ PLATFORM_WEBHOOK_URL: "https://platform.example/hooks" });
  assert.ok(missing.problems.has("PLATFORM_WEBHOOK_SECRETS"));
  const leaky = loadConfig({ PLATFORM_WEBHOOK_SECRETS: `${a} whsec_###` });
  assert.ok(!leaky.problems.get("PLATFORM_WEBHOOK_SECRETS")!.includes(a.slice(6)));
  assert.ok(loadConfig({ PLATFORM_WEBHOOK_URL: "ftp://x/" }).problems.has("PLATFORM_WEBHOOK_URL"));
  assert.ok(
    loadConfig({ PLATFORM_WEBHOOK_TIMEOUT_MS: "60000" }).problems.has(
      "PLATFORM_WEBHOOK_TIMEOUT_MS",
    ),
  );
});

Deno.test("signatures: one v1 per secret; the library verifies under either secret, not a third", () => {
  const [a, b] = [secret(), secret()];
  const body = JSON.stringify({ type: "mp.connection.revoked", timestamp: "t", data: {} });
  const headers = signatureHeaders(signers([a, b]), "evt-1", new Date(), body);
  assert.equal(headers["webhook-id"], "evt-1");
  assert.equal(headers["webhook-signature"].split(" ").length, 2);
  for (const s of [a, b]) assert.deepEqual(new Webhook(s).verify(body, headers), JSON.parse(body));
  assert.throws(() => new Webhook(secret()).verify(body, headers));
  assert.throws(() => new Webhook(a).verify(body + " ", headers));
});

Deno.test("schedules: stalled after two missed intervals or when never run", () => {
  const now = new Date("2026-01-01T12:00:00Z");
  const ago = (ms: number) => new Date(now.getTime() - ms);
  const s = scheduleStatuses(
    [
      { function_name: "mp-refresh", last_finished_at: ago(19 * M), outcome: "completed" },
      { function_name: "mp-reconcile", last_finished_at: ago(2 * M + S), outcome: "completed" },
      { function_name: "mp-probe", last_finished_at: ago(30 * S), outcome: "completed" },
    ],
    [],
    now,
  );
  assert.equal(s["mp-refresh"].stalled, false);
  assert.equal(s["mp-refresh"].interval_s, 600);
  assert.equal(s["mp-reconcile"].stalled, true);
  assert.equal(s["mp-probe"].stalled, false);
  assert.equal(s["mp-deliver-events"].stalled, true);
  assert.equal(s["mp-deliver-events"].last_run_at, null);
});

Deno.test("lanes: a full root opens the lanes the backlog fills, up to 4 delivering in all", () => {
  const root = { chain: 0, full: true, active: 0, limit: 1000 };
  assert.equal(successorsToStart({ ...root, due: 100_000 }), 4);
  assert.equal(successorsToStart({ ...root, due: 1 }), 1);
  assert.equal(successorsToStart({ ...root, due: 2500 }), 3);
  assert.equal(successorsToStart({ ...root, due: 100_000, active: 3 }), 1, "tops up only");
  assert.equal(successorsToStart({ ...root, due: 100_000, active: 9 }), 0);
  assert.equal(successorsToStart({ ...root, due: 0 }), 0, "nothing due: an idle outbox");
  assert.equal(successorsToStart({ ...root, due: 100_000, full: false }), 0, "drained run");
});

Deno.test("lanes: a lane continues itself once, while fewer than 4 others deliver, up to chain 30", () => {
  const lane = { full: true, due: 50_000, active: 3, limit: 1000 };
  assert.equal(successorsToStart({ ...lane, chain: 1 }), 1);
  assert.equal(successorsToStart({ ...lane, chain: 29 }), 1);
  assert.equal(successorsToStart({ ...lane, chain: 30 }), 0, "the chain's end");
  assert.equal(successorsToStart({ ...lane, chain: 5, active: 4 }), 0, "enough lanes");
  assert.equal(successorsToStart({ ...lane, chain: 5, due: 0 }), 0);
  assert.equal(successorsToStart({ ...lane, chain: 5, full: false }), 0);
  // However it is called, one scheduled run's lanes deliver a bounded number of events.
  assert.ok(DELIVER_LANES * DELIVER_CHAIN_MAX * DELIVER_MAX_LIMIT >= 100_000);
});
