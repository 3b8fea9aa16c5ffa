/**
 * The per-state counters (`mp_state_totals`, `mp_site_state_totals`, kept by statement triggers
 * on `nv_accounts`, docs/atomic-state.md) lock their rows in key order whatever the statement:
 * a refresh recording an unknown outcome (one account, connected -> at_risk) and a many-row
 * statement moving accounts between the same states take the same rows in the same order, so
 * they never deadlock (40P01, seen by bench/burst.ts before …_mp_totals_lock_order.sql).
 *
 * How: another transaction holds the key-order-last counter row the statement changes; once the
 * statement waits for it, every counter row before it in key order must already be locked by the
 * statement (a probe with SKIP LOCKED gets none of them).
 */
import assert from "node:assert/strict";
import {
  accountRow,
  adminDb,
  closeDbs,
  eventually,
  newAccount,
  pauseJobsDuringFile,
  sandbox,
} from "./_stack.ts";
import { pgArray } from "../shared/platform/db.ts";

pauseJobsDuringFile();

const MARK = "totals_lock_order_probe";

/** A counter table and the expression naming one of its rows. */
interface Counters {
  table: string;
  key: string;
}
const STATE_TOTALS: Counters = { table: "mp_state_totals", key: "state" };
const SITE_STATE_TOTALS: Counters = {
  table: "mp_site_state_totals",
  key: "site_id || '/' || state",
};

/**
 * Holds counter row `held` while `statement` runs; once the statement waits for it, answers
 * which of `before` the statement had not locked.
 */
async function unlockedBeforeHeld(
  c: Counters,
  held: string,
  before: string[],
  statement: () => Promise<unknown>,
): Promise<string[]> {
  const sql = adminDb();
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => locked = r);
  const blocker = sql.begin(async (tx) => {
    const rows = await tx`select 1 from ${sql(c.table)}
      where ${sql.unsafe(c.key)} = ${held} for update`;
    assert.equal(rows.length, 1, `counter row ${held} exists`);
    locked();
    await released;
  });
  await Promise.race([isLocked, blocker]);
  const running = statement();
  try {
    await eventually(async () => {
      const [w] = await sql`select count(*)::int as n from pg_stat_activity
        where wait_event_type = 'Lock' and query like ${"%" + MARK + "%"}
          and pid <> pg_backend_pid()`;
      return w.n > 0;
    });
    const free = await sql.begin((tx) =>
      tx`select ${sql.unsafe(c.key)} as k from ${sql(c.table)}
          where ${sql.unsafe(c.key)} = any (${pgArray(before)}::text[])
          for update skip locked`
    );
    return free.map((r) => r.k as string).sort();
  } finally {
    release();
    await blocker;
    await running;
  }
}

async function connectedAccounts(n: number): Promise<string[]> {
  const { grants } = await sandbox.post("grants", { count: n });
  return await Promise.all(
    (grants as unknown[]).map((grant) => newAccount({ grant: grant as never, expiresInDays: 30 })),
  );
}

/** Makes sure both counter rows exist (an upsert of zero changes no count). */
async function ensureCounterRows(): Promise<void> {
  const sql = adminDb();
  for (const state of ["at_risk", "connected"]) {
    await sql`insert into mp_state_totals (state, accounts) values (${state}, 0)
      on conflict do nothing`;
    await sql`insert into mp_site_state_totals (site_id, state, accounts)
      values ('', ${state}, 0) on conflict do nothing`;
  }
}

/** mp_record_refresh_unconfirmed on one leased account: connected -> at_risk. */
async function oneUnknownOutcome(): Promise<() => Promise<unknown>> {
  const [id] = await connectedAccounts(1);
  const owner = crypto.randomUUID();
  const sql = adminDb();
  await sql`update nv_accounts set mp_refresh_lease_owner = ${owner}::uuid,
    mp_refresh_lease_expires_at = now() + interval '5 minutes' where id = ${id}`;
  return async () => {
    const [r] = await sql`/* ${sql.unsafe(MARK)} */ select mp_record_refresh_unconfirmed(
      ${id}::uuid, ${owner}::uuid, 1::bigint, 'http_500') as ok`;
    assert.equal(r.ok, true, "the unknown outcome is recorded");
    assert.equal((await accountRow(id)).mp_state, "at_risk");
  };
}

/** One statement over 60 at_risk accounts making them connected again (a many-row update). */
async function manyBackToConnected(): Promise<() => Promise<unknown>> {
  const ids = await connectedAccounts(60);
  const sql = adminDb();
  await sql`update nv_accounts set mp_refresh_unconfirmed_at = now()
    where id = any (${pgArray(ids)}::uuid[])`;
  return async () => {
    const rows = await sql`/* ${sql.unsafe(MARK)} */ update nv_accounts
      set mp_refresh_unconfirmed_at = null, mp_refresh_failing_since = null
      where id = any (${pgArray(ids)}::uuid[]) returning mp_state`;
    assert.equal(rows.length, 60);
    assert.ok(rows.every((r) => r.mp_state === "connected"));
  };
}

const SITES = ["MLA", "MLB", "MLM", "MLC", "MCO", "MLU", "MPE"];

/**
 * One statement flagging 63 accounts over the 7 sites at_risk (as a run's
 * mp_flag_unconfirmed_refreshes does, here limited to this test's accounts).
 */
async function manySitesToAtRisk(): Promise<() => Promise<unknown>> {
  const ids = await connectedAccounts(63);
  const sql = adminDb();
  // 63 concurrent one-account statements, each moving a counter between two sites' rows: before
  // …_mp_totals_lock_order.sql these alone could deadlock (seen here: 40P01).
  await Promise.all(
    ids.map((id, i) => sql`update nv_accounts set mp_site_id = ${SITES[i % 7]} where id = ${id}`),
  );
  return async () => {
    const rows = await sql`/* ${sql.unsafe(MARK)} */ update nv_accounts
      set mp_refresh_unconfirmed_at = now(), mp_refresh_last_error = 'outcome_lost'
      where id = any (${pgArray(ids)}::uuid[]) returning mp_state`;
    assert.equal(rows.length, 63);
    assert.ok(rows.every((r) => r.mp_state === "at_risk"));
  };
}

Deno.test("mp_state_totals: one unknown outcome locks its counter rows in key order", async () => {
  await ensureCounterRows();
  const free = await unlockedBeforeHeld(
    STATE_TOTALS,
    "connected",
    ["at_risk"],
    await oneUnknownOutcome(),
  );
  assert.deepEqual(free, [], "at_risk, before connected, was locked first");
});

Deno.test("mp_state_totals: a 60-row statement locks its counter rows in key order", async () => {
  await ensureCounterRows();
  const free = await unlockedBeforeHeld(
    STATE_TOTALS,
    "connected",
    ["at_risk"],
    await manyBackToConnected(),
  );
  assert.deepEqual(free, [], "at_risk, before connected, was locked first");
});

Deno.test("mp_site_state_totals: one unknown outcome locks its counter rows in key order", async () => {
  await ensureCounterRows();
  const free = await unlockedBeforeHeld(
    SITE_STATE_TOTALS,
    "/connected",
    ["/at_risk"],
    await oneUnknownOutcome(),
  );
  assert.deepEqual(free, [], "/at_risk, before /connected, was locked first");
});

Deno.test("mp_site_state_totals: a 63-row statement over 7 sites locks its counter rows in key order", async () => {
  const sql = adminDb();
  for (const site of SITES) {
    for (const state of ["at_risk", "connected"]) {
      await sql`insert into mp_site_state_totals (site_id, state, accounts)
        values (${site}, ${state}, 0) on conflict do nothing`;
    }
  }
  const keys = SITES.flatMap((s) => [`${s}/at_risk`, `${s}/connected`]).sort();
  const held = keys.pop()!;
  assert.equal(held, "MPE/connected");
  const free = await unlockedBeforeHeld(SITE_STATE_TOTALS, held, keys, await manySitesToAtRisk());
  assert.deepEqual(free, [], "every counter row before MPE/connected was locked first");
});

Deno.test.afterAll(async () => {
  await closeDbs();
});
