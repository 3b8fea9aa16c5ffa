/**
 * Every country MercadoPago serves, one down (docs/contract.md, "Applications and sites"): a
 * stack of seven applications (`STACK_MP_SITES=MLA,MLB,MLM,MLC,MCO,MLU,MPE`), N accounts spread
 * evenly over the seven sites, `BENCH_SITES_DUE` of each site's due (real sandbox grants issued
 * by that site's own application, expiring in one day) and the rest not due (bench/scale_seed.ts
 * accounts, verified within the probe interval, expiring past the refresh window). One site's
 * MercadoPago answers every call 500 for the whole run (a per-application sandbox fault);
 * mp-refresh (`limit: 500`) and mp-probe then run in turn, as their schedules call them, until
 * the six healthy sites' due accounts are all refreshed (or a day of mp-refresh's schedule has
 * passed). Reported, with `met` computed: CPU, wall and heap per invocation against the limits;
 * the due accounts refreshed per healthy site, and in how many runs; the down site's token calls
 * and accounts at risk; the sandbox's `cross_app_calls`; token calls per application.
 * `BENCH_SITES_ACCOUNTS` sets N (default 1,000,000; `--quick`: 7,000 and 50 due per site).
 *
 * On its own: `deno run -A bench/sites.ts [<state dir>]` against a running seven-app stack.
 */
import type { Bench } from "./types.ts";
import { connect, pgArray, type Sql } from "../shared/platform/db.ts";
import { loadConfig, parseKeyRing } from "../shared/platform/config.ts";
import { encryptSecret, importKeyRing } from "../shared/platform/crypto.ts";
import type { MpGrant as Grant } from "../local/sandbox.ts";
import { sandboxApps } from "../local/mp_apps.ts";
import { clearScale, seedScale } from "./scale_seed.ts";
import { dropAccounts, sandboxControl } from "./refresh.ts";
import { costRows, type Invocation, invoke, LIMITS } from "./scale.ts";

/** The seven sites, in the order accounts are dealt to them. */
export const BENCH_SITES = ["MLA", "MLB", "MLM", "MLC", "MCO", "MLU", "MPE"] as const;
/** The stack variables the bench needs (run.ts launches its stack with them). */
export const SITES_STACK_ENV = { STACK_MP_SITES: BENCH_SITES.join(",") };
/** The site whose MercadoPago is down for the whole run. */
const DOWN_SITE = "MLM";
const LIMIT = 500;
/** mp-refresh runs every 10 minutes: a day of its schedule is 144 runs. */
const RUNS_PER_DAY = 144;

/** The site account number `i` belongs to, dealt round-robin over `sites` (as `seedScale` deals). */
export function siteOf(i: number, sites: readonly string[]): string {
  return sites[i % sites.length];
}

/** How many of `n` accounts dealt round-robin land on each of `sites`. */
export function spread(n: number, sites: readonly string[]): Record<string, number> {
  const k = sites.length;
  return Object.fromEntries(
    sites.map((s, j) => [s, Math.floor(n / k) + (j < n % k ? 1 : 0)]),
  );
}

/** What the run left, for {@link sitesVerdict}. */
interface SitesOutcome {
  /** Per healthy site: its due accounts refreshed. */
  refreshed: Record<string, number>;
  /** Due accounts seeded per site. */
  duePerSite: number;
  /** mp-refresh runs until every healthy due account was refreshed (0: never). */
  runsToAll: number;
  /** The down site's token calls during the run. */
  downTokenCalls: number;
  /** The most token calls to the down site in one mp-refresh run. */
  downCallsPerRunMax: number;
  /** The most calls one run may make before its breaker opens (3 in a row + the rest in flight). */
  breakerBound: number;
  /** The down site's accounts at risk after the run. */
  downAtRisk: number;
  /** The sandbox's `cross_app_calls` after the run. */
  crossAppCalls: number;
}

/**
 * Whether the outage stayed in its country: every healthy site's due accounts refreshed within a
 * day of mp-refresh's schedule, the down site spared by its breaker (no run calling it more than
 * the breaker lets through; no account at risk but one such a call left unconfirmed), and no call
 * with another application's credentials.
 */
export function sitesVerdict(o: SitesOutcome): {
  healthyOnTime: boolean;
  downContained: boolean;
  noCrossApp: boolean;
} {
  const all = Object.values(o.refreshed).every((n) => n === o.duePerSite);
  return {
    healthyOnTime: all && o.runsToAll > 0 && o.runsToAll <= RUNS_PER_DAY,
    downContained: o.downCallsPerRunMax <= o.breakerBound && o.downAtRisk <= o.downTokenCalls,
    noCrossApp: o.crossAppCalls === 0,
  };
}

interface AppStats {
  site_id: string;
  token_calls: number;
  cross_app_calls: number;
}
interface Stats {
  cross_app_calls: number;
  apps: Record<string, AppStats>;
}

async function stats(env: Record<string, string>): Promise<Stats> {
  const res = await fetch(`${env.SANDBOX_URL}/__sandbox/stats`);
  if (!res.ok) throw new Error(`sandbox stats: ${res.status}`);
  return await res.json();
}

/**
 * Inserts `n` due accounts of `site` (grants its application `clientId` issued, encrypted as the
 * functions do; never verified, expiring at `expires`), linked to new clients.
 */
async function seedSiteDue(
  env: Record<string, string>,
  admin: Sql,
  backend: Sql,
  site: string,
  clientId: string,
  n: number,
  expires: Date,
  into: { ids: string[]; clientIds: string[] },
): Promise<void> {
  const ring = await importKeyRing(parseKeyRing(env.MP_TOKEN_KEYS));
  const { grants } = (await sandboxControl(env, "grants", { count: n, client_id: clientId })) as {
    grants: Grant[];
  };
  for (let i = 0; i < grants.length; i += 500) {
    const rows = await Promise.all(
      grants.slice(i, i + 500).map(async (g) => {
        const id = crypto.randomUUID();
        const backendClientId = crypto.randomUUID();
        into.ids.push(id);
        into.clientIds.push(backendClientId);
        return {
          id,
          backend_client_id: backendClientId,
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
          mp_site_id: site,
        };
      }),
    );
    await backend`insert into clients (id) select unnest(${
      pgArray(rows.map((r) => r.backend_client_id))
    }::uuid[])`;
    await admin`insert into nv_accounts ${admin(rows)}`;
  }
}

/** The seven-site section of `deno task bench`. */
export const sitesBench: Bench = async (env) => {
  const quick = env.BENCH_QUICK === "1";
  const accounts = Number(
    env.BENCH_SITES_ACCOUNTS ?? Deno.env.get("BENCH_SITES_ACCOUNTS") ?? (quick ? 7000 : 1_000_000),
  );
  const duePerSite = Number(
    env.BENCH_SITES_DUE ?? Deno.env.get("BENCH_SITES_DUE") ?? (quick ? 50 : 2000),
  );
  const logFile = `${env.BENCH_LOG_DIR ?? ".local/dev"}/stack.log`;
  const { apps } = sandboxApps((name) => env[name]);
  const clientOf = Object.fromEntries(apps.map((a) => [a.siteId, a.clientId]));
  const missing = BENCH_SITES.filter((s) => !clientOf[s]);
  if (missing.length > 0) {
    throw new Error(`sites: the stack has no application for ${missing.join(", ")}`);
  }
  const concurrency = loadConfig(env).refreshConcurrency;
  const breakerBound = 3 + concurrency - 1;
  const healthy = BENCH_SITES.filter((s) => s !== DOWN_SITE);
  const bulk = accounts - BENCH_SITES.length * duePerSite;
  if (bulk < 0) throw new Error("sites: fewer accounts than due accounts");
  const admin = connect(env.ADMIN_DB_URL, { max: 4, timeoutMs: 600_000 });
  const backend = connect(env.BACKEND_DB_URL, { max: 4, timeoutMs: 600_000 });
  const due = { ids: [] as string[], clientIds: [] as string[] };
  const size = accounts.toLocaleString("en");
  const label = `${size} accounts over 7 sites, ${duePerSite.toLocaleString("en")} due per site, ` +
    `${DOWN_SITE} down (error_500 on every call)`;
  let paused: string[] = [];
  try {
    paused = (await backend<{ jobname: string }[]>`update cron.job set active = false
      where active returning jobname`).map((r) => r.jobname);
    const t0 = performance.now();
    // Not due: dealt over the sites, verified within the probe interval, expiring past the
    // refresh window (61 to 180 days away).
    const seed = await seedScale(admin, backend, env.MP_TOKEN_KEYS, {
      accounts: bulk,
      driftFraction: 0,
      sites: BENCH_SITES,
      expiresFromDay: 61,
      verifiedWithinDays: 6,
    });
    const expires = new Date(Date.now() + 86_400_000);
    for (const site of BENCH_SITES) {
      await seedSiteDue(env, admin, backend, site, clientOf[site], duePerSite, expires, due);
    }
    await Promise.all([admin`vacuum analyze nv_accounts`, backend`vacuum analyze clients`]);
    console.log(
      `bench: sites: seeded ${size} accounts in ${((performance.now() - t0) / 1000).toFixed(0)} s` +
        ` (bulk COPY ${seed.seconds.toFixed(0)} s)`,
    );

    await sandboxControl(env, "faults", {
      mode: "error_500",
      count: 1_000_000_000,
      client_id: clientOf[DOWN_SITE],
    });
    const before = await stats(env);
    const refreshRuns: Invocation[] = [];
    const probeRuns: Invocation[] = [];
    const dueIds = pgArray(due.ids);
    const refreshedBySite = async () => {
      const rows = await admin<{ site: string; n: number }[]>`
        select mp_site_id as site, count(*)::int as n from nv_accounts
         where id = any(${dueIds}::uuid[]) and mp_token_version >= 2 group by mp_site_id`;
      return Object.fromEntries(rows.map((r) => [r.site, r.n]));
    };
    let refreshed: Record<string, number> = {};
    let runsToAll = 0;
    let unavailable = 0;
    let downCallsPerRunMax = 0;
    let downCallsBefore = before.apps[clientOf[DOWN_SITE]].token_calls;
    const maxRuns = Math.min(RUNS_PER_DAY, 2 * Math.ceil(healthy.length * duePerSite / LIMIT) + 4);
    for (let i = 1; i <= maxRuns; i++) {
      const run = await invoke(env, logFile, "mp-refresh", { limit: LIMIT });
      // 503: a database timeout on this loaded machine (docs/contract.md); counted, not fatal.
      if (run.status === 503) unavailable++;
      else if (run.status !== 200) throw new Error(`mp-refresh answered ${run.status}`);
      refreshRuns.push(run);
      const downCalls = (await stats(env)).apps[clientOf[DOWN_SITE]].token_calls;
      downCallsPerRunMax = Math.max(downCallsPerRunMax, downCalls - downCallsBefore);
      downCallsBefore = downCalls;
      const probe = await invoke(env, logFile, "mp-probe", {});
      if (probe.status === 503) unavailable++;
      else if (probe.status !== 200) throw new Error(`mp-probe answered ${probe.status}`);
      probeRuns.push(probe);
      refreshed = await refreshedBySite();
      if (healthy.every((s) => (refreshed[s] ?? 0) === duePerSite)) {
        runsToAll = i;
        break;
      }
    }
    const after = await stats(env);
    const [{ n: downAtRisk }] = await admin<{ n: number }[]>`
      select count(*)::int as n from nv_accounts
       where mp_site_id = ${DOWN_SITE} and mp_state = 'at_risk'`;
    const calls = (site: string) =>
      after.apps[clientOf[site]].token_calls - before.apps[clientOf[site]].token_calls;
    const outcome: SitesOutcome = {
      refreshed: Object.fromEntries(healthy.map((s) => [s, refreshed[s] ?? 0])),
      duePerSite,
      runsToAll,
      downTokenCalls: calls(DOWN_SITE),
      downCallsPerRunMax,
      breakerBound,
      downAtRisk,
      crossAppCalls: after.cross_app_calls,
    };
    const verdict = sitesVerdict(outcome);
    const perSite = healthy.map((s) => `${s} ${outcome.refreshed[s]}`).join(", ");
    return [
      ...costRows(`mp-refresh(limit 500), ${label}`, refreshRuns, LIMITS.cpuMs),
      ...costRows(`mp-probe, ${label}`, probeRuns, LIMITS.cpuMs),
      {
        bench: label,
        metric: "healthy sites' due accounts refreshed",
        value: `${perSite} (of ${duePerSite} each)` +
          (runsToAll ? `, all by mp-refresh run ${runsToAll}` : ", not all"),
        baseline: `${RUNS_PER_DAY} runs (1 day of its 10-minute schedule; due in 1 day); ` +
          `${unavailable} invocations answered 503 (database unavailable)`,
        ratio: runsToAll ? `${(runsToAll / RUNS_PER_DAY).toFixed(2)}× a day of runs` : "—",
        target: "all, within a day of runs",
        met: verdict.healthyOnTime,
      },
      {
        bench: label,
        metric: `${DOWN_SITE} (down): token calls (total / most in one run) / accounts at risk`,
        value: `${outcome.downTokenCalls} / ${downCallsPerRunMax} / ${downAtRisk}`,
        baseline: `${duePerSite} due ${DOWN_SITE} accounts, ${refreshRuns.length} refresh runs`,
        ratio: "",
        target: `≤ ${breakerBound} calls a run (breaker: 3 in a row + ${
          concurrency - 1
        } in flight), at risk ≤ calls`,
        met: verdict.downContained,
      },
      {
        bench: label,
        metric: "cross_app_calls",
        value: String(outcome.crossAppCalls),
        baseline: "token calls per app: " +
          BENCH_SITES.map((s) => `${s} ${calls(s)}`).join(", "),
        ratio: "",
        target: "0",
        met: verdict.noCrossApp,
      },
    ];
  } finally {
    await sandboxControl(env, "faults", { mode: "none", client_id: clientOf[DOWN_SITE] })
      .catch(() => {});
    await dropAccounts(admin, backend, due).catch(() => {});
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
  console.table(await sitesBench({ BENCH_LOG_DIR: dir, ...env }));
}
