/**
 * Backfill and reconciliation of 100,000 linked, connected accounts on the running stack,
 * against the naive loop the operators' original script would have run (one account at a
 * time through `syncMpCredentialsToBackend`: one Admin read, one decrypt, one Backend write).
 * The naive loop is timed on a sample and its per-account rate extrapolated to the full set.
 * Seeds its own accounts and clients (real AES-256-GCM ciphertexts) and deletes them after.
 *
 * On its own: `deno run -A bench/backfill.ts [<state dir>]` against a stack already running
 * from `<state dir>/stack.env` (default `.local/dev`).
 */
import type { Bench, BenchRow } from "./types.ts";
import { loadConfig, parseKeyRing } from "../shared/platform/config.ts";
import { createContext } from "../shared/platform/context.ts";
import { encryptSecret, importKeyRing } from "../shared/platform/crypto.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { createLogger } from "../shared/platform/log.ts";
import { runBackfill } from "../shared/operations/backfill.ts";
import { syncMpCredentialsToBackend } from "../shared/sync/sync.ts";

const CHUNK = 5000;

function chunks<T>(items: T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

interface Seeded {
  accounts: string[];
  clients: string[];
}

/** Inserts `n` connected accounts linked to `n` fresh clients, encrypting as the functions do. */
async function seed(admin: Sql, backend: Sql, keys: string, n: number): Promise<Seeded> {
  const ring = await importKeyRing(parseKeyRing(keys));
  const accounts = Array.from({ length: n }, () => crypto.randomUUID());
  const clients = Array.from({ length: n }, () => crypto.randomUUID());
  for (const ids of chunks(clients)) {
    await backend`insert into clients (id) select unnest(${pgArray(ids)}::uuid[])`;
  }
  const expires = new Date(Date.now() + 180 * 86_400_000);
  for (const [c, ids] of chunks(accounts).entries()) {
    const access = await Promise.all(
      ids.map((id, i) => encryptSecret(ring, id, "access_token", `APP_USR-bench-${c}-${i}-${id}`)),
    );
    const refresh = await Promise.all(
      ids.map((id, i) => encryptSecret(ring, id, "refresh_token", `TG-bench-${c}-${i}-${id}`)),
    );
    const linked = clients.slice(c * CHUNK, c * CHUNK + ids.length);
    await admin`
      insert into nv_accounts (id, backend_client_id, mp_connected, mp_access_token_encrypted,
                               mp_refresh_token, mp_public_key, mp_expires_in,
                               mp_token_expires_at, mp_token_version)
      select a.id, a.client, true, a.access, a.refresh, 'APP_USR-pk-bench', 15552000,
             ${expires}, 1
        from unnest(${pgArray(ids)}::uuid[], ${pgArray(linked)}::uuid[], ${
      pgArray(access)
    }::text[], ${pgArray(refresh)}::text[])
             as a(id, client, access, refresh)`;
  }
  return { accounts, clients };
}

/** Empties the cache of `clients` (as before any sync). */
async function resetCache(backend: Sql, clients: string[]) {
  for (const ids of chunks(clients)) {
    await backend`update clients set mp_access_token = null, mp_public_key = null,
      mp_token_version = null, mp_synced_at = null where id = any(${pgArray(ids)}::uuid[])`;
  }
}

/** How many of `clients` hold a token. */
async function cached(backend: Sql, clients: string[]): Promise<number> {
  let n = 0;
  for (const ids of chunks(clients)) {
    const [row] = await backend<{ n: number }[]>`select count(*)::int as n from clients
      where id = any(${pgArray(ids)}::uuid[]) and mp_access_token is not null`;
    n += row.n;
  }
  return n;
}

async function cleanup(admin: Sql, backend: Sql, seeded: Seeded) {
  for (const ids of chunks(seeded.accounts)) {
    await admin`delete from nv_accounts where id = any(${pgArray(ids)}::uuid[])`;
  }
  for (const ids of chunks(seeded.clients)) {
    await backend`delete from clients where id = any(${pgArray(ids)}::uuid[])`;
  }
}

async function reconcileCall(env: Record<string, string>, limit: number) {
  const res = await fetch(`${env.FUNCTIONS_URL}/mp-reconcile`, {
    method: "POST",
    headers: { apikey: env.SECRET_KEY, "content-type": "application/json" },
    body: JSON.stringify({ limit }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`mp-reconcile answered ${res.status}`);
  return body as { checked: number; drifted: number; repaired: number; failed: number };
}

const fmt = (n: number, digits = 1) => n.toFixed(digits);

/** Backfill and reconcile of 100,000 accounts vs the naive one-at-a-time loop. */
export const backfillBench: Bench = async (env) => {
  const total = Number(env.BENCH_BACKFILL_ACCOUNTS ?? 100_000);
  const sampleSize = Math.min(total, Number(env.BENCH_BACKFILL_NAIVE_SAMPLE ?? 2000));
  const admin = connect(env.ADMIN_DB_URL, { max: 4 });
  const backend = connect(env.BACKEND_DB_URL, { max: 4 });
  const ctx = createContext(loadConfig(env));
  const log = createLogger({ component: "bench-backfill" });
  let seeded: Seeded = { accounts: [], clients: [] };
  try {
    seeded = await seed(admin, backend, env.MP_TOKEN_KEYS, total);

    // Naive: one account at a time, on a sample; then the sample's cache is emptied again.
    let t = performance.now();
    for (let i = 0; i < sampleSize; i++) {
      const r = await syncMpCredentialsToBackend(ctx, seeded.accounts[i], seeded.clients[i]);
      if (r.result !== "synced") throw new Error(`naive sync: ${r.result}`);
    }
    const naiveRate = sampleSize / ((performance.now() - t) / 1000);
    const naiveSeconds = total / naiveRate;
    await resetCache(backend, seeded.clients.slice(0, sampleSize));

    t = performance.now();
    const summary = await runBackfill(ctx, log, {});
    const backfillSeconds = (performance.now() - t) / 1000;
    const synced = await cached(backend, seeded.clients);
    if (synced < total) throw new Error(`backfill filled only ${synced} caches of ${total}`);

    await resetCache(backend, seeded.clients);
    t = performance.now();
    const repair = await reconcileCall(env, 1_000_000);
    const reconcileSeconds = (performance.now() - t) / 1000;
    const filled = await cached(backend, seeded.clients);
    if (filled < total) throw new Error(`reconcile filled only ${filled} caches of ${total}`);

    t = performance.now();
    const check = await reconcileCall(env, 1_000_000);
    const checkSeconds = (performance.now() - t) / 1000;

    const row = (bench: string, seconds: number, accounts: number): BenchRow => {
      const speedup = naiveSeconds / seconds;
      return {
        bench,
        metric: `seconds for ${accounts.toLocaleString("en")} accounts`,
        value: `${fmt(seconds, 2)} s (${Math.round(accounts / seconds).toLocaleString("en")}/s)`,
        baseline: `naive loop ${fmt(naiveSeconds)} s (${
          Math.round(naiveRate).toLocaleString("en")
        }/s, measured on ${sampleSize.toLocaleString("en")}, extrapolated)`,
        ratio: `${fmt(speedup)}×`,
        target: "≥ 10× naive, ≤ 30 s",
        met: speedup >= 10 && seconds <= 30,
      };
    };
    return [
      row("backfill (batched, version-fenced)", backfillSeconds, summary.accounts),
      row("mp-reconcile repairing every cache", reconcileSeconds, repair.checked),
      {
        ...row("mp-reconcile, nothing drifted (check only)", checkSeconds, check.checked),
        target: "≤ 30 s",
        met: checkSeconds <= 30,
      },
    ];
  } finally {
    await cleanup(admin, backend, seeded).catch(() => {});
    await Promise.all([admin.end(), backend.end(), ctx.close()]);
  }
};

if (import.meta.main) {
  const { parseEnvFile } = await import("../local/launch.ts");
  const dir = Deno.args[0] ?? ".local/dev";
  const env = parseEnvFile(await Deno.readTextFile(`${dir}/stack.env`));
  const rows = await backfillBench(env);
  console.table(rows);
}
