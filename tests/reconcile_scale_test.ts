/**
 * mp-reconcile and mp-health at scale, on the running stack (docs/scale.md): a run whose repair
 * budget runs out stops where the drift it left begins and the next run starts there; two
 * runs at once both succeed and leave every cache repaired; the trigger-kept counters always
 * equal a count of the table, through inserts, updates, deletes and a truncate.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../shared/platform/config.ts";
import { createContext } from "../shared/platform/context.ts";
import { createLogger } from "../shared/platform/log.ts";
import { reconcile } from "../shared/reconcile/reconcile.ts";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  newAccount,
  newClient,
  sandbox,
  withCronPaused,
} from "./_stack.ts";

Deno.test.afterAll(closeDbs);

async function cached(clientId: string) {
  const [row] = await backendDb()`select mp_access_token, mp_token_version from clients
    where id = ${clientId}`;
  return row;
}

async function accountsCursor(): Promise<string | null> {
  const [row] = await backendDb()`select after_id from mp_reconcile_cursor where scan = 'accounts'`;
  return row?.after_id ?? null;
}

Deno.test("a run out of repair budget stops after its last repair; the next starts at the first left", async () => {
  await withCronPaused("mp-reconcile", async () => {
    const g = await sandbox.grants(3);
    // Three drifted (empty) caches whose accounts sit together in the id keyspace.
    const prefix = crypto.randomUUID().slice(0, 24);
    const ids = ["000000000001", "000000000002", "000000000003"].map((s) => prefix + s);
    const clients: string[] = [];
    for (const [i, id] of ids.entries()) {
      const clientId = await newClient();
      clients.push(clientId);
      await newAccount({ id, grant: g[i], clientId });
    }
    const before = prefix + "000000000000";
    await backendDb()`insert into mp_reconcile_cursor (scan, after_id) values ('accounts', ${before})
      on conflict (scan) do update set after_id = excluded.after_id`;
    const ctx = createContext(loadConfig(Deno.env.toObject()));
    const log = createLogger({ test: "reconcile-budget" });
    try {
      const first = await reconcile(ctx, log, { limit: 1, slice: 3 });
      assert.equal(first.repaired, 1);
      // Orphaned caches other tests left count too (the orphan scan has its own cursor, and
      // its budget was spent): only the linked accounts' page is this test's.
      const linked = (s: typeof first) => ({
        drifted: s.drifted - s.unlinked,
        skipped: s.skipped - s.unlinked,
      });
      assert.deepEqual(linked(first), { drifted: 3, skipped: 2 }, "three compared, two left");
      assert.equal(await accountsCursor(), ids[0], "stopped after the account it repaired");
      assert.equal((await cached(clients[0])).mp_access_token, g[0].access_token);
      assert.equal((await cached(clients[1])).mp_access_token, null);

      const second = await reconcile(ctx, log, { limit: 1, slice: 3 });
      assert.equal(second.repaired, 1);
      assert.equal(await accountsCursor(), ids[1], "went on from the first account left");
      assert.equal((await cached(clients[1])).mp_access_token, g[1].access_token);

      const third = await reconcile(ctx, log, { limit: 5, slice: 3 });
      assert.equal(third.repaired, 1);
      assert.equal((await cached(clients[2])).mp_access_token, g[2].access_token);
      const [{ n }] = await backendDb()`select count(*)::int as n from mp_reconcile_drift
        where account_id = any(${`{${ids.join(",")}}`}::uuid[])`;
      assert.equal(n, 0, "nothing of theirs is left recorded");
    } finally {
      await ctx.close();
    }
  });
});

Deno.test("two mp-reconcile runs at once: both answer 200 and every cache is repaired", async () => {
  await withCronPaused("mp-reconcile", async () => {
    const g = await sandbox.grants(20);
    const clients: string[] = [];
    for (const grant of g) {
      const clientId = await newClient();
      clients.push(clientId);
      await newAccount({ grant, clientId });
    }
    const [a, b] = await Promise.all([call("mp-reconcile", {}), call("mp-reconcile", {})]);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(b.status, 200, JSON.stringify(b.body));
    for (const [i, c] of clients.entries()) {
      assert.deepEqual({ ...await cached(c) }, {
        mp_access_token: g[i].access_token,
        mp_token_version: 1,
      });
    }
    const [{ synced }] = await backendDb()`select count(*)::int as synced from clients
      where id = any(${`{${clients.join(",")}}`}::uuid[]) and mp_synced_at is not null`;
    assert.equal(synced, 20);
  });
});

/** The counters and a count of the table, read in one statement (one snapshot). */
async function totalsAgree(sql = adminDb()) {
  const [row] = await sql`
    select (select connected from mp_account_totals) as kept_connected,
           (select count(*) from nv_accounts where mp_connected) as connected,
           (select needs_reauth from mp_account_totals) as kept_reauth,
           (select count(*) from nv_accounts where mp_needs_reauth) as reauth`;
  assert.equal(Number(row.kept_connected), Number(row.connected), "connected");
  assert.equal(Number(row.kept_reauth), Number(row.reauth), "needs_reauth");
  return { connected: Number(row.connected), reauth: Number(row.reauth) };
}

Deno.test("mp_account_totals equals a count of nv_accounts through every kind of write", async () => {
  const start = await totalsAgree();
  const g = await sandbox.grants(3);
  const ids = [];
  for (const grant of g) ids.push(await newAccount({ grant }));
  ids.push(await newAccount());
  assert.equal((await totalsAgree()).connected, start.connected + 3);
  await adminDb()`update nv_accounts set mp_needs_reauth = true where id = any(${`{${
    ids.join(",")
  }}`}::uuid[])`;
  assert.equal((await totalsAgree()).reauth, start.reauth + 4);
  assert.equal((await call("mp-revoke", { account_id: ids[0] })).status, 200);
  assert.equal((await totalsAgree()).connected, start.connected + 2, "a revoke counts");
  await adminDb()`update nv_accounts set mp_token_version = mp_token_version + 1
    where id = ${ids[1]}`; // changes neither counter
  await adminDb()`delete from nv_accounts where id = any(${`{${ids.join(",")}}`}::uuid[])`;
  assert.deepEqual(await totalsAgree(), start);
  // A truncate (rolled back, the stack's accounts stay) zeroes them.
  await adminDb().begin(async (tx) => {
    await tx`truncate nv_accounts cascade`;
    assert.deepEqual(await totalsAgree(tx as never), { connected: 0, reauth: 0 });
    throw new Error("roll back");
  }).catch((err) => assert.equal(err.message, "roll back"));
  assert.deepEqual(await totalsAgree(), start);
  // The recount gives what the triggers kept.
  await adminDb()`select public.mp_recount_account_totals()`;
  assert.deepEqual(await totalsAgree(), start);
  // mp-health's `connected` is the state's count (one definition), not this flag's counter.
  const health = await call("mp-health");
  const [{ n }] = await adminDb()`select count(*)::int as n from nv_accounts
    where mp_state = 'connected'`;
  assert.equal(health.body.connected, n);
});
