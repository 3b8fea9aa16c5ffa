/**
 * The chaos checker's judgements over the sandbox's ledger (tests/chaos/judge.ts), with the
 * contract's values written out: a refresh token is sent at most once, but for one last resort
 * within 7 days of its access token's expiry; 429 and 4xx other than invalid_grant are refused
 * unprocessed; a pair delivered for the refresh token the master holds is kept; request ids of
 * 1 to 128 characters of A-Za-z0-9._- are usable (A-Za-z0-9- for MercadoPago's webhook); the
 * sandbox's cross_app_calls must be 0, in all and per application; only a fault of an account's
 * own application (or of every call) excuses its failures.
 */
import assert from "node:assert/strict";
import { LedgerMirror, type LedgerView, type PairRecord } from "./chaos/ledger.ts";
import {
  countsAsSend,
  crossAppProblem,
  faultExcuses,
  isLastResort,
  mercadoPagoRequestId,
  sendsPerAccount,
  sendsProblem,
  unkeptPair,
  usableRequestId,
} from "./chaos/judge.ts";

const DAY = 86_400_000;
const T0 = 1_800_000_000_000;

const sent = (at: number, answer = "issued") => ({ at, answer, issued: null });

Deno.test("judge: answers refused unprocessed are 429 and 4xx other than invalid_grant; every other counts as a send", () => {
  for (const a of ["rate_limited", "invalid_client", "invalid_request", "unsupported_grant_type"]) {
    assert.equal(countsAsSend(a), false, a);
  }
  for (
    const a of [
      "issued",
      "dropped",
      "error_500",
      "error_500_after",
      "malformed_200",
      "other_seller",
      "timeout",
      "abandoned",
      "invalid_grant",
      "reused",
      "pending",
    ]
  ) assert.equal(countsAsSend(a), true, a);
});

Deno.test("judge: a refresh token is sent at most once; a second send only within 7 days of expiry; never a third", () => {
  const expires = T0 + 30 * DAY;
  assert.equal(sendsProblem([], expires), null);
  assert.equal(sendsProblem([sent(T0)], expires), null);
  // Retries of what MercadoPago refused unprocessed are not sends.
  assert.equal(
    sendsProblem([sent(T0, "rate_limited"), sent(T0 + 1, "invalid_client"), sent(T0 + 2)], expires),
    null,
  );
  // The last resort: the second send 7 days before expiry at most.
  assert.equal(sendsProblem([sent(T0, "error_500"), sent(expires - 7 * DAY)], expires), null);
  assert.equal(sendsProblem([sent(T0, "error_500"), sent(expires - 3 * DAY)], expires), null);
  assert.match(
    sendsProblem([sent(T0, "error_500"), sent(expires - 7 * DAY - 1)], expires)!,
    /sent twice \(error_500, issued\), the second 7\.0 days before/,
  );
  assert.match(
    sendsProblem([sent(T0, "timeout"), sent(T0 + 1, "reused")], expires)!,
    /sent twice/,
  );
  assert.match(
    sendsProblem(
      [
        sent(expires - 5 * DAY, "error_500"),
        sent(expires - 4 * DAY, "error_500"),
        sent(expires - 3 * DAY),
      ],
      expires,
    )!,
    /sent 3 times/,
  );
  // A token the sandbox never issued has no expiry: twice is too many.
  assert.match(
    sendsProblem([sent(T0, "invalid_grant"), sent(T0 + 1, "invalid_grant")], null)!,
    /sent 2 times/,
  );
});

/** A pair record as the ledger writes it. */
function pair(id: string, over: Partial<PairRecord> = {}): PairRecord {
  return {
    seq: 1,
    refresh_id: id,
    access_id: `a-${id}`,
    user_id: 501,
    client_id: "app",
    grant: 1,
    via: "refresh",
    parent: null,
    authorized_user_id: null,
    issued_at: T0,
    access_expires_at: T0 + 180 * DAY,
    answer: "delivered",
    presented: [],
    ...over,
  };
}

function mirror(pairs: PairRecord[]): LedgerMirror {
  const m = new LedgerMirror("http://127.0.0.1:1"); // fed by hand: never fetched
  const view: LedgerView = {
    seq: 10,
    pairs,
    unknown_presented: [],
    kills: [],
    users_me: [],
    faults: [],
  };
  m.apply(view);
  return m;
}

Deno.test("judge: a pair delivered for the held refresh token must be in the master or the escrow", () => {
  const m = mirror([
    pair("r0", { via: "seed", answer: "seeded" }),
    pair("r1", { parent: "r0" }),
    pair("r2", { parent: "r1" }),
  ]);
  // The master still holds r0 and nothing is escrowed: r1 was lost.
  assert.equal(unkeptPair(m, "r0", 501, null)?.refresh_id, "r1");
  // Escrowed (r1, or a pair refreshed from it): kept.
  assert.equal(unkeptPair(m, "r0", 501, "r1"), null);
  assert.equal(unkeptPair(m, "r0", 501, "r2"), null);
  // The master holds r2: nothing delivered after it.
  assert.equal(unkeptPair(m, "r2", 501, null), null);
});

Deno.test("judge: pairs never delivered whole, or of another seller, need not be kept", () => {
  for (const answer of ["dropped", "error_500_after", "malformed_200", "abandoned"] as const) {
    const m = mirror([pair("r0", { via: "seed" }), pair("r1", { parent: "r0", answer })]);
    assert.equal(unkeptPair(m, "r0", 501, null), null, answer);
  }
  const m = mirror([pair("r0", { via: "seed" }), pair("x1", { parent: "r0", user_id: 777 })]);
  assert.equal(unkeptPair(m, "r0", 501, null), null, "another seller's pair is not stored");
});

Deno.test("judge: the last resort is the second send within 7 days of expiry, and only that", () => {
  const expires = T0 + 30 * DAY;
  const first = sent(expires - 5 * DAY, "error_500");
  assert.equal(isLastResort([first], expires), false, "a first send");
  assert.equal(isLastResort([first, sent(expires - 4 * DAY)], expires), true);
  assert.equal(isLastResort([first, sent(expires - 7 * DAY)], expires), true);
  assert.equal(isLastResort([sent(T0, "error_500"), sent(expires - 7 * DAY - 1)], expires), false);
  assert.equal(
    isLastResort([first, sent(expires - 4 * DAY, "rate_limited")], expires),
    false,
    "refused unprocessed: no send at all",
  );
  assert.equal(
    isLastResort([first, sent(expires - 4 * DAY), sent(expires - 3 * DAY)], expires),
    false,
    "a third send",
  );
  assert.equal(isLastResort([first, sent(expires - 4 * DAY)], null), false, "never issued");
});

Deno.test("judge: sends per account, by the seller the sandbox issued the token to; the last resort is not a second refresh", () => {
  const a = pair("ra", { user_id: 1 });
  const b = pair("rb", { user_id: 2 });
  const near = pair("rn", {
    user_id: 4,
    access_expires_at: T0 + 3 * DAY,
    presented: [sent(T0, "error_500"), sent(T0 + 1)],
  });
  const foreign = pair("rf", { user_id: 3 });
  const owner = new Map([[1, "acc-a"], [2, "acc-b"], [4, "acc-n"]]);
  const { perAccount, unattributed } = sendsPerAccount(
    [
      { refreshId: "ra", pair: a, p: sent(T0), index: 0 },
      { refreshId: "ra", pair: a, p: sent(T0, "rate_limited"), index: 1 },
      { refreshId: "rb", pair: b, p: sent(T0, "error_500"), index: 0 },
      { refreshId: "rb", pair: b, p: sent(T0, "abandoned"), index: 1 },
      { refreshId: "rn", pair: near, p: near.presented[0], index: 0 },
      { refreshId: "rn", pair: near, p: near.presented[1], index: 1 },
      { refreshId: "rf", pair: foreign, p: sent(T0), index: 0 },
      { refreshId: "zz", pair: undefined, p: sent(T0, "invalid_grant"), index: 0 },
    ],
    (u) => owner.get(u),
  );
  assert.deepEqual([...perAccount].sort(), [["acc-a", 1], ["acc-b", 2], ["acc-n", 1]]);
  assert.deepEqual(unattributed.map((u) => u.refreshId), ["rf", "zz"]);
});

Deno.test("judge: request ids of 1 to 128 characters are usable; 129 or another character is not", () => {
  assert.equal(usableRequestId("a"), true);
  assert.equal(usableRequestId("a".repeat(128)), true);
  assert.equal(usableRequestId("a".repeat(129)), false);
  assert.equal(usableRequestId(""), false);
  assert.equal(usableRequestId("abc.def_ghi-JKL"), true);
  assert.equal(usableRequestId("abc!def"), false);
  assert.equal(mercadoPagoRequestId("a".repeat(128)), true);
  assert.equal(mercadoPagoRequestId("a".repeat(129)), false);
  assert.equal(mercadoPagoRequestId("abc-DEF-123"), true);
  assert.equal(mercadoPagoRequestId("abc.def"), false);
  assert.equal(mercadoPagoRequestId("abc_def"), false);
});

Deno.test("judge: cross_app_calls must be 0, in all and for every application", () => {
  const apps = (mla: number, mlb: number) => ({
    "1001": { site_id: "MLA", cross_app_calls: mla },
    "1002": { site_id: "MLB", cross_app_calls: mlb },
  });
  assert.equal(crossAppProblem({ cross_app_calls: 0, apps: apps(0, 0) }), null);
  assert.equal(crossAppProblem({ cross_app_calls: 0 }), null, "the single app: no per-app counts");
  const one = crossAppProblem({ cross_app_calls: 1, apps: apps(0, 1) });
  assert.ok(one?.includes("1 cross-application call"), one ?? "null");
  assert.ok(one?.includes("MLB 1"), one ?? "null");
  assert.ok(!one?.includes("MLA"), "an application with 0 is not named");
  // An application's own count is enough, whatever the total says.
  assert.notEqual(crossAppProblem({ cross_app_calls: 0, apps: apps(2, 0) }), null);
  assert.notEqual(crossAppProblem({ cross_app_calls: 3 }), null);
});

Deno.test("judge: only a fault of the account's own application, or of every call, excuses it", () => {
  const none = new Set<string>();
  assert.equal(faultExcuses("MLA", null, none), false, "no fault: nothing excused");
  // Queued, not taken yet.
  assert.equal(faultExcuses("MLA", { site: "MLB" }, none), false, "MLB's fault: not MLA's excuse");
  assert.equal(faultExcuses("MLB", { site: "MLB" }, none), true);
  assert.equal(faultExcuses("MLA", { site: null }, none), true, "a fault of every call");
  // Taken by a call in the step.
  assert.equal(faultExcuses("MLA", null, new Set(["MLB"])), false);
  assert.equal(faultExcuses("MLB", null, new Set(["MLB"])), true);
  assert.equal(faultExcuses("MLA", null, new Set(["*"])), true);
  assert.equal(faultExcuses("MLA", { site: "MLB" }, new Set(["MLB"])), false);
});
