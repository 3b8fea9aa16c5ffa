// deno-lint-ignore-file no-explicit-any
/**
 * The scale seeder (bench/scale_seed.ts) on scratch databases of its own: what it seeds
 * decrypts with the project's `decryptSecret` under each account's own AAD, the caches hold
 * the same token and version except the drifted ones, and `clearScale` removes exactly
 * what was seeded.
 */
import assert from "node:assert/strict";
import { ADMIN_PROJECT, BACKEND_PROJECT, migrate } from "../tooling/migrate.ts";
import { scratchDatabase } from "../local/bootstrap.ts";
import { clearScale, seedScale } from "../bench/scale_seed.ts";
import { parseKeyRing } from "../shared/platform/config.ts";
import { decryptSecret, importKeyRing } from "../shared/platform/crypto.ts";
import { connect } from "../shared/platform/db.ts";

async function scratchDb(url: string, workdir: string) {
  const db = await scratchDatabase(url, "seed");
  await migrate(db.postgresUrl, workdir);
  const sql = connect(db.url, { max: 4 });
  return {
    sql,
    async drop() {
      await sql.end({ timeout: 1 });
      await db.drop();
    },
  };
}

Deno.test("seedScale: real ciphertexts, caches level or drifted as asked; clearScale removes only them", async () => {
  const backend = await scratchDb(Deno.env.get("BACKEND_DB_URL")!, BACKEND_PROJECT);
  const admin = await scratchDb(Deno.env.get("ADMIN_DB_URL")!, ADMIN_PROJECT);
  const keys = `seed1:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
  const ring = await importKeyRing(parseKeyRing(keys));
  try {
    const otherClient = crypto.randomUUID();
    const otherAccount = crypto.randomUUID();
    await backend.sql`insert into clients (id) values (${otherClient})`;
    await admin
      .sql`insert into nv_accounts (id, backend_client_id) values (${otherAccount}, ${otherClient})`;

    const progress: number[] = [];
    const n = 1200;
    const seeded = await seedScale(admin.sql, backend.sql, keys, {
      accounts: n,
      driftFraction: 0.3,
      onProgress: (done, total) => {
        assert.equal(total, n);
        progress.push(done);
      },
    });
    assert.equal(seeded.accounts, n);
    assert.equal(progress.at(-1), n);

    const accounts = await admin.sql<Record<string, any>[]>`
      select id::text, backend_client_id::text, mp_connected, mp_user_id,
             mp_access_token_encrypted, mp_refresh_token, mp_public_key, mp_token_version,
             mp_token_expires_at
        from nv_accounts where id <> ${otherAccount}`;
    const caches = new Map(
      (await backend.sql<Record<string, any>[]>`
        select id::text, mp_access_token, mp_public_key, mp_token_version
          from clients where id <> ${otherClient}`).map((c) => [c.id, c]),
    );
    assert.equal(accounts.length, n);
    assert.equal(caches.size, n);
    assert.equal(new Set(accounts.map((a) => a.mp_user_id)).size, n);
    assert.equal(new Set(accounts.map((a) => a.backend_client_id)).size, n);
    let emptied = 0;
    let stale = 0;
    const horizon = Date.now() + 181 * 86_400_000;
    for (const a of accounts) {
      assert.equal(a.mp_connected, true);
      assert.equal(a.mp_token_version, 1);
      const expires = a.mp_token_expires_at.getTime();
      assert.ok(expires > Date.now() - 60_000 && expires < horizon);
      const access = await decryptSecret(ring, a.id, "access_token", a.mp_access_token_encrypted);
      const refresh = await decryptSecret(ring, a.id, "refresh_token", a.mp_refresh_token);
      assert.match(access, /^APP_USR-/);
      assert.match(refresh, /^TG-/);
      const c = caches.get(a.backend_client_id)!;
      if (c.mp_token_version === 1) {
        assert.equal(c.mp_access_token, access);
        assert.equal(c.mp_public_key, a.mp_public_key);
      } else if (c.mp_token_version === null) {
        assert.equal(c.mp_access_token, null);
        assert.equal(c.mp_public_key, null);
        emptied++;
      } else {
        assert.equal(c.mp_token_version, 0);
        assert.ok(c.mp_access_token && c.mp_access_token !== access);
        stale++;
      }
    }
    assert.equal(emptied + stale, seeded.drifted);
    assert.ok(emptied > stale && stale > 0, `${emptied} emptied, ${stale} stale`);
    assert.ok(seeded.drifted > n * 0.2 && seeded.drifted < n * 0.4, `${seeded.drifted} drifted`);

    // A second seed replaces the first; clearing leaves the unrelated rows alone.
    await seedScale(admin.sql, backend.sql, keys, { accounts: 10, driftFraction: 0 });
    const [again] = await admin.sql`select count(*)::int as n from nv_accounts`;
    assert.equal(again.n, 11);
    await clearScale(admin.sql, backend.sql);
    const left = await admin.sql`select id::text from nv_accounts`;
    const leftClients = await backend.sql`select id::text from clients`;
    assert.deepEqual(left.map((r) => r.id), [otherAccount]);
    assert.deepEqual(leftClients.map((r) => r.id), [otherClient]);
  } finally {
    await Promise.all([backend.drop(), admin.drop()]);
  }
});
