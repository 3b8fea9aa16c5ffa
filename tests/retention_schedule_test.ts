/**
 * The Admin project's retention job (Admin migration `…_mp_retention_cron.sql`; invariant 8:
 * what unauthenticated requests leave behind — expired states, deliveries — is pruned): it is
 * scheduled once a day (README, "daily retention job"), and the command it runs is valid and
 * prunes with the contract's defaults.
 */
import assert from "node:assert/strict";
import { adminDb, closeDbs } from "./_stack.ts";

Deno.test("retention: the Admin project's mp-retention job runs every day, and its command runs", async () => {
  try {
    const [job] = await adminDb()`select schedule, command, active from cron.job
      where jobname = 'mp-retention'`;
    assert.ok(job, "mp-retention is scheduled in the Admin DB");
    assert.equal(job.active, true);
    const fields = String(job.schedule).trim().split(/\s+/);
    assert.equal(fields.length, 5, job.schedule);
    assert.match(fields[0], /^\d{1,2}$/, "at one minute of the hour");
    assert.match(fields[1], /^\d{1,2}$/, "at one hour of the day");
    assert.deepEqual(fields.slice(2), ["*", "*", "*"], `every day: ${job.schedule}`);
    // The command, with the default retention (deliveries 30 days, audit 400): it runs.
    assert.match(job.command, /mp_prune_retention\(\s*\)/);
    const pruned = await adminDb().unsafe(job.command);
    assert.equal(pruned.length, 1);
  } finally {
    await closeDbs();
  }
});
