/**
 * The seven-site bench's pure parts (bench/sites.ts): accounts dealt round-robin over the
 * sites, and the verdict on what a run left (healthy sites refreshed on time, the down site
 * held to its breaker, no cross-application call).
 */
import assert from "node:assert/strict";
import { BENCH_SITES, siteOf, sitesVerdict, spread } from "../bench/sites.ts";

Deno.test("bench sites: seven sites, accounts dealt round-robin and evenly", () => {
  assert.deepEqual([...BENCH_SITES], ["MLA", "MLB", "MLM", "MLC", "MCO", "MLU", "MPE"]);
  assert.deepEqual([0, 1, 6, 7, 13].map((i) => siteOf(i, BENCH_SITES)), [
    "MLA",
    "MLB",
    "MPE",
    "MLA",
    "MPE",
  ]);
  assert.deepEqual(spread(1_000_000, BENCH_SITES), {
    MLA: 142_858,
    MLB: 142_857,
    MLM: 142_857,
    MLC: 142_857,
    MCO: 142_857,
    MLU: 142_857,
    MPE: 142_857,
  });
  const counts: Record<string, number> = {};
  for (let i = 0; i < 1000; i++) {
    counts[siteOf(i, BENCH_SITES)] = (counts[siteOf(i, BENCH_SITES)] ?? 0) + 1;
  }
  assert.deepEqual(counts, spread(1000, BENCH_SITES));
});

const good = {
  refreshed: { MLA: 2000, MLB: 2000, MLC: 2000, MCO: 2000, MLU: 2000, MPE: 2000 },
  duePerSite: 2000,
  runsToAll: 30,
  downTokenCalls: 20,
  downCallsPerRunMax: 10,
  breakerBound: 10,
  downAtRisk: 20,
  crossAppCalls: 0,
};

Deno.test("bench sites: the verdict holds only when every part does", () => {
  assert.deepEqual(sitesVerdict(good), {
    healthyOnTime: true,
    downContained: true,
    noCrossApp: true,
  });
  // One healthy account left, never all refreshed, or later than a day of 10-minute runs.
  assert.equal(
    sitesVerdict({ ...good, refreshed: { ...good.refreshed, MLU: 1999 } }).healthyOnTime,
    false,
  );
  assert.equal(sitesVerdict({ ...good, runsToAll: 0 }).healthyOnTime, false);
  assert.equal(sitesVerdict({ ...good, runsToAll: 144 }).healthyOnTime, true);
  assert.equal(sitesVerdict({ ...good, runsToAll: 145 }).healthyOnTime, false);
  // The down site: one run past its breaker, or more accounts at risk than calls made.
  assert.equal(sitesVerdict({ ...good, downCallsPerRunMax: 11 }).downContained, false);
  assert.equal(sitesVerdict({ ...good, downAtRisk: 21 }).downContained, false);
  // A single call with another application's credentials.
  assert.equal(sitesVerdict({ ...good, crossAppCalls: 1 }).noCrossApp, false);
});
