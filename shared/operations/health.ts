/**
 * Read-only views of the credentials' health: `mp-health`'s totals (constant time) and
 * `deno task status`'s one row per account (drift itself is found by
 * `shared/reconcile/drift.ts`).
 */
import type { Context } from "../platform/context.ts";
import {
  type AccountStatusRow,
  type ConnectionState,
  readConnectionTotals,
  readStatusPage,
} from "../store/account_status.ts";
import { readCacheStates } from "../store/clients.ts";
import { readReconcileTotals, type ReconcileTotals } from "../store/reconcile_ledger.ts";
import {
  type AccountState,
  type Drift,
  DRIFT_KINDS,
  driftOf,
  SCAN_PAGE,
} from "../reconcile/drift.ts";
import { readFunctionRuns, readOutboxTotals, type ScheduledFunction } from "../store/events.ts";
import { type ScheduleStatus, scheduleStatuses } from "./schedules.ts";

/** Fast-path misses recorded by get-mp-config in the last hour (from the audit trail). */
export async function fastPathMisses(ctx: Context): Promise<number> {
  const [row] = await ctx.admin((sql) =>
    sql<{ n: number }[]>`select count(*)::int as n from mp_credential_events
      where event = 'fast_path_miss' and occurred_at > now() - interval '1 hour'`
  );
  return row.n;
}

/** The monitoring totals `mp-health` answers with. */
export interface HealthTotals {
  connected: number;
  expiring_7d: number;
  needs_reauth: number;
  /** Accounts whose refresh outcome is unknown or failing for 3 days (state `at_risk`). */
  at_risk: number;
  /** Accounts per connection state (docs/contract.md, "Connection states"). */
  states: Record<ConnectionState, number>;
  /** Drift the reconcile pass found at its last check and has not repaired. */
  drifted: number;
  fast_path_misses_1h: number;
  /** Linked accounts whose client row was missing at their last check. */
  client_missing: number;
  drift_by_kind: Record<(typeof DRIFT_KINDS)[number], number>;
  /** How current the drift figures are: the pass's last run and last full pass, its last hour. */
  reconcile: Omit<ReconcileTotals, "left">;
  /** The event outbox (SPEC §10): pending, the oldest pending one's age, failed. */
  outbox: {
    delivery: "on" | "off";
    pending: number;
    oldest_pending_age_s: number | null;
    failed: number;
    /** The latest attempt's error of a pending event (the failing endpoint's symptom). */
    last_error: string | null;
  };
  /** The last completed run of each scheduled function, `stalled` after two missed intervals. */
  schedules: Record<ScheduledFunction, ScheduleStatus>;
  /** False when a schedule is stalled. */
  ok: boolean;
}

/**
 * The monitoring totals, in constant time at any number of accounts: connection counters kept
 * by triggers, expiring accounts over their index, misses over the audit index, and drift as
 * the reconcile pass last found it (docs/scale.md); nothing scans every account.
 */
export async function healthTotals(ctx: Context): Promise<HealthTotals> {
  const [counts, misses, pass, outbox, runs] = await Promise.all([
    ctx.admin((sql) => readConnectionTotals(sql)),
    fastPathMisses(ctx),
    ctx.backend((sql) => readReconcileTotals(sql)),
    ctx.admin((sql) => readOutboxTotals(sql)),
    ctx.admin((sql) => readFunctionRuns(sql)),
  ]);
  const now = runs[0]?.db_now ?? new Date();
  const schedules = scheduleStatuses(runs, now);
  const { left, ...reconcile } = pass;
  const kinds = Object.fromEntries(DRIFT_KINDS.map((k) => [k, left[k] ?? 0])) as Record<
    (typeof DRIFT_KINDS)[number],
    number
  >;
  return {
    connected: counts.connected,
    expiring_7d: counts.expiring_7d,
    needs_reauth: counts.needs_reauth,
    at_risk: counts.states.at_risk,
    states: counts.states,
    drifted: Object.values(kinds).reduce((a, b) => a + b, 0),
    fast_path_misses_1h: misses,
    client_missing: left.client_missing ?? 0,
    drift_by_kind: kinds,
    reconcile,
    outbox: {
      delivery: ctx.config.platformWebhookUrl ? "on" : "off",
      pending: outbox.pending,
      oldest_pending_age_s: outbox.oldest_pending_at
        ? Math.max(0, Math.round((now.getTime() - outbox.oldest_pending_at.getTime()) / 1000))
        : null,
      failed: outbox.failed,
      last_error: outbox.last_error,
    },
    schedules,
    ok: Object.values(schedules).every((s) => !s.stalled),
  };
}

/** One account's line in `deno task status`. */
export interface AccountStatus {
  account_id: string;
  client_id: string | null;
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
      const attention: AccountStatus["attention"] = r.needs_reauth
        ? "reauthorize"
        : r.mp_connected && expires !== undefined && expires <= now
        ? "expired"
        : r.state === "at_risk"
        ? "at_risk"
        : r.failures > 0
        ? "failing"
        : cache !== "in_sync" && cache !== "not_linked"
        ? "drift"
        : r.mp_connected && expires !== undefined && expires < now + 7 * 86_400_000
        ? "expiring"
        : "ok";
      out.push({
        account_id: r.id,
        client_id: r.backend_client_id,
        connected: r.mp_connected,
        state: r.state,
        reason: r.reason,
        deadline: r.deadline?.toISOString() ?? null,
        mp_user_id: r.mp_user_id === null ? null : Number(r.mp_user_id),
        expires_at: r.expires_at?.toISOString() ?? null,
        last_refresh_at: r.last_refresh_at?.toISOString() ?? null,
        failures: r.failures,
        last_error: r.last_error,
        needs_reauth: r.needs_reauth,
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
