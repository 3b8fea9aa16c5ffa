/**
 * mp-probe (pg_cron; docs/contract.md "Connection states"): MercadoPago can kill an access
 * token without telling anyone (a password change, a fraud-team reset, an app removal), so
 * each connected token is verified with `GET /users/me` once per `MP_PROBE_INTERVAL_DAYS`,
 * least recently verified first, a slice per run, at most `MP_PROBE_RATE` calls a second. A
 * dead token (401) is handled by `shared/connection/dead_token.ts`; anything else from
 * MercadoPago (timeout, 5xx, 429) proves nothing and the account is checked again later.
 * Each token is checked through the application that issued it, and each application has its
 * own workers, pacing and circuit breaker (3 checks in a row without an answer stop that
 * application's checks for the run): one site's MercadoPago failing never stops another's. A
 * site whose refresh circuit breaker the Admin DB holds open (`mp_app_breakers`) is not checked
 * at all until its backoff is over.
 */
import { appOfSite, type MpApp } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import { latestStart, shutdownReason } from "../platform/worker_life.ts";
import { claimProbe, deferProbes, type ProbeClaim, recordVerified } from "../store/verification.ts";
import { handleDeadToken } from "../connection/dead_token.ts";
import { verifyStoredToken } from "../connection/token_check.ts";
import { breakerOpen, unknownInARow } from "../refresh/outcome.ts";
import { breakerStance } from "../refresh/app_breaker.ts";
import { readOpenBreakers } from "../store/app_breakers.ts";

/** Accounts a run claims when the caller gives no limit (enough for 1,000,000 a week at one run a minute). */
const PROBE_DEFAULT_LIMIT = 200;
/** The largest `limit` a caller may ask for. */
export const PROBE_MAX_LIMIT = 1000;
/** After this long a run starts no new check (the rest are released for the next run). */
const PROBE_BUDGET_MS = 40_000;
/** How long a claim keeps other probe runs off an account. */
const PROBE_LEASE_MS = 2 * 60_000;
/** Checks in flight at once, per application. */
const PROBE_CONCURRENCY = 4;
/**
 * With several applications, how long tokens an application's open breaker spared wait before a
 * run claims them again (released, they would fill the next runs' slices: the least recently
 * verified first), so the other sites' tokens are checked meanwhile.
 */
const PROBE_OUTAGE_WAIT_MS = 10 * 60_000;

/** What a run is asked. */
interface ProbeOptions {
  limit?: number;
  accountId?: string;
  requestId?: string;
  /** Overrides {@link PROBE_BUDGET_MS}. */
  budgetMs?: number;
}

/** One account's line: the state it is in after the check (`unverified`: MercadoPago did not say). */
interface ProbeResult {
  account_id: string;
  state: "connected" | "reauth_required" | "unverified";
}

/** The answer of a run (docs/contract.md, mp-probe). */
interface ProbeReport {
  checked: number;
  alive: number;
  dead: number;
  errors: number;
  results: ProbeResult[];
}

/**
 * The pacing of calls: the start time of the next call given the previous one's, so that calls
 * start at most `ratePerSecond` a second. Pure.
 */
function nextCallAt(previous: number, now: number, ratePerSecond: number): number {
  return Math.max(now, previous + 1000 / ratePerSecond);
}

/** What a run counted so far, and what it shares with its applications' checks. */
interface ProbeRun {
  ctx: Context;
  log: Logger;
  opts: ProbeOptions;
  budgetEnd: number;
  alive: { id: string; version: number }[];
  /** Claimed and not verified: released for a later run. */
  unchecked: string[];
  /** Spared by their application's open breaker, with several applications: wait before a new claim. */
  deferred: string[];
  results: ProbeResult[];
  dead: number;
  errors: number;
}

/**
 * The claims grouped by the application that issued their tokens (each account's site's; no
 * site: the default one), and those with none: changed since the claim (a connect: `site_read`
 * false) or of a site this configuration has no application for. Pure.
 */
export function queuesBySite(
  config: Context["config"],
  claims: ProbeClaim[],
): { queues: { app: MpApp; claims: ProbeClaim[] }[]; unrouted: ProbeClaim[] } {
  const queues = new Map<string, { app: MpApp; claims: ProbeClaim[] }>();
  const unrouted: ProbeClaim[] = [];
  for (const claim of claims) {
    const app = claim.site_read ? appOfSite(config, claim.mp_site_id) : undefined;
    if (!app) {
      unrouted.push(claim);
      continue;
    }
    const queue = queues.get(app.site) ?? { app, claims: [] };
    queue.claims.push(claim);
    queues.set(app.site, queue);
  }
  return { queues: [...queues.values()], unrouted };
}

/** Runs one probe pass over the tokens due for verification (or one account, now). */
export async function runProbe(
  ctx: Context,
  log: Logger,
  opts: ProbeOptions = {},
): Promise<ProbeReport> {
  const started = Date.now();
  const claims = await ctx.admin((sql) =>
    claimProbe(sql, {
      limit: opts.limit ?? PROBE_DEFAULT_LIMIT,
      intervalDays: ctx.config.probeIntervalDays,
      leaseMs: PROBE_LEASE_MS,
      accountId: opts.accountId,
    })
  );
  const run: ProbeRun = {
    ctx,
    log,
    opts,
    budgetEnd: started + (opts.budgetMs ?? PROBE_BUDGET_MS),
    alive: [],
    unchecked: [],
    deferred: [],
    results: [],
    dead: 0,
    errors: 0,
  };
  const { queues, unrouted } = queuesBySite(ctx.config, claims);
  for (const claim of unrouted) {
    run.unchecked.push(claim.id);
    if (!claim.site_read) continue; // a connect changed it since: its new token is not ours to check
    log.error("No MercadoPago application for the account's site; token not verified", {
      account_id: claim.id,
      site: claim.mp_site_id,
    });
    run.errors++;
    run.results.push({ account_id: claim.id, state: "unverified" });
  }
  const down = await openSites(ctx, log);
  await Promise.all(queues.map((queue) => checkSite(run, queue, down.has(queue.app.site))));
  const { alive, unchecked, deferred, results, dead, errors } = run;
  await ctx.admin((sql) => recordVerified(sql, alive, unchecked)).catch((err) =>
    log.warn("Could not record the verified tokens; they are checked again", { error: err })
  );
  await ctx.admin((sql) => deferProbes(sql, deferred, PROBE_OUTAGE_WAIT_MS)).catch((err) =>
    log.warn("Could not defer the checks of a failing site; their leases run out", { error: err })
  );
  const report = {
    checked: alive.length + dead + errors,
    alive: alive.length,
    dead,
    errors,
    results,
  };
  log.info("MP probe run finished", {
    claimed: claims.length,
    checked: report.checked,
    alive: report.alive,
    dead,
    errors,
    deferred: deferred.length,
    sites: queues.map((q) => q.app.site),
    account_id: opts.accountId,
    duration_ms: Date.now() - started,
  });
  return report;
}

/**
 * The sites whose refresh circuit breaker the Admin DB holds open (`mp_app_breakers`, past
 * neither its backoff nor its trial): their MercadoPago is known down, so no check is sent to
 * it. Unreadable: none (each application's own breaker still stops a run's checks).
 */
async function openSites(ctx: Context, log: Logger): Promise<Set<string>> {
  const rows = await ctx.admin((sql) => readOpenBreakers(sql)).catch((err) => {
    log.warn("Could not read the circuit breakers; every site is checked", { error: err });
    return [];
  });
  return new Set(
    rows.filter((r) => breakerStance(r.open_until, r.db_now) === "open").map((r) => r.site_id),
  );
}

/**
 * Checks one application's claims with its own workers, pacing and circuit breaker (3 checks
 * in a row without an answer, or its refresh breaker held open (`down`): the rest of that
 * application's claims are released, or with several applications deferred for
 * {@link PROBE_OUTAGE_WAIT_MS}).
 */
async function checkSite(
  run: ProbeRun,
  { app, claims }: { app: MpApp; claims: ProbeClaim[] },
  down: boolean,
) {
  const { ctx, log } = run;
  let lastStart = 0;
  let next = 0;
  let silentInARow = 0;
  let open = down;
  if (down) {
    log.warn("MP probe: the site's circuit breaker is open; not checked", { site: app.site });
  }
  const worker = async () => {
    while (next < claims.length) {
      const claim = claims[next++];
      const at = nextCallAt(lastStart, Date.now(), ctx.config.probeRatePerSecond);
      lastStart = at;
      if (at > Date.now()) await new Promise((r) => setTimeout(r, at - Date.now()));
      if (open && ctx.config.mpApps.size > 1) {
        run.deferred.push(claim.id);
        continue;
      }
      if (open || !mayStart(ctx, run.budgetEnd)) {
        run.unchecked.push(claim.id);
        continue;
      }
      const verdict = await check(ctx, log, app, claim);
      silentInARow = unknownInARow(silentInARow, verdict === "error" ? "unknown" : "tokens");
      if (!open && breakerOpen(silentInARow)) {
        open = true;
        log.error("MP probe circuit breaker open: no more checks of this site this run", {
          site: app.site,
        });
      }
      await recordCheck(run, claim, verdict);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PROBE_CONCURRENCY, claims.length) }, worker));
}

/** Counts one check's verdict; a dead token is handled at once (`dead_token.ts`). */
async function recordCheck(run: ProbeRun, claim: ProbeClaim, verdict: "alive" | "dead" | "error") {
  if (verdict === "alive") {
    run.alive.push({ id: claim.id, version: claim.mp_token_version });
    run.results.push({ account_id: claim.id, state: "connected" });
    return;
  }
  if (verdict === "error") {
    run.errors++;
    run.unchecked.push(claim.id);
    run.results.push({ account_id: claim.id, state: "unverified" });
    return;
  }
  run.dead++;
  const outcome = await handleDeadToken(run.ctx, run.log, claim.id, claim.mp_token_version, {
    requestId: run.opts.requestId,
    source: "probe",
  }).catch((err) => {
    run.log.error("Could not handle a dead token", { account_id: claim.id, error: err });
    return "unavailable" as const;
  });
  // `busy`: cleared while a refresh holds the account (it, or the next run, replaces the token):
  // until then nothing is served, as for `reauth_required`.
  run.results.push({
    account_id: claim.id,
    state: outcome === "refreshed"
      ? "connected"
      : outcome === "reauth_required" || outcome === "busy"
      ? "reauth_required"
      : "unverified",
  });
}

/** Whether a check may start: not after the run's budget, the isolate's wall clock or `beforeunload`. */
function mayStart(ctx: Context, budgetEnd: number): boolean {
  const now = Date.now();
  if (shutdownReason() || now >= budgetEnd) return false;
  const reserve = ctx.config.mpTimeoutMs + 4 * ctx.config.dbTimeoutMs;
  return ctx.config.wallClockMs <= 0 || now < latestStart(ctx.config.wallClockMs, reserve);
}

/** MercadoPago's verdict on one claimed token (asked through `app`): alive, dead, or error. */
async function check(
  ctx: Context,
  log: Logger,
  app: MpApp,
  claim: ProbeClaim,
): Promise<"alive" | "dead" | "error"> {
  const result = await verifyStoredToken(ctx, log, app, claim.id, claim.mp_access_token_encrypted);
  if (result.verdict === "unknown") {
    log.warn("MercadoPago could not verify a token; checked again later", {
      account_id: claim.id,
      error: result.error.kind,
    });
  }
  return result.verdict === "alive" || result.verdict === "dead" ? result.verdict : "error";
}
