/**
 * The burst and probe benches' pure verdicts (bench/burst.ts, bench/probe.ts): what each must
 * see before it says "met", stated with the contract's values (15 minutes per event; every token
 * once per 7 days at one run a minute).
 */
import assert from "node:assert/strict";
import { type BurstOutcome, burstVerdict } from "../bench/burst.ts";
import { type ProbeCoverage, probeVerdict } from "../bench/probe.ts";

const burst: BurstOutcome = {
  accounts: 2000,
  atRisk: 2000,
  connected: 2000,
  produced: 5000,
  byType: {
    "mp.connection.at_risk": 2000,
    "mp.connection.expiring": 1000,
    "mp.connection.recovered": 2000,
  },
  acked: 5000,
  delivered: 5000,
  verified: 5003,
  deliveries: 5003,
  outOfOrder: 0,
  recoveredFirst: 0,
  pairs: 2000,
  maxDelayS: 15 * 60,
};

Deno.test("bench burst: met only when every account went at risk and came back, in order, on time", () => {
  assert.deepEqual(burstVerdict(burst), {
    produced: true,
    delivered: true,
    verified: true,
    ordered: true,
    onTime: true,
  });
  assert.equal(burstVerdict({ ...burst, atRisk: 1994 }).produced, false);
  assert.equal(burstVerdict({ ...burst, connected: 1998 }).produced, false);
  assert.equal(
    burstVerdict({ ...burst, byType: { ...burst.byType, "mp.connection.recovered": 1999 } })
      .produced,
    false,
  );
  assert.equal(burstVerdict({ ...burst, acked: 4999 }).delivered, false);
  assert.equal(burstVerdict({ ...burst, delivered: 4999 }).delivered, false);
  assert.equal(burstVerdict({ ...burst, verified: 5002 }).verified, false);
  assert.equal(burstVerdict({ ...burst, deliveries: 0, verified: 0 }).verified, false);
  assert.equal(burstVerdict({ ...burst, outOfOrder: 1 }).ordered, false);
  assert.equal(burstVerdict({ ...burst, recoveredFirst: 1 }).ordered, false);
  assert.equal(burstVerdict({ ...burst, pairs: 1999 }).ordered, false);
  assert.equal(burstVerdict({ ...burst, maxDelayS: 15 * 60 + 1 }).onTime, false);
});

const probe: ProbeCoverage = {
  accounts: 1_000_000,
  runs: 30,
  checked: 6000,
  alive: 6000,
  dead: 0,
  errors: 0,
  distinct: 6000,
  recorded: 6000,
  perRunMin: 200,
};

Deno.test("bench probe: the whole at one run a minute against 7 days, every check alive and recorded once", () => {
  const v = probeVerdict(probe);
  // 1,000,000 / 200 a run = 5,000 runs = 5,000 minutes.
  assert.equal(v.daysForAll, 5000 / (24 * 60));
  assert.equal(v.coverageMet, true);
  assert.equal(v.checksMet, true);
  // 99 a run: 10,102 runs, a minute apart, is more than 7 days (10,080 minutes).
  assert.equal(probeVerdict({ ...probe, perRunMin: 100 }).coverageMet, true);
  assert.equal(probeVerdict({ ...probe, perRunMin: 99 }).coverageMet, false);
  assert.equal(probeVerdict({ ...probe, perRunMin: 0 }).coverageMet, false);
  assert.equal(probeVerdict({ ...probe, alive: 5999, errors: 1 }).checksMet, false);
  assert.equal(probeVerdict({ ...probe, alive: 5999, dead: 1 }).checksMet, false);
  assert.equal(probeVerdict({ ...probe, distinct: 5999 }).checksMet, false);
  assert.equal(probeVerdict({ ...probe, recorded: 5999 }).checksMet, false);
  assert.equal(
    probeVerdict({ ...probe, checked: 0, alive: 0, distinct: 0, recorded: 0 }).checksMet,
    false,
  );
});
