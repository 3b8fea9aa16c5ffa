/**
 * Failures stay in their country, and totals are given per site (docs/contract.md,
 * "Applications and sites"): the 429 pause, the MercadoPago slots and the circuit breaker are
 * each application's; the per-site figures add up to the overall ones (no stack needed).
 */
import assert from "node:assert/strict";
import { mpPausedUntil, pauseAfterRateLimit } from "../shared/refresh/rate_limit_pause.ts";
import { sharedLimiter } from "../shared/platform/limiter.ts";
import { breakerOf } from "../shared/refresh/account.ts";
import type { Run } from "../shared/refresh/types.ts";
import { siteTotals } from "../shared/operations/health.ts";
import { verifySignatureWithAny } from "../shared/mercadopago/signature.ts";
import { signatureManifest, signManifest } from "../shared/mercadopago/signature.ts";
import { queuesBySite } from "../shared/probe/probe.ts";
import { deferralOf } from "../shared/refresh/outcome.ts";
import { loadConfig } from "../shared/platform/config.ts";
import type { ProbeClaim } from "../shared/store/verification.ts";

Deno.test("a 429 from one site's MercadoPago pauses that site's calls only", () => {
  const now = Date.now() + 20_000_000;
  pauseAfterRateLimit(now, 30_000, "MLB");
  assert.equal(mpPausedUntil("MLB"), now + 30_000);
  assert.ok(mpPausedUntil("MLA") < now, "the Argentine application is not paused");
  pauseAfterRateLimit(now, 2_000, "MLA");
  assert.equal(mpPausedUntil("MLA"), now + 2_000);
  assert.equal(mpPausedUntil("MLB"), now + 30_000, "each application keeps its own pause");
});

Deno.test("each application has its own MercadoPago slots: one site's calls never take another's", async () => {
  const mlb = sharedLimiter(2, "MLB");
  const mla = sharedLimiter(2, "MLA");
  assert.notEqual(mlb, mla);
  assert.equal(sharedLimiter(2, "MLB"), mlb, "one limiter per application in the isolate");
  // Brazil's slots all held (its MercadoPago hangs): Argentina still gets one at once.
  const held = [await mlb.acquire(), await mlb.acquire()];
  let thirdGot = false;
  const third = mlb.acquire().then((r) => {
    thirdGot = true;
    return r;
  });
  const release = await mla.acquire();
  assert.equal(thirdGot, false, "Brazil's third call still waits while Argentina's went through");
  release();
  held[0]();
  (await third)();
  held[1]();
});

Deno.test("the circuit breaker is each application's in a run", () => {
  const run = { breakers: new Map() } as unknown as Run;
  const mlb = breakerOf(run, "MLB");
  mlb.unknownInARow = 3;
  mlb.open = true;
  assert.equal(breakerOf(run, "MLB"), mlb, "the same breaker for the same application");
  assert.deepEqual(breakerOf(run, "MLA"), { unknownInARow: 0, open: false });
});

Deno.test("per-site totals: accounts without a site are the default site's; the sites add up to the whole", () => {
  const counted = [
    { site_id: "", state: "connected", accounts: 2 },
    { site_id: "", state: "not_connected", accounts: 5 },
    { site_id: "MLA", state: "connected", accounts: 3 },
    { site_id: "MLA", state: "at_risk", accounts: 1 },
    { site_id: "MLB", state: "reauth_required", accounts: 4 },
    { site_id: "MLB", state: "connected", accounts: 6 },
  ];
  const expiring = [{ site_id: "", expiring_7d: 1 }, { site_id: "MLB", expiring_7d: 2 }];
  const sites = siteTotals(counted, expiring, "MLA", ["MLA", "MLB", "MLM"]);
  assert.deepEqual(Object.keys(sites), ["MLA", "MLB", "MLM"]);
  assert.deepEqual(sites.MLA, {
    accounts: 11,
    connected: 5,
    expiring_7d: 1,
    needs_reauth: 0,
    at_risk: 1,
    states: { connected: 5, at_risk: 1, reauth_required: 0, revoked: 0, not_connected: 5 },
  });
  assert.deepEqual(sites.MLB, {
    accounts: 10,
    connected: 6,
    expiring_7d: 2,
    needs_reauth: 4,
    at_risk: 0,
    states: { connected: 6, at_risk: 0, reauth_required: 4, revoked: 0, not_connected: 0 },
  });
  assert.equal(sites.MLM.accounts, 0, "a configured site without accounts is listed with zeros");
  const total = Object.values(sites).reduce((a, s) => a + s.accounts, 0);
  assert.equal(total, 21, "every account counted once");
  // A site no longer configured still shows the accounts in it.
  const orphan = siteTotals([{ site_id: "MPE", state: "connected", accounts: 1 }], [], "MLA");
  assert.deepEqual(Object.keys(orphan), ["MPE"]);
});

Deno.test("a notification signed with any of the application's webhook secrets passes (rotation)", async () => {
  const ts = String(Math.floor(Date.now() / 1000));
  const request = { requestId: "req-1", dataId: "123" };
  const v1 = await signManifest("new-secret", signatureManifest({ ...request, ts }));
  const header = `ts=${ts},v1=${v1}`;
  const both = await verifySignatureWithAny(["old-secret", "new-secret"], { ...request, header });
  assert.equal(both.ok, true, "the second of two secrets verifies it");
  const other = await verifySignatureWithAny(["old-secret", "another"], { ...request, header });
  assert.deepEqual(other, { ok: false, reason: "mismatch" });
  const stale = `ts=${Number(ts) - 3600},v1=${await signManifest(
    "new-secret",
    signatureManifest({ ...request, ts: String(Number(ts) - 3600) }),
  )}`;
  assert.deepEqual(
    await verifySignatureWithAny(["old-secret", "new-secret"], { ...request, header: stale }),
    { ok: false, reason: "stale" },
  );
  assert.deepEqual(
    await verifySignatureWithAny(["a", "b"], { ...request, header: null }),
    { ok: false, reason: "missing" },
  );
});

Deno.test("mp-probe checks each token through the application that issued it, one queue per application", () => {
  const config = loadConfig({
    MP_APPS: JSON.stringify({
      MLA: { client_id: "1", client_secret: "a", webhook_secrets: ["w"] },
      MLB: { client_id: "2", client_secret: "b", webhook_secrets: ["x"] },
    }),
  });
  const claim = (id: string, site: string | null, read = true): ProbeClaim => ({
    id,
    mp_token_version: 1,
    mp_access_token_encrypted: "v1:k:x",
    backend_client_id: null,
    mp_site_id: site,
    site_read: read,
  });
  const { queues, unrouted } = queuesBySite(config, [
    claim("a", "MLA"),
    claim("b", "MLB"),
    claim("c", null),
    claim("d", "MLM"),
    claim("e", "MLB", false),
    claim("f", "MLB"),
  ]);
  assert.deepEqual(
    queues.map((q) => [q.app.site, q.app.clientId, q.claims.map((c) => c.id)]),
    [["MLA", "1", ["a", "c"]], ["MLB", "2", ["b", "f"]]],
  );
  assert.deepEqual(unrouted.map((c) => c.id), ["d", "e"], "no application, or changed since");
});

Deno.test("an account spared by its site's failing MercadoPago waits only when other sites could use the run", () => {
  const now = 1_000_000;
  // One application: released for the next run, as before sites.
  assert.equal(deferralOf("circuit_open", 1, 0, now), undefined);
  assert.equal(deferralOf("rate_limited", 1, now + 30_000, now), undefined);
  // Several: one refresh interval (10 minutes) after an open breaker ...
  assert.deepEqual(deferralOf("circuit_open", 2, 0, now), {
    error: "circuit_open",
    retryAfterMs: 10 * 60_000,
  });
  // ... the rest of the 429 pause (whole seconds, at least one) after a rate limit.
  assert.deepEqual(deferralOf("rate_limited", 7, now + 29_500, now), {
    error: "rate_limited",
    retryAfterMs: 30_000,
  });
  assert.deepEqual(deferralOf("rate_limited", 2, now - 5, now), {
    error: "rate_limited",
    retryAfterMs: 1_000,
  });
  // Other reasons (the run's time, a lease, a shutdown) are never deferred.
  for (const reason of ["time_budget", "lease_too_short", "shutting_down", "escrow_unavailable"]) {
    assert.equal(deferralOf(reason, 7, 0, now), undefined, reason);
  }
});
