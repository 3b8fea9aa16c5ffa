/**
 * Read-only views of the credentials' health: the monitoring totals mp-health answers and
 * `deno task status` prints (one function, constant time), whether they are `ok`, and
 * `deno task status`'s one row per account (drift itself is found by
 * `shared/reconcile/drift.ts`).
 */
import type { Context } from "../platform/context.ts";
import {
  type AccountStatusRow,
  type ConnectionState,
  type ConnectionTotals,
  connectionTotals,
  readConnectionTotals,
  readStatusPage,
} from "../store/account_status.ts";
import { readSiteExpiring, readSiteStateTotals } from "../store/sites.ts";
import { readOpenBreakers } from "../store/app_breakers.ts";
import { readCacheStates } from "../store/clients.ts";
import { readReconcileTotals, type ReconcileTotals } from "../store/reconcile_ledger.ts";
import {
  type AccountState,
  type Drift,
  DRIFT_KINDS,
  driftOf,
  SCAN_PAGE,
} from "../reconcile/drift.ts";
import { readFunctionRuns, readOutboxTotals } from "../store/events.ts";
import { readScheduleRecords } from "../store/schedules.ts";
import type { ScheduledFunction } from "../schedules/jobs.ts";
import { type ScheduleStatus, scheduleStatuses } from "../schedules/runs.ts";

/** Fast-path misses recorded by get-mp-config in the last hour (from the audit trail). */
async function fastPathMisses(ctx: Context): Promise<number> {
  const [row] = await ctx.admin((sql) =>
    sql<{ n: number }[]>`select count(*)::int as n from mp_credential_events
      where event = 'fast_path_miss' and occurred_at > now() - interval '1 hour'`
  );
  return row.n;
}

/** The event outbox as mp-health reports it. */
interface OutboxHealth {
  /**
   * Push delivery as the last mp-deliver-events run found it: "off" when PLATFORM_WEBHOOK_URL
   * is unset (events are only kept for mp-events), "unknown" before its first recorded run. Read
   * from the run's record, so mp-health and `deno task status` judge the same way.
   */
  delivery: "on" | "off" | "unknown";
  pending: number;
  oldest_pending_age_s: number | null;
  failed: number;
  /** Events that failed (3 days of retries over) in the last 24 hours. */
  failed_24h: number;
  /** The latest attempt's error of a pending event, else of one failed in the last 24 hours. */
  last_error: string | null;
}

/**
 * The monitoring totals `mp-health` answers and `deno task status` prints: the connection
 * figures of all accounts (`ConnectionTotals`) and, beside them, the same figures per site,
 * drift, misses, the outbox, the schedules, and whether all is `ok`.
 */
export interface HealthTotals extends ConnectionTotals {
  /**
   * The connection figures of each site's accounts (every configured site, and any site
   * accounts are in); an account without a site is the default site's, as the functions
   * serve it. They add up to the overall figures.
   */
  sites: Record<string, SiteTotals>;
  /** Drift the reconcile pass found at its last check and has not repaired. */
  drifted: number;
  fast_path_misses_1h: number;
  /** Linked accounts whose client row was missing at their last check. */
  client_missing: number;
  drift_by_kind: Record<(typeof DRIFT_KINDS)[number], number>;
  /** How current the drift figures are: the pass's last run and last full pass, its last hour. */
  reconcile: Omit<ReconcileTotals, "left">;
  /** The event outbox: pending, the oldest pending one's age, failed, the failing endpoint. */
  outbox: OutboxHealth;
  /** The last completed run of each scheduled function, `stalled` after two missed intervals. */
  schedules: Record<ScheduledFunction, ScheduleStatus>;
  /** Why `ok` is false, one line each (empty when ok). */
  problems: string[];
  /** False while a schedule is stalled or the outbox is not delivering (`problems` says why). */
  ok: boolean;
}

/**
 * A site's connection figures and, while its application's refresh circuit breaker is open or
 * half open (`mp_app_breakers`), until when it is open (ISO time; null: closed).
 */
interface SiteTotals extends ConnectionTotals {
  breaker_open_until: string | null;
}

/** The oldest pending event may be this old (seconds) while delivery is on. */
const PENDING_AGE_LIMIT_S = 15 * 60;

/**
 * What makes mp-health not ok, one line each: a stalled schedule; unless delivery is off, a
 * pending event older than 15 minutes; an event failed in the last 24 hours. Pure.
 */
export function healthProblems(
  schedules: Record<string, Pick<ScheduleStatus, "stalled" | "interval_s">>,
  outbox: Pick<OutboxHealth, "delivery" | "oldest_pending_age_s" | "failed_24h">,
): string[] {
  const problems: string[] = [];
  for (const [name, s] of Object.entries(schedules)) {
    if (s.stalled) {
      problems.push(
        `${name} stalled: no completed run within twice its ${s.interval_s} s interval`,
      );
    }
  }
  const age = outbox.oldest_pending_age_s;
  if (outbox.delivery !== "off" && age !== null && age > PENDING_AGE_LIMIT_S) {
    problems.push(`the oldest pending event is ${Math.floor(age / 60)} min old (over 15 min)`);
  }
  if (outbox.failed_24h > 0) {
    problems.push(`${outbox.failed_24h} event(s) failed in the last 24 hours`);
  }
  return problems;
}

/**
 * The connection figures per site from the per-site, per-state counters and expiring counts
 * (site `""`: accounts without a site, which are `defaultSite`'s); every site of `configured`
 * is listed, with zeros when it has no account. Pure.
 */
export function siteTotals(
  counted: { site_id: string; state: string; accounts: number }[],
  expiring: { site_id: string; expiring_7d: number }[],
  defaultSite: string,
  configured: Iterable<string> = [],
): Record<string, ConnectionTotals> {
  const site = (id: string) => id === "" ? defaultSite : id;
  const states = new Map<string, Record<string, number>>();
  const soon = new Map<string, number>();
  for (const id of configured) states.set(id, {});
  for (const r of counted) {
    const s = states.get(site(r.site_id)) ?? {};
    s[r.state] = (s[r.state] ?? 0) + Number(r.accounts);
    states.set(site(r.site_id), s);
  }
  for (const r of expiring) {
    soon.set(site(r.site_id), (soon.get(site(r.site_id)) ?? 0) + Number(r.expiring_7d));
    if (!states.has(site(r.site_id))) states.set(site(r.site_id), {});
  }
  return Object.fromEntries(
    [...states.keys()].sort().map((
      id,
    ) => [id, connectionTotals(states.get(id)!, soon.get(id) ?? 0)]),
  );
}

/**
 * Each site's figures with its breaker's `breaker_open_until` (null: closed); a site whose
 * breaker is open is listed even without accounts. Pure.
 */
export function withBreakers(
  sites: Record<string, ConnectionTotals>,
  breakers: { site_id: string; open_until: Date }[],
): Record<string, SiteTotals> {
  const open = new Map(breakers.map((b) => [b.site_id, b.open_until.toISOString()]));
  const empty = connectionTotals({}, 0);
  const ids = [...new Set([...Object.keys(sites), ...open.keys()])].sort();
  return Object.fromEntries(
    ids.map((id) => [id, { ...(sites[id] ?? empty), breaker_open_until: open.get(id) ?? null }]),
  );
}

/**
 * The monitoring totals, in constant time at any number of accounts: accounts per connection
 * state (overall and per site) from the counters the triggers keep, expiring accounts over
 * their index, misses over the audit index, drift as the reconcile pass last found it, the
 * outbox over its partial indexes, a handful of run and schedule records (docs/scale.md);
 * nothing scans every account.
 */
export async function healthTotals(ctx: Context): Promise<HealthTotals> {
  const [connection, bySite, misses, pass, outbox, { now, runs }, scheduled] = await Promise.all([
    ctx.admin((sql) => readConnectionTotals(sql)),
    ctx.admin(async (sql) => ({
      counted: await readSiteStateTotals(sql),
      expiring: await readSiteExpiring(sql),
      breakers: await readOpenBreakers(sql),
    })),
    fastPathMisses(ctx),
    ctx.backend((sql) => readReconcileTotals(sql)),
    ctx.admin((sql) => readOutboxTotals(sql)),
    ctx.admin((sql) => readFunctionRuns(sql)),
    ctx.backend((sql) => readScheduleRecords(sql)),
  ]);
  const schedules = scheduleStatuses(runs, scheduled, now);
  const { left, ...reconcile } = pass;
  const kinds = Object.fromEntries(DRIFT_KINDS.map((k) => [k, left[k] ?? 0])) as Record<
    (typeof DRIFT_KINDS)[number],
    number
  >;
  const delivery = runs.find((r) => r.function_name === "mp-deliver-events")?.summary?.delivery;
  const outboxHealth: OutboxHealth = {
    delivery: delivery === "on" || delivery === "off" ? delivery : "unknown",
    pending: outbox.pending,
    oldest_pending_age_s: outbox.oldest_pending_at
      ? Math.max(0, Math.round((now.getTime() - outbox.oldest_pending_at.getTime()) / 1000))
      : null,
    failed: outbox.failed,
    failed_24h: outbox.failed_24h,
    last_error: outbox.last_error,
  };
  const problems = healthProblems(schedules, outboxHealth);
  const defaultSite = ctx.config.mpDefaultSite ?? "unknown";
  return {
    ...connection,
    sites: withBreakers(
      siteTotals(bySite.counted, bySite.expiring, defaultSite, ctx.config.mpApps.keys()),
      bySite.breakers,
    ),
    drifted: Object.values(kinds).reduce((a, b) => a + b, 0),
    fast_path_misses_1h: misses,
    client_missing: left.client_missing ?? 0,
    drift_by_kind: kinds,
    reconcile,
    outbox: outboxHealth,
    schedules,
    problems,
    ok: problems.length === 0,
  };
}

/** One account's line in `deno task status`. */
export interface AccountStatus {
  account_id: string;
  client_id: string | null;
  /** The account's state is `connected` (the same definition as mp-health's `connected`). */
  connected: boolean;
  /** The connection state, its reason and deadline (docs/contract.md, "Connection states"). */
  state: ConnectionState;
  reason: string | null;
  deadline: string | null;
  mp_user_id: number | null;
  expires_at: string | null;
  last_refresh_at: string | null;
  failures: number;
  last_error: string | null;
  /** The account's state is `reauth_required` (as mp-health's `needs_reauth`). */
  needs_reauth: boolean;
  /** "in_sync", a drift kind, "client_missing", or "not_linked". */
  cache: "in_sync" | Drift["kind"] | "not_linked";
  /** What a person should do first; "ok" when nothing. */
  attention: "reauthorize" | "expired" | "at_risk" | "failing" | "drift" | "expiring" | "ok";
}

const ATTENTION_ORDER: AccountStatus["attention"][] = [
  "reauthorize",
  "expired",
  "at_risk",
  "failing",
  "drift",
  "expiring",
  "ok",
];

type StatusRow = AccountStatusRow & AccountState;

/**
 * Every connected, linked or re-authorization-needing account with its health, the ones that
 * need a person first (then by expiry). The cache column compares versions across the two
 * databases in bulk.
 */
export async function accountStatuses(ctx: Context): Promise<AccountStatus[]> {
  const out: AccountStatus[] = [];
  const now = Date.now();
  let after: string | null = null;
  for (;;) {
    const page: StatusRow[] = await ctx.admin((sql) => readStatusPage(sql, after, SCAN_PAGE));
    if (page.length === 0) break;
    const linked = page.filter((r) => r.backend_client_id);
    const caches = new Map(
      (await ctx.backend((sql) => readCacheStates(sql, linked.map((r) => r.backend_client_id))))
        .map((c) => [c.id, c]),
    );
    for (const r of page) {
      const cache = r.backend_client_id
        ? driftOf(r, caches.get(r.backend_client_id)) ?? "in_sync"
        : "not_linked";
      const expires = r.expires_at?.getTime();
      // As mp-health's expiring_7d: a `connected` or `at_risk` account's served token.
      const serving = r.state === "connected" || r.state === "at_risk";
      const attention: AccountStatus["attention"] = r.state === "reauth_required"
        ? "reauthorize"
        : serving && expires !== undefined && expires <= now
        ? "expired"
        : r.state === "at_risk"
        ? "at_risk"
        : r.failures > 0
        ? "failing"
        : cache !== "in_sync" && cache !== "not_linked"
        ? "drift"
        : serving && expires !== undefined && expires < now + 7 * 86_400_000
        ? "expiring"
        : "ok";
      out.push({
        account_id: r.id,
        client_id: r.backend_client_id,
        connected: r.state === "connected",
        state: r.state,
        reason: r.reason,
        deadline: r.deadline?.toISOString() ?? null,
        mp_user_id: r.mp_user_id === null ? null : Number(r.mp_user_id),
        expires_at: r.expires_at?.toISOString() ?? null,
        last_refresh_at: r.last_refresh_at?.toISOString() ?? null,
        failures: r.failures,
        last_error: r.last_error,
        needs_reauth: r.state === "reauth_required",
        cache,
        attention,
      });
    }
    if (page.length < SCAN_PAGE) break;
    after = page[page.length - 1].id;
  }
  const rank = (s: AccountStatus) => ATTENTION_ORDER.indexOf(s.attention);
  const expiry = (s: AccountStatus) => (s.expires_at ? Date.parse(s.expires_at) : Infinity);
  return out.sort((a, b) =>
    rank(a) - rank(b) || expiry(a) - expiry(b) || a.account_id.localeCompare(b.account_id)
  );
}
