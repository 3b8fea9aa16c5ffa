// deno-lint-ignore-file no-explicit-any
/**
 * The send-once rule (invariant 3) where only one fence holds it: `mp_begin_refresh_call`
 * under a lease taken without the claim (`mp_lease_account`, as the dead-token path does) —
 * the last-resort attempt only within 7 days of expiry — and the dead-token path itself, which
 * must not spend a refresh token that was already sent once (invariants 3 and 9); and the
 * claim's own lock (invariant 4): a claim racing another for the same account skips it rather
 * than waiting and taking it too.
 * (Mutants of both in tests/mutation/mutants.ts.)
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  eventually,
  newAccount,
  newClient,
  provisionedPair,
  sandbox,
} from "./_stack.ts";
import { pgArray } from "../shared/platform/db.ts";

let paused: string[] = [];
Deno.test.beforeAll(async () => {
  const rows = await backendDb()`update cron.job set active = false
    where jobname in ('mp-refresh', 'mp-reconcile', 'mp-probe') and active returning jobname`;
  paused = rows.map((r: any) => r.jobname);
});
Deno.test.afterAll(async () => {
  await backendDb()`update cron.job set active = true where jobname = any(${
    pgArray(paused)
  }::text[])`;
  await closeDbs();
});

/** Marks the account's refresh token as sent once with an unknown outcome (at risk). */
async function sentOnce(accountId: string, expiresInDays: number) {
  await adminDb()`update nv_accounts set mp_refresh_sends = 1,
      mp_refresh_unconfirmed_at = now(),
      mp_token_expires_at = now() + make_interval(days => ${expiresInDays})
    where id = ${accountId}`;
}

/**
 * Removes a test account and its client: an at-risk account left behind would be due (its
 * last resort) for another test's `mp-refresh` run of every due account.
 */
async function remove(p: { accountId: string; clientId: string }) {
  await adminDb()`delete from nv_accounts where id = ${p.accountId}`;
  await backendDb()`delete from clients where id = ${p.clientId}`;
}

async function leaseAndBegin(accountId: string): Promise<boolean> {
  const owner = crypto.randomUUID();
  const [leased] = await adminDb()`select * from mp_lease_account(${accountId}::uuid,
    ${owner}::uuid, interval '1 minute')`;
  assert.ok(leased, "leased");
  const [{ began }] = await adminDb()`select mp_begin_refresh_call(${accountId}::uuid,
    ${owner}::uuid, ${leased.mp_token_version}::bigint) as began`;
  await adminDb()`select mp_release_refresh_leases(${owner}::uuid, array[${accountId}]::uuid[])`;
  return began;
}

Deno.test("invariant 3 in SQL: a sent-once refresh token may go again only within 7 days of expiry", async () => {
  for (const [days, allowed] of [[10, false], [8, false], [6, true]] as const) {
    const p = await provisionedPair();
    await sentOnce(p.accountId, days);
    assert.equal(await leaseAndBegin(p.accountId), allowed, `expiring in ${days} days`);
    const [row] = await adminDb()`select mp_refresh_sends from nv_accounts
      where id = ${p.accountId}`;
    assert.equal(row.mp_refresh_sends, allowed ? 2 : 1, "counted only when allowed");
    await remove(p);
  }
});

Deno.test("invariants 3 and 4 in SQL: no send is counted under a lease that has run out", async () => {
  const p = await provisionedPair();
  const owner = crypto.randomUUID();
  const [leased] = await adminDb()`select * from mp_lease_account(${p.accountId}::uuid,
    ${owner}::uuid, interval '-1 second')`;
  assert.ok(leased, "leased, already expired");
  const [{ began }] = await adminDb()`select mp_begin_refresh_call(${p.accountId}::uuid,
    ${owner}::uuid, ${leased.mp_token_version}::bigint) as began`;
  assert.equal(began, false, "refused: another refresher may hold the account by now");
  const [row] = await adminDb()`select mp_refresh_sends from nv_accounts where id = ${p.accountId}`;
  assert.equal(row.mp_refresh_sends, 0);
  await remove(p);
});

Deno.test("invariants 3 and 9: a dead token whose refresh token was sent once is cleared, and that refresh token is not sent again", async () => {
  // 60 days: no send is allowed anyway; 3 days: the last resort would be, yet a dead token
  // spends only a refresh token never sent (shared/connection/dead_token.ts).
  for (const days of [60, 3]) {
    const p = await provisionedPair();
    await sentOnce(p.accountId, days);
    await sandbox.invalidate(p.seller, "access");
    const before = await sandbox.stats();
    const res = await call("get-mp-config", { client_id: p.clientId, rejected_token_version: 1 });
    assert.equal(res.status, 404, `expiring in ${days} days`);
    assert.equal(res.body.error.code, "mp_reauth_required");
    const after = await sandbox.stats();
    assert.equal(after.token_calls, before.token_calls, "no refresh call");
    const [row] = await adminDb()`select mp_state, mp_refresh_sends, mp_access_token_encrypted
      from nv_accounts where id = ${p.accountId}`;
    assert.deepEqual([row.mp_state, row.mp_refresh_sends], ["reauth_required", 1]);
    assert.equal(row.mp_access_token_encrypted, null);
    const later = await call("get-mp-config", { client_id: p.clientId });
    assert.equal(later.status, 404);
    assert.equal(later.body.error.code, "mp_reauth_required");
    await remove(p);
  }
});

Deno.test("invariant 4 in SQL: a claim racing a claim of the same account skips it — it does not wait and claim it too, nor take the live lease after", async () => {
  const { grants: [grant] } = await sandbox.post("grants", { count: 1 });
  const clientId = await newClient();
  const id = await newAccount({ grant, clientId, expiresInDays: 10 });
  const first = await adminDb().reserve();
  const second = await adminDb().reserve();
  try {
    const [{ pid }] = await second`select pg_backend_pid() as pid`;
    await first`begin`;
    const [mine] = await first`select * from mp_claim_due_accounts(${crypto.randomUUID()}::uuid,
      1, interval '60 days', interval '5 minutes', ${id}::uuid, false)`;
    assert.equal(mine.id, id, "the first claim holds the account, not yet committed");
    let settled = false;
    const racing = second`select * from mp_claim_due_accounts(${crypto.randomUUID()}::uuid, 1,
      interval '60 days', interval '5 minutes', ${id}::uuid, false)`.then((rows) => {
      settled = true;
      return rows;
    });
    // Either it skipped the locked row at once, or it waits for the first claim's lock.
    await eventually(async () => {
      if (settled) return true;
      const waiting = await adminDb()`select 1 from pg_stat_activity
        where pid = ${pid} and wait_event_type = 'Lock'`;
      return waiting.length > 0;
    });
    await first`commit`;
    const theirs = await racing;
    assert.equal(theirs.length, 0, "the racing claim took nothing");
    // Committed now: the row is free, the lease it carries live — still nothing to claim.
    const later = await adminDb()`select * from mp_claim_due_accounts(${crypto.randomUUID()}::uuid,
      1, interval '60 days', interval '5 minutes', ${id}::uuid, false)`;
    assert.equal(later.length, 0, "a live lease is not taken over");
    const [row] = await adminDb()`select mp_refresh_lease_owner from nv_accounts where id = ${id}`;
    assert.ok(row.mp_refresh_lease_owner, "leased once");
  } finally {
    await first`rollback`.catch(() => {});
    first.release();
    second.release();
    await adminDb()`delete from nv_accounts where id = ${id}`;
    await backendDb()`delete from clients where id = ${clientId}`;
  }
});
