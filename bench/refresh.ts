/**
 * mp-refresh throughput (docs/contract.md, mp-refresh): 10,000 due accounts against the sandbox with 50 ms of
 * latency per token call, refreshed by back-to-back mp-refresh runs (two callers, 500
 * accounts each). Measured in accounts/s against the bound the concurrency sets: each caller's
 * run is served by its own isolate with its own MP_REFRESH_CONCURRENCY slots, so
 * callers × MP_REFRESH_CONCURRENCY ÷ latency. Target: ≥ 0.8 of the bound. `BENCH_QUICK=1` in the
 * environment passed in seeds 300 accounts instead (to prove the bench still runs).
 * Run alone against a running stack: `deno run -A bench/refresh.ts [.local/dev]`.
 */
import type { Bench } from "./types.ts";
import { loadConfig, parseKeyRing } from "../shared/platform/config.ts";
import { encryptSecret, importKeyRing } from "../shared/platform/crypto.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { parseEnvFile } from "../local/launch.ts";
import type { MpGrant as Grant } from "../local/sandbox.ts";

const ACCOUNTS = { full: 10_000, quick: 300 };
const LATENCY_MS = 50;
const LIMIT = 500;
const CALLERS = 2;
const CHUNK = 500;

/** Calls the sandbox's control endpoint `path` (grants, latency, …). */
export async function sandboxControl(
  env: Record<string, string>,
  path: string,
  body: unknown,
): Promise<unknown> {
  const res = await fetch(`${env.SANDBOX_URL}/__sandbox/${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`sandbox ${path}: ${res.status}`);
  return await res.json();
}

/** Accounts seeded by {@link seedDueAccounts}, for {@link dropAccounts}. */
interface DueAccounts {
  ids: string[];
  clientIds: string[];
}

/**
 * Inserts `n` connected accounts (fresh sandbox grants, encrypted as the functions do), linked
 * to `n` new clients, whose tokens expire at `expires` (so mp-refresh finds them due).
 */
export async function seedDueAccounts(
  env: Record<string, string>,
  admin: Sql,
  backend: Sql,
  n: number,
  expires: Date,
): Promise<DueAccounts> {
  const ring = await importKeyRing(parseKeyRing(env.MP_TOKEN_KEYS));
  const seeded: DueAccounts = { ids: [], clientIds: [] };
  const { grants } = (await sandboxControl(env, "grants", { count: n })) as { grants: Grant[] };
  for (let i = 0; i < grants.length; i += CHUNK) {
    const rows = await Promise.all(
      grants.slice(i, i + CHUNK).map(async (g) => {
        const id = crypto.randomUUID();
        const clientId = crypto.randomUUID();
        seeded.ids.push(id);
        seeded.clientIds.push(clientId);
        return {
          id,
          backend_client_id: clientId,
          mp_connected: true,
          mp_user_id: g.user_id,
          mp_access_token_encrypted: await encryptSecret(ring, id, "access_token", g.access_token),
          mp_refresh_token: await encryptSecret(ring, id, "refresh_token", g.refresh_token),
          mp_public_key: g.public_key,
          mp_expires_in: g.expires_in,
          mp_token_expires_at: expires,
          mp_live_mode: g.live_mode,
          mp_scope: g.scope,
          mp_token_version: 1,
        };
      }),
    );
    const clients = rows.map((r) => r.backend_client_id);
    await backend`insert into clients (id) select unnest(${pgArray(clients)}::uuid[])`;
    await admin`insert into nv_accounts ${admin(rows)}`;
  }
  return seeded;
}

/** Deletes the accounts, their audit events and their clients. */
export async function dropAccounts(admin: Sql, backend: Sql, seeded: DueAccounts): Promise<void> {
  for (let i = 0; i < seeded.ids.length; i += CHUNK) {
    const some = pgArray(seeded.ids.slice(i, i + CHUNK));
    await admin`delete from mp_credential_events where account_id = any(${some}::uuid[])`;
    await admin`delete from nv_accounts where id = any(${some}::uuid[])`;
    await backend`delete from clients where id = any(${
      pgArray(seeded.clientIds.slice(i, i + CHUNK))
    }::uuid[])`;
  }
}

/** Seeds the due accounts, refreshes them all through mp-refresh, reports accounts/s. */
export const refreshBench: Bench = async (env) => {
  const accounts = env.BENCH_QUICK === "1" ? ACCOUNTS.quick : ACCOUNTS.full;
  const concurrency = loadConfig(env).refreshConcurrency;
  const bound = (CALLERS * concurrency) / (LATENCY_MS / 1000);
  const admin = connect(env.ADMIN_DB_URL, { max: 4 });
  const backend = connect(env.BACKEND_DB_URL, { max: 4 });
  let seeded: DueAccounts = { ids: [], clientIds: [] };
  try {
    seeded = await seedDueAccounts(
      env,
      admin,
      backend,
      accounts,
      new Date(Date.now() + 10 * 86_400_000),
    );
    await sandboxControl(env, "latency", { ms: LATENCY_MS });
    const started = performance.now();
    const caller = async () => {
      for (let i = 0; i < 4 * accounts / LIMIT; i++) {
        const res = await fetch(`${env.FUNCTIONS_URL}/mp-refresh`, {
          method: "POST",
          headers: { "content-type": "application/json", apikey: env.SECRET_KEY },
          body: JSON.stringify({ limit: LIMIT }),
        });
        const body = await res.json();
        if (res.status !== 200) throw new Error(`mp-refresh answered ${res.status}`);
        if (body.claimed === 0) return;
      }
    };
    await Promise.all(Array.from({ length: CALLERS }, caller));
    const seconds = (performance.now() - started) / 1000;

    const [{ refreshed }] = await admin<{ refreshed: number }[]>`
      select count(*)::int as refreshed from nv_accounts
       where id = any(${pgArray(seeded.ids)}::uuid[]) and mp_token_version = 2`;
    const rate = refreshed / seconds;
    const ratio = rate / bound;
    return [{
      bench: `mp-refresh, ${accounts} due accounts, sandbox latency ${LATENCY_MS} ms`,
      metric: "accounts/s",
      value: `${rate.toFixed(1)} (${refreshed} in ${seconds.toFixed(1)} s)`,
      baseline: `${
        bound.toFixed(0)
      } (${CALLERS} callers × concurrency ${concurrency} ÷ ${LATENCY_MS} ms)`,
      ratio: ratio.toFixed(2),
      target: "≥ 0.8× bound, all refreshed",
      met: ratio >= 0.8 && refreshed === accounts,
    }];
  } finally {
    await sandboxControl(env, "latency", { ms: 0 }).catch(() => {});
    await dropAccounts(admin, backend, seeded);
    await Promise.all([admin.end({ timeout: 1 }), backend.end({ timeout: 1 })]);
  }
};

if (import.meta.main) {
  const dir = Deno.args[0] ?? Deno.env.get("STACK_STATE_DIR") ?? ".local/dev";
  const env = parseEnvFile(await Deno.readTextFile(`${dir}/stack.env`));
  console.table(await refreshBench(env));
}
