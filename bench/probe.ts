/**
 * mp-probe with every account due (docs/contract.md, mp-probe; docs/scale.md): N connected
 * accounts (bench/scale_seed.ts, default 1,000,000) whose access tokens are grants the sandbox
 * issued (so MercadoPago's stand-in knows every one of them), none ever verified
 * (`mp_verified_at` null: every account due), expiring past the refresh window, the sandbox
 * answering at once (no latency, no fault). mp-probe is then called with its scheduled body
 * (`{}`: the default slice and rate) back to back, `BENCH_PROBE_RUNS` times (default 30), or
 * until every account has been probed (`BENCH_PROBE_RUNS=all`; at the default rate of 10 checks
 * a second a run of 200 takes 20 s, so a million takes 5,000 runs, about 28 hours back to back).
 * Reported, with `met` computed: CPU, wall and heap per invocation (the gateway's figures)
 * against the limits (docs/scale.md: ≤ 1 s CPU, ≤ 60 s wall, ≤ 256 MB heap); what the runs
 * covered (accounts checked per run, every check alive, no account checked twice, the checks
 * recorded in `mp_verified_at`); and how long the whole takes at its schedule (one run a minute)
 * against `MP_PROBE_INTERVAL_DAYS` (7). `BENCH_PROBE_ACCOUNTS` sets N (`--quick`: 2,000 and 3
 * runs). The pg_cron jobs are paused while it runs.
 *
 * On its own: `deno run -A bench/probe.ts [<state dir>]` against a running stack.
 */
import type { Bench, BenchRow } from "./types.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import type { MpGrant as Grant } from "../local/sandbox.ts";
import { clearScale, SCALE_ACCOUNT_PREFIX, seedScale, type SeedTokens } from "./scale_seed.ts";
import { sandboxControl } from "./refresh.ts";
import { costRows, type Invocation, invoke, LIMITS } from "./scale.ts";

/** The schedule the whole is computed for: one run a minute, every token once per 7 days. */
const RUNS_PER_DAY = 1440;
const INTERVAL_DAYS = 7;
const DEFAULT_RUNS = 30;
/** The sandbox issues at most this many grants per control call. */
const GRANTS_PER_CALL = 10_000;

/** What the runs covered, for {@link probeVerdict}. */
export interface ProbeCoverage {
  accounts: number;
  runs: number;
  /** Accounts checked, summed over the runs' answers. */
  checked: number;
  alive: number;
  dead: number;
  errors: number;
  /** Distinct accounts among the runs' results. */
  distinct: number;
  /** Seeded accounts with `mp_verified_at` set after the runs. */
  recorded: number;
  /** The fewest accounts one run checked. */
  perRunMin: number;
}

/**
 * Whether the runs did what the schedule needs: every check alive and recorded, no account
 * checked twice, and at one run a minute the slice the runs took (the fewest one run checked)
 * covers every account within the interval. Returns the days the whole takes too. Pure.
 */
export function probeVerdict(c: ProbeCoverage): {
  daysForAll: number;
  coverageMet: boolean;
  checksMet: boolean;
} {
  const daysForAll = c.perRunMin > 0 ? c.accounts / c.perRunMin / RUNS_PER_DAY : Infinity;
  return {
    daysForAll,
    coverageMet: daysForAll <= INTERVAL_DAYS,
    checksMet: c.checked > 0 && c.alive === c.checked && c.dead === 0 && c.errors === 0 &&
      c.distinct === c.checked && c.recorded === c.alive,
  };
}

/** Grants the sandbox issues for accounts `start` to `stop`, as seedable pairs. */
async function sandboxTokens(
  env: Record<string, string>,
  start: number,
  stop: number,
): Promise<SeedTokens[]> {
  const out: SeedTokens[] = [];
  for (let i = start; i < stop; i += GRANTS_PER_CALL) {
    const count = Math.min(GRANTS_PER_CALL, stop - i);
    const { grants } = (await sandboxControl(env, "grants", { count })) as { grants: Grant[] };
    for (const g of grants) {
      out.push({
        access_token: g.access_token,
        refresh_token: g.refresh_token,
        user_id: g.user_id,
        public_key: g.public_key,
      });
    }
  }
  return out;
}

/** Seeded accounts whose token a probe recorded as verified. */
async function verifiedCount(admin: Sql): Promise<number> {
  const [{ n }] = await admin<{ n: number }[]>`select count(*)::int as n from nv_accounts
    where id between ${SCALE_ACCOUNT_PREFIX + "000000000000"}::uuid
                 and ${SCALE_ACCOUNT_PREFIX + "ffffffffffff"}::uuid
      and mp_verified_at is not null`;
  return n;
}

/** The mp-probe section of `deno task bench`. */
export const probeBench: Bench = async (env) => {
  const quick = env.BENCH_QUICK === "1";
  const accounts = Number(
    Deno.env.get("BENCH_PROBE_ACCOUNTS") ?? env.BENCH_PROBE_ACCOUNTS ??
      (quick ? 2000 : 1_000_000),
  );
  const runsAsked = Deno.env.get("BENCH_PROBE_RUNS") ?? env.BENCH_PROBE_RUNS ??
    (quick ? "3" : String(DEFAULT_RUNS));
  const untilAll = runsAsked === "all";
  const maxRuns = untilAll ? Number.MAX_SAFE_INTEGER : Number(runsAsked);
  if (!untilAll && !(Number.isInteger(maxRuns) && maxRuns > 0)) {
    throw new Error("probe: BENCH_PROBE_RUNS is a positive integer or all");
  }
  const logFile = `${env.BENCH_LOG_DIR ?? ".local/dev"}/stack.log`;
  const admin = connect(env.ADMIN_DB_URL, { max: 4, timeoutMs: 600_000 });
  const backend = connect(env.BACKEND_DB_URL, { max: 4, timeoutMs: 600_000 });
  const size = accounts.toLocaleString("en");
  let paused: string[] = [];
  try {
    paused = (await backend<{ jobname: string }[]>`update cron.job set active = false
      where active returning jobname`).map((r) => r.jobname);
    await sandboxControl(env, "reset", {});
    const seed = await seedScale(admin, backend, env.MP_TOKEN_KEYS, {
      accounts,
      driftFraction: 0,
      // Past the refresh window (60 days): nothing else is due.
      expiresFromDay: 61,
      tokens: (start, stop) => sandboxTokens(env, start, stop),
    });
    await Promise.all([admin`vacuum analyze nv_accounts`, backend`vacuum analyze clients`]);
    console.log(`bench: probe: seeded ${size} accounts in ${seed.seconds.toFixed(0)} s`);

    const runs: Invocation[] = [];
    const seen = new Set<string>();
    const c = { checked: 0, alive: 0, dead: 0, errors: 0, perRunMin: Infinity };
    const started = performance.now();
    while (runs.length < maxRuns && seen.size < accounts) {
      const run = await invoke(env, logFile, "mp-probe", {});
      if (run.status !== 200) throw new Error(`mp-probe answered ${run.status}`);
      runs.push(run);
      const body = run.body as {
        checked: number;
        alive: number;
        dead: number;
        errors: number;
        results: { account_id: string }[];
      };
      c.checked += body.checked;
      c.alive += body.alive;
      c.dead += body.dead;
      c.errors += body.errors;
      for (const r of body.results) seen.add(r.account_id);
      // The last run of an "all" pass may find fewer than a slice left.
      if (seen.size < accounts || runs.length === 1) {
        c.perRunMin = Math.min(c.perRunMin, body.checked);
      }
      if (body.checked === 0) break;
    }
    const seconds = (performance.now() - started) / 1000;
    const coverage: ProbeCoverage = {
      accounts,
      runs: runs.length,
      ...c,
      perRunMin: Number.isFinite(c.perRunMin) ? c.perRunMin : 0,
      distinct: seen.size,
      recorded: await verifiedCount(admin),
    };
    const v = probeVerdict(coverage);
    const what = untilAll ? `until every account was probed` : `${maxRuns} runs`;
    const label = `mp-probe, ${size} connected accounts all due (never verified; every token a ` +
      `sandbox grant, the sandbox answering at once), called with its scheduled body {} back ` +
      `to back, ${what}`;
    const rows: BenchRow[] = [
      ...costRows(label, runs, LIMITS.cpuMs),
      {
        bench: label,
        metric: "accounts probed by the runs",
        value:
          `${coverage.distinct.toLocaleString("en")} of ${size} in ${runs.length} runs (${
            seconds.toFixed(0)
          } s): ${coverage.alive} alive, ${coverage.dead} dead, ${coverage.errors} errors; ` +
          `${coverage.recorded.toLocaleString("en")} recorded verified`,
        baseline: `fewest in one run: ${coverage.perRunMin}`,
        ratio: `${(coverage.distinct / accounts).toFixed(4)} of the accounts`,
        target: untilAll
          ? "every account once, all alive, recorded"
          : "each account once, all alive, recorded",
        met: v.checksMet && (!untilAll || coverage.distinct === accounts),
      },
      {
        bench: label,
        metric: "the whole at its schedule (1 run a minute, the fewest a run probed)",
        value: `${v.daysForAll.toFixed(2)} days (${
          Math.ceil(accounts / Math.max(1, coverage.perRunMin)).toLocaleString("en")
        } runs)`,
        baseline: `MP_PROBE_INTERVAL_DAYS ${INTERVAL_DAYS}`,
        ratio: `${(v.daysForAll / INTERVAL_DAYS).toFixed(2)}× the interval`,
        target: `≤ ${INTERVAL_DAYS} days`,
        met: v.coverageMet,
      },
    ];
    return rows;
  } finally {
    await clearScale(admin, backend).catch(() => {});
    await backend`update cron.job set active = true where jobname = any(${pgArray(paused)})`
      .catch(() => {});
    await Promise.all([admin.end({ timeout: 1 }), backend.end({ timeout: 1 })]);
  }
};

if (import.meta.main) {
  const { parseEnvFile } = await import("../local/launch.ts");
  const dir = Deno.args[0] ?? Deno.env.get("STACK_STATE_DIR") ?? ".local/dev";
  const env = parseEnvFile(await Deno.readTextFile(`${dir}/stack.env`));
  console.table(await probeBench({ BENCH_LOG_DIR: dir, ...env }));
}
