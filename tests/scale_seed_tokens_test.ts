// deno-lint-ignore-file no-explicit-any
/**
 * The scale seeder's given pairs (bench/scale_seed.ts, `tokens`): each chunk's pairs are asked
 * once, in order, and every seeded account holds its own given pair — encrypted under its own
 * AAD in the Admin DB, the same access token in its cache, the given seller and public key.
 */
import assert from "node:assert/strict";
import { ADMIN_PROJECT, BACKEND_PROJECT, migrate } from "../tooling/migrate.ts";
import { scratchDatabase } from "../local/bootstrap.ts";
import { clearScale, scaleAccountId, seedScale, type SeedTokens } from "../bench/scale_seed.ts";
import { parseKeyRing } from "../shared/platform/config.ts";
import { decryptSecret, importKeyRing } from "../shared/platform/crypto.ts";
import { connect } from "../shared/platform/db.ts";

async function scratchDb(url: string, workdir: string) {
  const db = await scratchDatabase(url, "seedtok");
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

const given = (i: number): SeedTokens => ({
  access_token: `APP_USR-given-${i}`,
  refresh_token: `TG-given-${i}`,
  user_id: 9_000_000_000 + i,
  public_key: `APP_USR-pk-${i}`,
});

Deno.test("seedScale with tokens: every account holds its own given pair, asked once per chunk", async () => {
  const backend = await scratchDb(Deno.env.get("BACKEND_DB_URL")!, BACKEND_PROJECT);
  const admin = await scratchDb(Deno.env.get("ADMIN_DB_URL")!, ADMIN_PROJECT);
  const keys = `seed1:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
  const ring = await importKeyRing(parseKeyRing(keys));
  try {
    const asked: [number, number][] = [];
    const n = 10_001;
    await seedScale(admin.sql, backend.sql, keys, {
      accounts: n,
      driftFraction: 0,
      tokens: (start, stop) => {
        asked.push([start, stop]);
        return Promise.resolve(Array.from({ length: stop - start }, (_, k) => given(start + k)));
      },
    });
    assert.deepEqual(asked, [[0, 5000], [5000, 10_000], [10_000, 10_001]]);
    const accounts = new Map(
      (await admin.sql<Record<string, any>[]>`
        select id::text, backend_client_id::text, mp_user_id, mp_access_token_encrypted,
               mp_refresh_token, mp_public_key from nv_accounts`).map((a) => [a.id, a]),
    );
    const caches = new Map(
      (await backend.sql<Record<string, any>[]>`
        select id::text, mp_access_token, mp_public_key, mp_token_version from clients`)
        .map((c) => [c.id, c]),
    );
    assert.equal(accounts.size, n);
    for (const i of [0, 1, 4999, 5000, 7777, 9999, 10_000]) {
      const a = accounts.get(scaleAccountId(i))!;
      const g = given(i);
      assert.equal(Number(a.mp_user_id), g.user_id);
      assert.equal(a.mp_public_key, g.public_key);
      assert.equal(
        await decryptSecret(ring, a.id, "access_token", a.mp_access_token_encrypted),
        g.access_token,
      );
      assert.equal(
        await decryptSecret(ring, a.id, "refresh_token", a.mp_refresh_token),
        g.refresh_token,
      );
      const c = caches.get(a.backend_client_id)!;
      assert.equal(c.mp_access_token, g.access_token);
      assert.equal(c.mp_public_key, g.public_key);
      assert.equal(c.mp_token_version, 1);
    }
    // A source that answers the wrong number of pairs stops the seed.
    await assert.rejects(
      seedScale(admin.sql, backend.sql, keys, {
        accounts: 10,
        tokens: () => Promise.resolve([given(0)]),
      }),
      /wrong number of pairs/,
    );
    await clearScale(admin.sql, backend.sql);
  } finally {
    await Promise.all([backend.drop(), admin.drop()]);
  }
});
