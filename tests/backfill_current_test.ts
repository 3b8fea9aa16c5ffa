/**
 * Invariant 1's report (docs/invariants.md: "an older or repeated sync is a no-op reported as
 * already current"), for the batched sync (shared/sync/sync_batch.ts) as the backfill drives
 * it: over a cache already at the master's version, a dry run and a real run both report
 * `already_current` — the dry run predicting exactly what the fenced write answers — and
 * nothing is written.
 */
import assert from "node:assert/strict";
import { backendDb, closeDbs, pauseJobsDuringFile, provisionedPair } from "./_stack.ts";
import { createContext } from "../shared/platform/context.ts";
import { loadConfig } from "../shared/platform/config.ts";
import { createLogger } from "../shared/platform/log.ts";
import { runBackfill } from "../shared/operations/backfill.ts";

pauseJobsDuringFile();

Deno.test("invariant 1: a backfill over a current cache, dry or not, reports already_current and writes nothing", async () => {
  const p = await provisionedPair();
  const ctx = createContext(loadConfig(Deno.env.toObject()));
  const log = createLogger({ test: "backfill_current" });
  try {
    const [before] = await backendDb()`select mp_token_version, mp_synced_at from clients
      where id = ${p.clientId}`;
    for (const dryRun of [true, false]) {
      const { seconds: _s, ...summary } = await runBackfill(ctx, log, {
        accountId: p.accountId,
        dryRun,
      });
      assert.deepEqual(summary, {
        dry_run: dryRun,
        accounts: 1,
        synced: 0,
        already_current: 1,
        cleared: 0,
        not_connected: 0,
        not_linked: 0,
        client_missing: 0,
        failed: 0,
      }, dryRun ? "dry run" : "run");
    }
    const [after] = await backendDb()`select mp_token_version, mp_synced_at from clients
      where id = ${p.clientId}`;
    assert.equal(Number(after.mp_token_version), 1);
    assert.deepEqual(after.mp_synced_at, before.mp_synced_at, "nothing written");
  } finally {
    await ctx.close();
    await closeDbs();
  }
});
