/**
 * Backfill and key rotation at 1,000,000 accounts on the running stack. The accounts are
 * seeded by `seedScale` (bench/scale_seed.ts: real AES-256-GCM ciphertexts, 10% of the caches
 * drifted) and removed after. Backfill is compared with the naive loop the operators' original
 * script would have run (one account at a time through `syncMpCredentialsToBackend`: one Admin
 * read, one decrypt, one Backend write), timed on a sample of the seeded accounts and
 * extrapolated to the full set. Backfill runs twice: over the seeded state (10% to repair),
 * then with every seeded cache emptied (a first run: every account written). Then
 * `deno task rotate-keys` re-encrypts everything under a new key. Both scripts run as the
 * operator runs them (`scripts/*.ts --json`, a process of their own), so their peak RSS
 * (VmHWM) is theirs alone. mp-reconcile is measured in bench/scale.ts.
 *
 * On its own: `deno run -A bench/backfill.ts [<state dir>]` against a stack already running
 * from `<state dir>/stack.env` (default `.local/dev`); `BENCH_BACKFILL_ACCOUNTS` sets the size.
 */
import type { Bench, BenchRow } from "./types.ts";
import {
  clearScale,
  SCALE_CLIENT_PREFIX,
  scaleAccountId,
  scaleClientId,
  seedScale,
} from "./scale_seed.ts";
import { loadConfig } from "../shared/platform/config.ts";
import { createContext } from "../shared/platform/context.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { createLogger } from "../shared/platform/log.ts";
import { rotateKeys } from "../shared/operations/rotation.ts";
import { syncMpCredentialsToBackend } from "../shared/sync/sync.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** What a script run as a subprocess printed (`--json`), how long it took, and its peak RSS. */
interface ScriptRun {
  summary: Record<string, unknown> & { seconds: number };
  wallSeconds: number;
  peakRssMb: number;
}

/** Peak resident memory of process `pid` so far (VmHWM), in MB; 0 once it is gone. */
async function peakRss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
  return Number(status.match(/^VmHWM:\s*(\d+) kB/m)?.[1] ?? 0) / 1024;
}

/** Runs `scripts/<name>.ts --json` with `env`, sampling its peak RSS until it exits. */
async function runScript(name: string, env: Record<string, string>): Promise<ScriptRun> {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/${name}.ts`, "--json"],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let peak = 0;
  let running = true;
  const sampler = (async () => {
    while (running) {
      peak = Math.max(peak, await peakRss(child.pid));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const out = await child.output();
  running = false;
  await sampler;
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    // Only the exit code and the last stderr line: the scripts log no secrets, but keep it short.
    const last = new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
    throw new Error(`${name} exited ${out.code}: ${last.slice(0, 300)}`);
  }
  return {
    summary: JSON.parse(stdout.split("\n").pop()!),
    wallSeconds: (performance.now() - started) / 1000,
    peakRssMb: peak,
  };
}

/** Empties the caches of the clients of seeded accounts `from` to `to` (exclusive). */
async function emptyCaches(backend: Sql, from: number, to: number) {
  const ids = Array.from({ length: to - from }, (_, i) => scaleClientId(from + i));
  for (let i = 0; i < ids.length; i += 10_000) {
    await backend`update clients set mp_access_token = null, mp_public_key = null,
      mp_token_version = null, mp_synced_at = null
      where id = any(${pgArray(ids.slice(i, i + 10_000))}::uuid[])`;
  }
}

const FIRST_CLIENT = `${SCALE_CLIENT_PREFIX}000000000000`;
const LAST_CLIENT = `${SCALE_CLIENT_PREFIX}ffffffffffff`;

/** Empties every seeded cache in one statement (seeded client ids share a prefix). */
async function emptyAllCaches(backend: Sql) {
  await backend`update clients set mp_access_token = null, mp_public_key = null,
    mp_token_version = null, mp_synced_at = null
    where id between ${FIRST_CLIENT}::uuid and ${LAST_CLIENT}::uuid`;
  await backend`vacuum clients`;
}

/** How many seeded caches hold the version-1 token (every one, after a complete backfill). */
async function current(backend: Sql): Promise<number> {
  const [row] = await backend<{ n: number }[]>`select count(*)::int as n from clients
    where id between ${FIRST_CLIENT}::uuid and ${LAST_CLIENT}::uuid
      and mp_token_version = 1 and mp_access_token is not null`;
  return row.n;
}

const fmt = (n: number, digits = 1) => n.toFixed(digits);
const int = (n: number) => Math.round(n).toLocaleString("en");

/** A fresh 32-byte key spec for the rotation (never printed). */
function newKeySpec(id: string): string {
  return `${id}:${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
}

/** Backfill (seeded drift, then every cache empty) and rotate-keys at 1,000,000 accounts. */
/** The naive loop's rate: one account at a time, on the first `sampleSize` seeded accounts. */
interface Naive {
  rate: number;
  /** `total` at that rate. */
  seconds: number;
  sampleSize: number;
}

/**
 * Syncs a sample of the seeded accounts (10% drifted, as the rest) one at a time, then empties
 * the sample's caches again, so the backfill has no less to do.
 */
async function measureNaive(
  ctx: ReturnType<typeof createContext>,
  backend: Sql,
  total: number,
  sampleSize: number,
): Promise<Naive> {
  const t = performance.now();
  for (let i = 0; i < sampleSize; i++) {
    const r = await syncMpCredentialsToBackend(ctx, scaleAccountId(i), scaleClientId(i));
    if (r.result !== "synced" && r.result !== "already_current") {
      throw new Error(`naive sync: ${r.result}`);
    }
  }
  const rate = sampleSize / ((performance.now() - t) / 1000);
  await emptyCaches(backend, 0, sampleSize);
  return { rate, seconds: total / rate, sampleSize };
}

/** One backfill run's row against the naive loop. */
function backfillRow(bench: string, run: ScriptRun, naive: Naive, total: number): BenchRow {
  const seconds = run.summary.seconds;
  const speedup = naive.seconds / seconds;
  return {
    bench,
    metric: `seconds for ${int(total)} accounts`,
    value: `${fmt(seconds, 2)} s (${int(total / seconds)}/s), peak RSS ${int(run.peakRssMb)} MB`,
    baseline: `naive loop ${fmt(naive.seconds)} s (${int(naive.rate)}/s, measured on ${
      int(naive.sampleSize)
    }, extrapolated)`,
    ratio: `${fmt(speedup)}×`,
    target: "≤ 60 s, ≥ 10× naive",
    met: speedup >= 10 && seconds <= 60,
  };
}

export const backfillBench: Bench = async (env) => {
  const total = Number(env.BENCH_BACKFILL_ACCOUNTS ?? 1_000_000);
  const sampleSize = Math.min(total, Number(env.BENCH_BACKFILL_NAIVE_SAMPLE ?? 2000));
  const admin = connect(env.ADMIN_DB_URL, { max: 2, timeoutMs: 120_000 });
  const backend = connect(env.BACKEND_DB_URL, { max: 2, timeoutMs: 120_000 });
  const ctx = createContext(loadConfig(env));
  const scriptEnv = {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "",
    ADMIN_DB_URL: env.ADMIN_DB_URL,
    BACKEND_DB_URL: env.BACKEND_DB_URL,
    MP_TOKEN_KEYS: env.MP_TOKEN_KEYS,
  };
  const newKey = newKeySpec("bench2");
  let rotated = false;
  try {
    const seed = await seedScale(admin, backend, env.MP_TOKEN_KEYS, { accounts: total });

    const naive = await measureNaive(ctx, backend, total, sampleSize);

    const drifted = await runScript("backfill", scriptEnv);
    if ((await current(backend)) < total) throw new Error("backfill left caches behind");

    await emptyAllCaches(backend);
    const empty = await runScript("backfill", scriptEnv);
    if ((await current(backend)) < total) throw new Error("backfill left caches behind");

    rotated = true;
    const rotation = await runScript("rotate_keys", {
      ...scriptEnv,
      MP_TOKEN_KEYS: `${newKey},${env.MP_TOKEN_KEYS}`,
    });
    if (rotation.summary.remaining !== 0 || rotation.summary.failed !== 0) {
      throw new Error("rotate-keys left values behind");
    }
    const values = rotation.summary.rotated as number;

    return [
      {
        bench: "seedScale (COPY, real ciphertexts)",
        metric: `seconds for ${int(total)} accounts + clients`,
        value: `${fmt(seed.seconds)} s (${int(seed.drifted)} caches drifted)`,
        baseline: "",
        ratio: "",
        target: "",
        met: null,
      },
      backfillRow(
        `backfill, ${int(seed.drifted + sampleSize)} caches drifted (others current)`,
        drifted,
        naive,
        total,
      ),
      backfillRow("backfill, every cache empty (first run)", empty, naive, total),
      {
        bench: "rotate-keys (every ciphertext to a new key)",
        metric: `seconds for ${int(values)} values (${int(total)} accounts)`,
        value:
          `${fmt(rotation.summary.seconds, 2)} s (${int(values / rotation.summary.seconds)}/s), ` +
          `peak RSS ${int(rotation.peakRssMb)} MB`,
        baseline: "",
        ratio: "",
        target: "streamed (memory independent of accounts)",
        met: null,
      },
    ];
  } finally {
    await clearScale(admin, backend).catch(() => {});
    if (rotated) {
      // What is left (the other benches' rows) goes back under the stack's own key.
      const back = createContext(
        loadConfig({ ...env, MP_TOKEN_KEYS: `${env.MP_TOKEN_KEYS},${newKey}` }),
      );
      await rotateKeys(back, createLogger({ component: "bench-backfill" })).catch(() => {});
      await back.close();
    }
    await Promise.all([admin.end(), backend.end(), ctx.close()]);
  }
};

if (import.meta.main) {
  const { parseEnvFile } = await import("../local/launch.ts");
  const dir = Deno.args[0] ?? ".local/dev";
  const env = parseEnvFile(await Deno.readTextFile(`${dir}/stack.env`));
  for (const [k, v] of Object.entries(Deno.env.toObject())) if (k.startsWith("BENCH_")) env[k] = v;
  const rows = await backfillBench(env);
  console.table(rows);
}
