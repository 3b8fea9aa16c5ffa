// deno-lint-ignore-file no-explicit-any
/**
 * Operations (README, Operating it): the backfill, key rotation and status scripts run as subprocesses
 * against scratch databases of their own (so their counts are exact), and mp-reconcile,
 * mp-health and the hourly cron job against the running stack.
 */
import assert from "node:assert/strict";
import { ADMIN_PROJECT, BACKEND_MIGRATIONS, BACKEND_PROJECT, migrate } from "../tooling/migrate.ts";
import { scratchDatabase } from "../local/bootstrap.ts";
import { loadConfig, parseKeyRing } from "../shared/platform/config.ts";
import {
  decryptSecret,
  encryptSecret,
  importKeyRing,
  type KeyRing,
} from "../shared/platform/crypto.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { createContext } from "../shared/platform/context.ts";
import { createLogger } from "../shared/platform/log.ts";
import { reconcile } from "../shared/reconcile/reconcile.ts";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  eventually,
  keyRing,
  logLine,
  type MpGrant,
  newAccount,
  newClient,
  sandbox,
  withCronPaused,
} from "./_stack.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const decoder = new TextDecoder();

const randomKey = (id: string) =>
  `${id}:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
const ringOf = (keys: string) => importKeyRing(parseKeyRing(keys));

/** A scratch database next to `url`, bootstrapped and pushed (as postgres) with `workdir`. */
async function scratchDb(url: string, workdir: string) {
  const db = await scratchDatabase(url, "ops");
  await migrate(db.postgresUrl, workdir);
  const sql = connect(db.url, { max: 4 });
  return {
    url: db.url,
    sql,
    async drop() {
      await sql.end({ timeout: 1 });
      await db.drop();
    },
  };
}

/** A scratch Backend and Admin database pair with a key ring of their own. */
async function scratchPair(keys = randomKey("ops1")) {
  const backend = await scratchDb(Deno.env.get("BACKEND_DB_URL")!, BACKEND_PROJECT);
  const admin = await scratchDb(Deno.env.get("ADMIN_DB_URL")!, ADMIN_PROJECT);
  const ring = await ringOf(keys);
  return {
    backend: backend.sql,
    admin: admin.sql,
    ring,
    env: { BACKEND_DB_URL: backend.url, ADMIN_DB_URL: admin.url, MP_TOKEN_KEYS: keys },
    async client(cache?: { token: string | null; publicKey?: string; version: number }) {
      const id = crypto.randomUUID();
      await backend.sql`insert into clients (id, mp_access_token, mp_public_key, mp_token_version)
        values (${id}, ${cache?.token ?? null}, ${cache?.publicKey ?? null},
                ${cache?.version ?? null})`;
      return id;
    },
    async account(opts: {
      grant?: MpGrant;
      clientId?: string;
      version?: number;
      ring?: KeyRing;
      extra?: Record<string, unknown>;
    }) {
      const id = crypto.randomUUID();
      const g = opts.grant;
      const r = opts.ring ?? ring;
      await admin.sql`insert into nv_accounts ${
        admin.sql({
          id,
          backend_client_id: opts.clientId ?? null,
          mp_connected: !!g,
          mp_access_token_encrypted: g
            ? await encryptSecret(r, id, "access_token", g.access_token)
            : null,
          mp_refresh_token: g ? await encryptSecret(r, id, "refresh_token", g.refresh_token) : null,
          mp_public_key: g?.public_key ?? null,
          mp_token_expires_at: g ? new Date(Date.now() + 180 * 86_400_000) : null,
          mp_token_version: opts.version ?? (g ? 1 : 0),
          ...opts.extra,
        })
      }`;
      return id;
    },
    async drop() {
      await Promise.all([backend.drop(), admin.drop()]);
    },
  };
}

/** Runs `scripts/<name>.ts` with `env` over the test's environment. */
async function script(name: string, args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/${name}.ts`, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Runs a script with `--json` and parses its summary (the last stdout line). */
async function scriptJson(name: string, args: string[], env: Record<string, string>) {
  const out = await script(name, [...args, "--json"], env);
  const last = out.stdout.trim().split("\n").pop() ?? "";
  let summary: any;
  try {
    summary = JSON.parse(last);
  } catch {
    throw new Error(`${name} printed no JSON (exit ${out.code}): ${out.stderr.slice(0, 500)}`);
  }
  return { ...out, summary };
}

async function cacheOf(sql: Sql, clientId: string) {
  const [row] = await sql`select mp_access_token, mp_public_key, mp_token_version, mp_synced_at
    from clients where id = ${clientId}`;
  return row;
}

Deno.test("backfill: dry run writes nothing, run fills, rerun is current, --account, failures exit 1", async () => {
  const s = await scratchPair();
  try {
    const g = await sandbox.grants(6);
    const c1 = await s.client(), c2 = await s.client(), c3 = await s.client();
    const a1 = await s.account({ grant: g[0], clientId: c1 });
    const a2 = await s.account({ grant: g[1], clientId: c2 });
    await s.account({ grant: g[2], clientId: c3 });
    await s.account({ grant: g[3] }); // connected, not linked
    await s.account({ grant: g[4], clientId: crypto.randomUUID() }); // client row missing
    // Revoked at version 2 while the cache still holds version 1's token.
    const c6 = await s.client({ token: g[5].access_token, publicKey: g[5].public_key, version: 1 });
    await s.account({ clientId: c6, version: 2 });
    const c7 = await s.client();
    await s.account({ clientId: c7 }); // linked, never connected

    const dry = await scriptJson("backfill", ["--dry-run"], s.env);
    assert.equal(dry.code, 0, dry.stderr);
    const expected = {
      dry_run: true,
      accounts: 7,
      synced: 3,
      already_current: 0,
      cleared: 1,
      not_connected: 1,
      not_linked: 1,
      client_missing: 1,
      failed: 0,
    };
    const { seconds: _s, ...dryCounts } = dry.summary;
    assert.deepEqual(dryCounts, expected);
    for (const c of [c1, c2, c3, c7]) {
      const row = await cacheOf(s.backend, c);
      assert.equal(row.mp_access_token, null);
      assert.equal(row.mp_token_version, null);
    }
    assert.equal((await cacheOf(s.backend, c6)).mp_access_token, g[5].access_token);

    const run = await scriptJson("backfill", [], s.env);
    assert.equal(run.code, 0, run.stderr);
    const { seconds: _r, ...runCounts } = run.summary;
    assert.deepEqual(runCounts, { ...expected, dry_run: false });
    for (const [c, grant] of [[c1, g[0]], [c2, g[1]], [c3, g[2]]] as const) {
      const row = await cacheOf(s.backend, c);
      assert.equal(row.mp_access_token, grant.access_token);
      assert.equal(row.mp_public_key, grant.public_key);
      assert.equal(row.mp_token_version, 1);
      assert.ok(row.mp_synced_at instanceof Date);
    }
    const cleared = await cacheOf(s.backend, c6);
    assert.equal(cleared.mp_access_token, null);
    assert.equal(cleared.mp_public_key, null);
    assert.equal(cleared.mp_token_version, 2);

    const again = await script("backfill", [], s.env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^backfill: 7 accounts in /);
    assert.match(again.stdout, /synced +0\n/);
    assert.match(again.stdout, /already current +3\n/);
    assert.match(again.stdout, /not connected +2\n/);

    // --account syncs that one account only.
    const [n1, n2] = await sandbox.grants(2);
    for (const [id, grant] of [[a1, n1], [a2, n2]] as const) {
      await s.admin`update nv_accounts set mp_token_version = 2,
        mp_access_token_encrypted = ${await encryptSecret(
        s.ring,
        id,
        "access_token",
        grant.access_token,
      )} where id = ${id}`;
    }
    const one = await scriptJson("backfill", ["--account", a1.toUpperCase()], s.env);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.summary.accounts, 1);
    assert.equal(one.summary.synced, 1);
    assert.equal((await cacheOf(s.backend, c1)).mp_access_token, n1.access_token);
    assert.equal((await cacheOf(s.backend, c1)).mp_token_version, 2);
    assert.equal((await cacheOf(s.backend, c2)).mp_access_token, g[1].access_token);

    const bad = await script("backfill", ["--account", "nope"], s.env);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, "backfill: --account must be a UUID\n");

    // A value that does not decrypt fails that account (exit 1); the others still sync.
    const c8 = await s.client();
    const foreign = await ringOf(randomKey("gone1"));
    const [g8] = await sandbox.grants(1);
    const a8 = await s.account({ grant: g8, clientId: c8, ring: foreign });
    const failing = await scriptJson("backfill", [], s.env);
    assert.equal(failing.code, 1);
    assert.equal(failing.summary.failed, 1);
    assert.equal(failing.summary.synced, 1); // a2's version 2
    assert.equal((await cacheOf(s.backend, c2)).mp_access_token, n2.access_token);
    assert.equal((await cacheOf(s.backend, c8)).mp_access_token, null);
    const line = failing.stderr.split("\n").find((l) => l.includes(a8))!;
    assert.equal(JSON.parse(line).msg, "Stored MP credential failed to decrypt");
    for (const grant of [...g, n1, n2, g8]) {
      assert.ok(
        !failing.stdout.includes(grant.access_token) &&
          !failing.stderr.includes(grant.access_token),
      );
    }

    // Empty in the environment and no env file to fill it: one line naming both places.
    const none = ".local/operations-test-none/stack.env";
    const unset = await script("backfill", [], {
      ...s.env,
      MP_TOKEN_KEYS: "",
      STACK_ENV_FILE: none,
    });
    assert.equal(unset.code, 2);
    assert.equal(
      unset.stderr,
      `backfill: MP_TOKEN_KEYS is not set (not in the environment, nor in ${none}, which does not exist: start the stack with \`deno task dev\`, or set it)\n`,
    );
  } finally {
    await s.drop();
  }
});

Deno.test("rotate-keys: re-encrypts every ciphertext under the new key while refreshes write; the old key can go", async () => {
  const oldKey = randomKey("old1");
  const newKey = randomKey("new1");
  const s = await scratchPair(oldKey);
  try {
    const grants = await sandbox.grants(30);
    const ids: string[] = [];
    const clients: string[] = [];
    for (const g of grants) {
      const c = await s.client();
      clients.push(c);
      ids.push(await s.account({ grant: g, clientId: c }));
    }
    await s.account({}); // nothing to rotate
    await s.admin`insert into mp_oauth_states (state_hash, account_id, code_verifier_encrypted,
      expires_at) values (${"cd".repeat(32)}, ${ids[0]},
      ${await encryptSecret(s.ring, ids[0], "code_verifier", "verifier-0123456789")},
      now() + interval '10 minutes')`;
    const [{ escrow }] = await s.backend`select to_regclass('public.mp_refresh_escrow') is not null
      as escrow`;
    const [parked] = await sandbox.grants(1);
    if (escrow) {
      await s.backend`insert into mp_refresh_escrow ${
        s.backend({
          account_id: ids[1],
          base_version: 1,
          access_token_encrypted: await encryptSecret(
            s.ring,
            ids[1],
            "access_token",
            parked.access_token,
          ),
          refresh_token_encrypted: await encryptSecret(
            s.ring,
            ids[1],
            "refresh_token",
            parked.refresh_token,
          ),
          expires_in: 15552000,
          token_expires_at: new Date(Date.now() + 180 * 86_400_000),
        })
      }`;
    }

    // A refresh lands between the rotation's read of a row and its write: the rotation's
    // update of the first account (in id order) waits on a row lock the "refresher" holds
    // while it saves a new pair (new key, version + 1); the refreshed pair must survive.
    const first = [...ids].sort()[0];
    const rotatedRing = await ringOf(`${newKey},${oldKey}`);
    const [fresh] = await sandbox.grants(1);
    let rotation: ReturnType<typeof scriptJson> | undefined;
    await s.admin.begin(async (tx) => {
      await tx`select 1 from nv_accounts where id = ${first} for update`;
      rotation = scriptJson("rotate_keys", ["--batch", "1"], {
        ...s.env,
        MP_TOKEN_KEYS: `${newKey},${oldKey}`,
      });
      rotation.catch(() => {}); // awaited below; a failure must not be a dangling promise
      await eventually(async () => {
        const [{ waiting }] = await s.admin`select count(*)::int as waiting
          from pg_stat_activity where datname = current_database()
           and wait_event_type = 'Lock' and query like '%update "nv_accounts"%'`;
        return waiting > 0;
      }, 30_000);
      await tx`update nv_accounts set
        mp_access_token_encrypted = ${await encryptSecret(
        rotatedRing,
        first,
        "access_token",
        fresh.access_token,
      )},
        mp_refresh_token = ${await encryptSecret(
        rotatedRing,
        first,
        "refresh_token",
        fresh.refresh_token,
      )},
        mp_token_version = mp_token_version + 1 where id = ${first}`;
    });
    const out = await rotation!;
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.summary.key_id, "new1");
    assert.equal(out.summary.failed, 0);
    assert.equal(out.summary.remaining, 0);
    // Both of that account's values changed between the read and the write (one statement
    // swaps every column of a row), and both refreshed values were kept.
    assert.equal(out.summary.changed_meanwhile, 2);
    assert.equal(out.summary.rotated, 60 - 2 + 1 + (escrow ? 2 : 0)); // tokens, verifier, escrow
    const want = (id: string, i: number) => (id === first ? fresh : grants[i]);

    // Only the new key is left in the ring: everything still decrypts, to the right values.
    const onlyNew = await ringOf(newKey);
    const rows = await s.admin`select id, mp_access_token_encrypted, mp_refresh_token,
      mp_token_version from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const [i, id] of ids.entries()) {
      const r = byId.get(id)!;
      assert.ok(r.mp_access_token_encrypted.startsWith("v1:new1:"));
      assert.ok(r.mp_refresh_token.startsWith("v1:new1:"));
      assert.equal(
        await decryptSecret(onlyNew, id, "access_token", r.mp_access_token_encrypted),
        want(id, i).access_token,
      );
      assert.equal(
        await decryptSecret(onlyNew, id, "refresh_token", r.mp_refresh_token),
        want(id, i).refresh_token,
      );
      assert.equal(r.mp_token_version, id === first ? 2 : 1, "rotation never bumps the version");
    }
    const [state] = await s.admin`select code_verifier_encrypted from mp_oauth_states`;
    assert.equal(
      await decryptSecret(onlyNew, ids[0], "code_verifier", state.code_verifier_encrypted),
      "verifier-0123456789",
    );
    if (escrow) {
      const [e] = await s.backend`select * from mp_refresh_escrow`;
      assert.equal(
        await decryptSecret(onlyNew, ids[1], "refresh_token", e.refresh_token_encrypted),
        parked.refresh_token,
      );
    }
    const sync = await scriptJson("backfill", [], { ...s.env, MP_TOKEN_KEYS: newKey });
    assert.equal(sync.code, 0, sync.stderr);
    assert.equal(sync.summary.synced, 30);
    for (const [i, id] of ids.entries()) {
      assert.equal(
        (await cacheOf(s.backend, clients[i])).mp_access_token,
        want(id, i).access_token,
      );
    }

    // Resumable: a second run finds nothing left.
    const rerun = await scriptJson("rotate_keys", [], { ...s.env, MP_TOKEN_KEYS: newKey });
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal(rerun.summary.rotated, 0);

    // A value under a key no longer in the ring fails, stays, and keeps the exit code at 1.
    const gone = await ringOf(randomKey("gone1"));
    await s.admin`update nv_accounts set mp_access_token_encrypted = ${await encryptSecret(
      gone,
      ids[0],
      "access_token",
      grants[0].access_token,
    )} where id = ${ids[0]}`;
    const failed = await script("rotate_keys", [], { ...s.env, MP_TOKEN_KEYS: newKey });
    assert.equal(failed.code, 1);
    assert.match(
      failed.stdout,
      /nv_accounts\.mp_access_token_encrypted +rotated 0, .*failed 1, remaining 1/,
    );
    assert.match(failed.stdout, /keep the old keys and run it again/);
    assert.ok(failed.stderr.includes(ids[0]));
  } finally {
    await s.drop();
  }
});

Deno.test("status --json: everyone's health, the ones that need a person first, and totals", async () => {
  const s = await scratchPair();
  try {
    const g = await sandbox.grants(9);
    const day = 86_400_000;
    const inSync = async (grant: MpGrant, version = 1) =>
      await s.client({ token: grant.access_token, publicKey: grant.public_key, version });
    const at = (days: number) => new Date(Date.now() + days * day);
    const ok = await s.account({
      grant: g[0],
      clientId: await inSync(g[0]),
      extra: { mp_token_expires_at: at(100), mp_last_refreshed_at: at(-1 / 24) },
    });
    const notLinked = await s.account({ grant: g[1], extra: { mp_token_expires_at: at(120) } });
    const expiring = await s.account({
      grant: g[2],
      clientId: await inSync(g[2]),
      extra: { mp_token_expires_at: at(3) },
    });
    const stale = await s.account({
      grant: g[3],
      clientId: await inSync(g[3]),
      version: 2,
      extra: { mp_token_expires_at: at(100) },
    });
    const missing = await s.account({
      grant: g[4],
      clientId: crypto.randomUUID(),
      extra: { mp_token_expires_at: null },
    });
    const failing = await s.account({
      grant: g[5],
      clientId: await inSync(g[5]),
      extra: {
        mp_token_expires_at: at(100),
        mp_refresh_failures: 2,
        mp_refresh_last_error: "server_error",
      },
    });
    const expired = await s.account({
      grant: g[6],
      clientId: await inSync(g[6]),
      extra: { mp_token_expires_at: at(-1) },
    });
    const reauth = await s.account({
      grant: g[7],
      clientId: await inSync(g[7]),
      extra: { mp_token_expires_at: at(20), mp_needs_reauth: true, mp_refresh_failures: 1 },
    });
    await s.client({ token: g[8].access_token, version: 3 }); // no account feeds it
    await s.admin`insert into mp_credential_events (event, occurred_at) values
      ('fast_path_miss', now() - interval '5 minutes'), ('fast_path_miss', now() - interval '2 hours')`;

    const out = await scriptJson("status", [], s.env);
    assert.equal(out.code, 0, out.stderr);
    const { accounts, totals } = out.summary;
    assert.deepEqual(
      accounts.map((a: any) => [a.account_id, a.attention, a.cache]),
      [
        [reauth, "reauthorize", "in_sync"],
        [expired, "expired", "in_sync"],
        [failing, "failing", "in_sync"],
        [stale, "drift", "stale"],
        [missing, "drift", "client_missing"],
        [expiring, "expiring", "in_sync"],
        [ok, "ok", "in_sync"],
        [notLinked, "ok", "not_linked"],
      ],
    );
    const first = accounts[0];
    // The per-account `connected` is the state (mp-health's definition), not mp_connected.
    assert.equal(first.connected, false);
    assert.equal(first.needs_reauth, true);
    assert.equal(first.state, "reauth_required");
    assert.equal(accounts[6].connected, true);
    assert.equal(first.reason, "invalid_grant");
    assert.equal(first.failures, 1);
    assert.ok(first.client_id);
    assert.equal(accounts[2].last_error, "server_error");
    assert.equal(accounts[6].last_refresh_at !== null, true);
    // The totals are mp-health's (the same function): by state, the reconcile pass's drift (none
    // ran here), the outbox (8 `connected` events pending), schedules (none here: stalled).
    const { listed } = out.summary;
    assert.deepEqual(
      {
        accounts: totals.accounts,
        connected: totals.connected,
        needs_reauth: totals.needs_reauth,
        at_risk: totals.at_risk,
        expiring_7d: totals.expiring_7d,
        states: totals.states,
        drifted: totals.drifted,
        client_missing: totals.client_missing,
        fast_path_misses_1h: totals.fast_path_misses_1h,
        pending: totals.outbox.pending,
        ok: totals.ok,
      },
      {
        accounts: 8,
        connected: 7,
        needs_reauth: 1,
        at_risk: 0,
        expiring_7d: 2,
        states: { connected: 7, at_risk: 0, reauth_required: 1, revoked: 0, not_connected: 0 },
        drifted: 0,
        client_missing: 0,
        fast_path_misses_1h: 1,
        pending: 8,
        ok: false,
      },
    );
    assert.equal(totals.schedules["mp-refresh"].stalled, true);
    assert.deepEqual(listed, {
      accounts: 8,
      expired: 1,
      failing: 2,
      cache_differs: 2,
      not_linked: 1,
      unlinked_caches: 1,
    });
    for (const grant of g) assert.ok(!out.stdout.includes(grant.access_token));

    const table = await script("status", [], s.env);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split("\n");
    assert.match(
      lines[0],
      /^attention +account +client +state +reason +deadline +expires in +last refresh +fail +reauth +cache$/,
    );
    assert.ok(lines[1].startsWith("reauthorize") && lines[1].includes(reauth));
    assert.ok(lines[8].includes(notLinked) && lines[8].includes("not_linked"));
    assert.equal(lines[9], "");
    assert.equal(
      lines[10],
      "accounts: 8 · connected: 7 · expiring 7d: 2 · needs reauth: 1 · at risk: 0",
    );
    assert.equal(
      lines[11],
      "states: connected: 7 · at risk: 0 · reauth required: 1 · revoked: 0 · not connected: 0",
    );
    assert.ok(lines.some((l) => l.startsWith("ok: false — mp-refresh stalled")));
    assert.equal(
      lines.at(-1),
      "listed: accounts: 8 · expired: 1 · failing: 2 · cache differs: 2 · not linked: 1 · unlinked caches: 1",
    );
  } finally {
    await s.drop();
  }
});

async function stackCache(clientId: string) {
  return await cacheOf(backendDb(), clientId);
}

async function adminVersion(accountId: string): Promise<number> {
  const [row] = await adminDb()`select mp_token_version from nv_accounts where id = ${accountId}`;
  return Number(row.mp_token_version);
}

Deno.test("mp-reconcile: repairs each kind of drift, leaves in-sync and leased accounts alone", async () => {
  await withCronPaused("mp-reconcile", async () => {
    const g = await sandbox.grants(9);
    const ring = await keyRing();
    const cache = (clientId: string, token: string | null, version: number) =>
      backendDb()`update clients set mp_access_token = ${token},
        mp_public_key = ${token ? "APP_USR-pk-cached" : null}, mp_token_version = ${version},
        mp_synced_at = '2020-01-01T00:00:00Z' where id = ${clientId}`;

    // stale: the cache holds version 1, the account moved to version 2.
    const cS = await newClient();
    const aS = await newAccount({ grant: g[0], clientId: cS });
    await cache(cS, g[0].access_token, 1);
    await adminDb()`update nv_accounts set mp_token_version = 2, mp_access_token_encrypted =
      ${await encryptSecret(ring, aS, "access_token", g[1].access_token)} where id = ${aS}`;
    // empty: never synced.
    const cE = await newClient();
    const aE = await newAccount({ grant: g[2], clientId: cE });
    // empty at the same version (the fence alone could not fix it).
    const cL = await newClient();
    const aL = await newAccount({ grant: g[3], clientId: cL, version: 3 });
    await cache(cL, null, 3);
    // revoked_cached: revoked at version 4, the cache still holds version 3's token.
    const cR = await newClient();
    const aR = await newAccount({ clientId: cR, version: 4 });
    await cache(cR, g[4].access_token, 3);
    // ahead: the cache claims version 5 of an account at version 1.
    const cA = await newClient();
    const aA = await newAccount({ grant: g[5], clientId: cA });
    await cache(cA, g[4].access_token, 5);
    // unlinked: a token in a client no account feeds.
    const cU = await newClient();
    await cache(cU, g[6].access_token, 2);
    // in sync: must stay untouched.
    const cI = await newClient();
    await newAccount({ grant: g[7], clientId: cI });
    await cache(cI, g[7].access_token, 1);
    // a client row that does not exist.
    const aM = await newAccount({ grant: g[7], clientId: crypto.randomUUID() });
    // leased by a refresher, level drift: left alone.
    const cB = await newClient();
    const aB = await newAccount({ grant: g[8], clientId: cB, version: 2 });
    await cache(cB, null, 2);
    await adminDb()`update nv_accounts set mp_refresh_lease_owner = ${crypto.randomUUID()},
      mp_refresh_lease_expires_at = now() + interval '5 minutes' where id = ${aB}`;

    const res = await call("mp-reconcile", {});
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const b = res.body;
    for (
      const k of [
        "checked",
        "drifted",
        "repaired",
        "failed",
        "skipped",
        "stale",
        "empty",
        "revoked_cached",
        "ahead",
        "unlinked",
        "client_missing",
      ]
    ) assert.equal(typeof b[k], "number", k);
    assert.ok(b.checked >= 8, JSON.stringify(b));
    assert.ok(b.stale >= 1 && b.empty >= 3 && b.revoked_cached >= 1 && b.ahead >= 1);
    assert.ok(b.unlinked >= 1 && b.client_missing >= 1);
    assert.ok(b.repaired >= 6 && b.skipped >= 1);
    assert.equal(b.drifted, b.stale + b.empty + b.revoked_cached + b.ahead + b.unlinked);

    const s = await stackCache(cS);
    assert.deepEqual([s.mp_access_token, s.mp_token_version], [g[1].access_token, 2]);
    const e = await stackCache(cE);
    assert.deepEqual([e.mp_access_token, e.mp_public_key, e.mp_token_version], [
      g[2].access_token,
      g[2].public_key,
      1,
    ]);
    assert.equal(await adminVersion(aE), 1);
    const l = await stackCache(cL);
    assert.equal(await adminVersion(aL), 4);
    assert.deepEqual([l.mp_access_token, l.mp_token_version], [g[3].access_token, 4]);
    const r = await stackCache(cR);
    assert.deepEqual([r.mp_access_token, r.mp_public_key, r.mp_token_version], [null, null, 4]);
    assert.equal(await adminVersion(aR), 4);
    const a = await stackCache(cA);
    assert.equal(await adminVersion(aA), 6);
    assert.deepEqual([a.mp_access_token, a.mp_token_version], [g[5].access_token, 6]);
    const u = await stackCache(cU);
    assert.deepEqual([u.mp_access_token, u.mp_public_key, u.mp_token_version], [null, null, 2]);
    const i = await stackCache(cI);
    assert.deepEqual([i.mp_access_token, i.mp_token_version], [g[7].access_token, 1]);
    assert.equal(i.mp_synced_at.toISOString(), "2020-01-01T00:00:00.000Z");
    const leased = await stackCache(cB);
    assert.deepEqual([leased.mp_access_token, leased.mp_token_version], [null, 2]);
    assert.equal(await adminVersion(aB), 2);
    assert.equal(await adminVersion(aM), 1);

    const line = JSON.parse(await logLine("MP reconcile finished", `"repaired":${b.repaired}`));
    assert.equal(line.level, "info");
    assert.equal(line.unlinked, b.unlinked);
    const [event] = await adminDb()`select detail from mp_credential_events
      where event = 'reconciled' order by id desc limit 1`;
    assert.equal(event.detail.repaired, b.repaired);

    // Nothing left to repair for these accounts; a second run changes none of them.
    const again = await call("mp-reconcile", {});
    assert.equal(again.status, 200);
    assert.deepEqual(
      [(await stackCache(cS)).mp_token_version, (await stackCache(cL)).mp_token_version],
      [2, 4],
    );
    assert.equal(await adminVersion(aA), 6);

    // The lease ends: the next run repairs the account it had to leave.
    await adminDb()`update nv_accounts set mp_refresh_lease_owner = null,
      mp_refresh_lease_expires_at = null where id = ${aB}`;
    await call("mp-reconcile", {});
    assert.equal((await stackCache(cB)).mp_token_version, 3);
  });
});

Deno.test("mp-reconcile: limit bounds the repairs; strict input; server key; POST only", async () => {
  await withCronPaused("mp-reconcile", async () => {
    const g = await sandbox.grants(2);
    for (const grant of g) await newAccount({ grant, clientId: await newClient() });
    const res = await call("mp-reconcile", { limit: 1 });
    assert.equal(res.status, 200);
    assert.equal(res.body.repaired + res.body.failed, 1);
    assert.ok(res.body.skipped >= 1);
    assert.ok(res.body.drifted >= 2);

    for (
      const bad of [{ limit: 0 }, { limit: 1.5 }, { limit: "5" }, { limit: 10_001 }, { x: 1 }]
    ) {
      const r = await call("mp-reconcile", bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal(r.body.error.code, "invalid_request");
    }
    assert.equal((await call("mp-reconcile", {}, { key: null })).status, 401);
    assert.equal((await call("mp-reconcile", {}, { key: "sb_secret_wrong" })).status, 401);
    assert.equal((await call("mp-reconcile", undefined, { method: "GET" })).status, 405);
    await call("mp-reconcile", {}); // leave nothing drifted behind
  });
});

Deno.test("mp-health: totals match the databases; drift and fast-path misses move them", async () => {
  await withCronPaused("mp-reconcile", async () => {
    // Every count by the connection state (one definition), never the mp_connected flag.
    const counts = async () => {
      const [row] = await adminDb()`
        select count(*)::int as accounts,
               count(*) filter (where mp_state = 'connected')::int as connected,
               count(*) filter (where mp_state in ('connected', 'at_risk')
                                  and mp_token_expires_at < now() + interval '7 days')::int
                 as expiring_7d,
               count(*) filter (where mp_state = 'reauth_required')::int as needs_reauth
          from nv_accounts`;
      return { ...row };
    };
    await call("mp-reconcile", {});
    const h0 = await call("mp-health");
    // 200 when ok, else 503 with the same body (the suite pauses the schedules: often stalled).
    assert.equal(h0.status, h0.body.ok ? 200 : 503);
    assert.deepEqual(
      Object.keys(h0.body).sort(),
      [
        "accounts",
        "at_risk",
        "client_missing",
        "connected",
        "drift_by_kind",
        "drifted",
        "expiring_7d",
        "fast_path_misses_1h",
        "needs_reauth",
        "ok",
        "outbox",
        "problems",
        "reconcile",
        "schedules",
        "sites",
        "states",
      ],
    );
    // Per site beside the overall figures (docs/contract.md, "Applications and sites").
    const sites = Object.values(h0.body.sites as Record<string, { accounts: number }>);
    assert.equal(sites.reduce((a, x) => a + x.accounts, 0), h0.body.accounts);
    // The outbox and the schedules (their timing is not asserted: the test stack pauses the
    // every-minute jobs; tests/events_test.ts checks `stalled` and "ok": false).
    assert.deepEqual(Object.keys(h0.body.outbox).sort(), [
      "delivery",
      "failed",
      "failed_24h",
      "last_error",
      "oldest_pending_age_s",
      "pending",
    ]);
    assert.deepEqual(Object.keys(h0.body.schedules).sort(), [
      "mp-deliver-events",
      "mp-probe",
      "mp-reconcile",
      "mp-refresh",
    ]);
    assert.equal(typeof h0.body.ok, "boolean");
    const [byState] = await adminDb()`
      select count(*) filter (where mp_state = 'connected')::int as connected,
             count(*) filter (where mp_state = 'at_risk')::int as at_risk,
             count(*) filter (where mp_state = 'reauth_required')::int as reauth_required,
             count(*) filter (where mp_state = 'revoked')::int as revoked,
             count(*) filter (where mp_state = 'not_connected')::int as not_connected
        from nv_accounts`;
    assert.deepEqual(h0.body.states, { ...byState }, "counts per state match the table");
    assert.equal(h0.body.at_risk, byState.at_risk);
    assert.deepEqual(
      {
        accounts: h0.body.accounts,
        connected: h0.body.connected,
        expiring_7d: h0.body.expiring_7d,
        needs_reauth: h0.body.needs_reauth,
      },
      await counts(),
    );
    assert.equal(
      Object.values(h0.body.states as Record<string, number>).reduce((a, b) => a + b, 0),
      h0.body.accounts,
      "the per-state counts add up to the accounts",
    );
    assert.ok(h0.body.reconcile.last_run_at, "the pass's last run is reported");
    assert.ok(h0.body.reconcile.runs_1h >= 1 && h0.body.reconcile.checked_1h >= 1);

    const g = await sandbox.grants(4);
    const c1 = await newClient(), c2 = await newClient(), c3 = await newClient();
    await newAccount({ grant: g[0], clientId: c1 }); // drifted: empty
    await newAccount({ grant: g[1], clientId: c2 }); // drifted: empty
    // Expiring in 3 days and needing re-authorization (the refresher leaves it alone).
    const x = await newAccount({ grant: g[2], clientId: c3, expiresInDays: 3 });
    await adminDb()`update nv_accounts set mp_needs_reauth = true where id = ${x}`;
    await backendDb()`update clients set mp_access_token = ${g[2].access_token},
      mp_token_version = 1 where id = ${c3}`;
    // Level drift owned by a refresher: the pass leaves it (busy) — and a missing client row.
    const cB = await newClient();
    const busy = await newAccount({ grant: g[3], clientId: cB, version: 2 });
    await backendDb()`update clients set mp_token_version = 2 where id = ${cB}`;
    await adminDb()`update nv_accounts set mp_refresh_lease_owner = ${crypto.randomUUID()},
      mp_refresh_lease_expires_at = now() + interval '5 minutes' where id = ${busy}`;
    const missing = await newAccount({ clientId: crypto.randomUUID() });

    const h1 = (await call("mp-health")).body;
    assert.equal(h1.connected, h0.body.connected + 3, "the reauth_required one is not connected");
    assert.equal(h1.expiring_7d, h0.body.expiring_7d, "nor is its expiry counted");
    assert.equal(h1.needs_reauth, h0.body.needs_reauth + 1);
    assert.equal(h1.accounts, h0.body.accounts + 5);
    assert.equal(h1.drifted, h0.body.drifted, "drift counts as the pass last found it");

    const pass = await call("mp-reconcile", {});
    assert.ok(pass.body.repaired >= 2);
    const h2 = (await call("mp-health")).body;
    assert.equal(h2.drifted, h0.body.drifted + 1, "the busy account is left, and counted");
    assert.equal(h2.drift_by_kind.empty, h0.body.drift_by_kind.empty + 1);
    assert.equal(h2.client_missing, h0.body.client_missing + 1);
    const [left] = await backendDb()`select reason, kind from mp_reconcile_drift
      where account_id = ${busy}`;
    assert.deepEqual({ ...left }, { reason: "busy", kind: "empty" });
    assert.ok(Date.parse(h2.reconcile.last_run_at) >= Date.parse(h0.body.reconcile.last_run_at));
    assert.equal(h2.reconcile.runs_1h, h0.body.reconcile.runs_1h + 1);

    // The lease ends and the client row is deleted from the master: the next pass clears both.
    await adminDb()`update nv_accounts set mp_refresh_lease_owner = null,
      mp_refresh_lease_expires_at = null where id = ${busy}`;
    await adminDb()`update nv_accounts set backend_client_id = null where id = ${missing}`;
    await call("mp-reconcile", {});
    const h3 = (await call("mp-health")).body;
    assert.equal(h3.drifted, h0.body.drifted);
    assert.equal(h3.client_missing, h0.body.client_missing);
    assert.equal((await stackCache(cB)).mp_token_version, 3, "repaired past the level cache");

    // Empty c1 again: checkout's fallback is a fast-path miss.
    await backendDb()`update clients set mp_access_token = null where id = ${c1}`;
    const fallback = await call("get-mp-config", { client_id: c1 });
    assert.equal(fallback.body.source, "fallback");
    const h4 = (await call("mp-health")).body;
    assert.equal(h4.fast_path_misses_1h, h3.fast_path_misses_1h + 1);
    const [{ n }] = await adminDb()`select count(*)::int as n from mp_credential_events
      where event = 'fast_path_miss' and occurred_at > now() - interval '1 hour'`;
    assert.equal(h4.fast_path_misses_1h, n);

    assert.equal((await call("mp-health", undefined, { key: null })).status, 401);
    assert.equal((await call("mp-health", {})).status, 405);
    assert.equal((await call("mp-health", undefined, { query: "?x=1" })).status, 400);
    await call("mp-reconcile", {});
  });
});

Deno.test("migrations schedule mp-reconcile every minute through Vault and pg_net, idempotently", async () => {
  try {
    await cronJob();
  } finally {
    await closeDbs();
  }
});

async function cronJob() {
  const files = [
    `${BACKEND_MIGRATIONS}/20261124000400_mp_reconcile_cron.sql`,
    `${BACKEND_MIGRATIONS}/20261130000300_mp_public_edges.sql`,
    `${BACKEND_MIGRATIONS}/20261130000400_mp_reconcile_at_scale.sql`,
    `${BACKEND_MIGRATIONS}/20261206000100_mp_probe_cron.sql`,
    `${BACKEND_MIGRATIONS}/20261206000300_mp_schedules.sql`,
    `${BACKEND_MIGRATIONS}/20261207000700_mp_schedule_records.sql`,
  ];
  // Re-running them in order (as postgres, whose job it is) changes nothing. (The suite keeps
  // the job paused; cron.schedule may set it active again, so it is put back as it was.)
  // (The schedules' migration upserts mp-refresh and mp-probe too: each is put back as it was.)
  const before = await backendDb()`select jobname, active from cron.job
    where jobname in ('mp-reconcile', 'mp-refresh', 'mp-probe')`;
  await backendDb().begin(async (tx) => {
    await tx.unsafe("set local role postgres");
    for (const file of files) await tx.unsafe(await Deno.readTextFile(file));
  });
  for (const { jobname, active } of before) {
    await backendDb()`update cron.job set active = ${active} where jobname = ${jobname}`;
  }
  const jobs = await backendDb()`select schedule, command, active, username from cron.job
    where jobname = 'mp-reconcile'`;
  assert.equal(jobs.length, 1);
  assert.equal(jobs[0].schedule, "* * * * *");
  assert.equal(jobs[0].username, "postgres", "the job runs as postgres");
  assert.equal(
    jobs[0].command,
    `select public.mp_invoke_function('mp-reconcile', '{}'::jsonb, 150000)`,
  );
  const [{ recorded }] = await backendDb()`select count(*)::int as recorded
    from supabase_migrations.schema_migrations
    where version in ('20261124000400', '20261130000300', '20261130000400', '20261206000100',
                      '20261206000300', '20261207000700')`;
  assert.equal(recorded, 6);

  // What the job runs reaches mp-reconcile with the Vault key and gets a 200.
  const [queued] = await backendDb().unsafe(jobs[0].command);
  const id = Number(Object.values(queued)[0]);
  const response = await eventually(async () => {
    const [row] = await backendDb()`select status_code, content from net._http_response
      where id = ${id}`;
    return row;
  }, 60_000);
  assert.equal(response.status_code, 200, response.content);
  assert.equal(typeof JSON.parse(response.content).checked, "number");
}

Deno.test("mp-reconcile checks one slice per run and the next run continues from the saved cursor", async () => {
  await withCronPaused("mp-reconcile", async () => {
    // Enough linked accounts that a slice of 3 cannot cover them in one run.
    for (let i = 0; i < 4; i++) await newAccount({ clientId: await newClient() });
    const ctx = createContext(loadConfig(Deno.env.toObject()));
    const log = createLogger({ test: "reconcile-slice" });
    try {
      const cursor = async () => {
        const [row] = await backendDb()`select after_id from mp_reconcile_cursor
          where scan = 'accounts'`;
        return row?.after_id as string | null | undefined;
      };
      const first = await reconcile(ctx, log, { slice: 3 });
      assert.equal(first.checked, 3, "a run checks its slice, no more");
      const afterFirst = await cursor();
      assert.ok(afterFirst, "the cursor is saved");
      const second = await reconcile(ctx, log, { slice: 3 });
      assert.ok(second.checked >= 1 && second.checked <= 3);
      const afterSecond = await cursor();
      assert.notEqual(afterSecond, afterFirst, "the second run went on from the first");
    } finally {
      await ctx.close();
    }
  });
});
