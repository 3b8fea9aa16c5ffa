// deno-lint-ignore-file no-explicit-any
/**
 * Invariant 4 in SQL (Admin migration `…_mp_refresh.sql`, `mp_release_refresh_leases`): a run
 * releases only the leases it holds. A run whose lease ran out (a slow or dead worker) and
 * that releases its accounts late must not free an account another run has since claimed —
 * else a third run claims it too and two refreshers hold one refresh token.
 */
import assert from "node:assert/strict";
import { accountRow, adminDb, newAccount, pauseJobsDuringFile, sandbox } from "./_stack.ts";
import { pgArray } from "../shared/platform/db.ts";

pauseJobsDuringFile();

function claim(owner: string, id: string) {
  return adminDb()`select id from mp_claim_due_accounts(${owner}::uuid, 1,
    interval '30 days', interval '5 minutes', ${id}::uuid, false, '{}'::uuid[])`;
}

async function release(owner: string, id: string): Promise<number> {
  const [row] = await adminDb()`select mp_release_refresh_leases(${owner}::uuid,
    ${pgArray([id])}::uuid[]) as n`;
  return row.n;
}

Deno.test("invariant 4 in SQL: a run releasing late frees nothing of the lease another run took since", async () => {
  const { grants: [grant] } = await sandbox.post("grants", { count: 1 });
  const id = await newAccount({ grant, expiresInDays: 1 });
  const [late, current] = [crypto.randomUUID(), crypto.randomUUID()];
  assert.equal((await claim(late, id)).length, 1);
  // The first run's lease ran out (its worker stalled); another run claims the account.
  await adminDb()`update nv_accounts set mp_refresh_lease_expires_at = now() - interval '1 second'
    where id = ${id}`;
  assert.equal((await claim(current, id)).length, 1);
  // The first run, finishing late, releases what it thinks it holds.
  assert.equal(await release(late, id), 0);
  const row = await accountRow(id);
  assert.equal(row.mp_refresh_lease_owner, current, "the current run keeps its lease");
  const [live] = await adminDb()`select mp_refresh_lease_expires_at > now() as live
    from nv_accounts where id = ${id}`;
  assert.equal(live.live, true);
  assert.equal((await claim(crypto.randomUUID(), id)).length, 0, "no third refresher");
  // The holder's own release frees it.
  assert.equal(await release(current, id), 1);
  const freed: any = await accountRow(id);
  assert.equal(freed.mp_refresh_lease_owner, null);
  assert.equal(freed.mp_refresh_lease_expires_at, null);
});
