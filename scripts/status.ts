/**
 * `deno task status [--json]`: every MercadoPago connection's health — account, client,
 * connection state (with reason and deadline), expires in, last refresh, failures, needs
 * re-authorization, cache in sync — the ones that need a person first; then mp-health's totals,
 * overall and per site, from the same function (`healthTotals`), so the two agree figure for
 * figure; then what the listing itself counted. Needs BACKEND_DB_URL and ADMIN_DB_URL.
 */
import {
  type AccountStatus,
  accountStatuses,
  type HealthTotals,
  healthTotals,
} from "../shared/operations/health.ts";
import { scanOrphans } from "../shared/reconcile/drift.ts";
import { scrub } from "../shared/platform/log.ts";
import { fail, parseFlags, scriptContext } from "./_cli.ts";

/** What the listing itself counted (under `listed` with --json), beside mp-health's totals. */
interface ListedTotals {
  /** Accounts listed: connected, linked or re-authorization-needing. */
  accounts: number;
  expired: number;
  failing: number;
  /** Listed accounts whose cache differs now (mp-health's `drifted` is the pass's last finding). */
  cache_differs: number;
  not_linked: number;
  unlinked_caches: number;
}

/** Counts over the listed rows plus the caches no account feeds. Pure. */
function listedTotals(rows: AccountStatus[], unlinkedCaches: number): ListedTotals {
  const count = (f: (r: AccountStatus) => boolean) => rows.filter(f).length;
  return {
    accounts: rows.length,
    expired: count((r) => r.attention === "expired"),
    failing: count((r) => r.failures > 0),
    cache_differs: count((r) => !["in_sync", "not_linked"].includes(r.cache)),
    not_linked: count((r) => r.cache === "not_linked"),
    unlinked_caches: unlinkedCaches,
  };
}

function span(ms: number): string {
  const abs = Math.abs(ms);
  const text = abs >= 86_400_000
    ? `${Math.floor(abs / 86_400_000)}d`
    : abs >= 3_600_000
    ? `${Math.floor(abs / 3_600_000)}h`
    : `${Math.floor(abs / 60_000)}m`;
  return ms < 0 ? `-${text}` : text;
}

const words = (key: string) => key.replaceAll("_", " ");
const figures = (o: object) => Object.entries(o).map(([k, v]) => `${words(k)}: ${v}`).join(" · ");

/**
 * mp-health's totals as lines: every figure mp-health answers, under the same names, the
 * per-site figures one line per site after the overall ones. Pure.
 */
function formatTotals(t: HealthTotals): string[] {
  const { accounts, connected, expiring_7d, needs_reauth, at_risk } = t;
  const { outbox, reconcile } = t;
  const schedules = Object.entries(t.schedules).map(([name, s]) =>
    `${name} ${s.stalled ? "STALLED" : "ok"} (last run ${s.last_run_at ?? "never"}, ${
      s.outcome ?? "no outcome"
    }; scheduled ${s.scheduled_at ?? "never"}; every ${s.interval_s} s)`
  );
  const sites = Object.entries(t.sites).map(([site, s]) =>
    `site ${site}: ${
      figures({
        accounts: s.accounts,
        connected: s.connected,
        expiring_7d: s.expiring_7d,
        needs_reauth: s.needs_reauth,
        at_risk: s.at_risk,
      })
    } · states: ${figures(s.states)}`
  );
  return [
    figures({ accounts, connected, expiring_7d, needs_reauth, at_risk }),
    `states: ${figures(t.states)}`,
    ...sites,
    figures({
      drifted: t.drifted,
      client_missing: t.client_missing,
      fast_path_misses_1h: t.fast_path_misses_1h,
    }),
    `drift by kind: ${figures(t.drift_by_kind)}`,
    `reconcile: ${figures(reconcile)}`,
    `outbox: ${figures(outbox)}`,
    `schedules: ${schedules.join(" · ")}`,
    t.ok ? "ok: true" : `ok: false — ${t.problems.join("; ")}`,
  ];
}

/** The table, mp-health's totals and the listing's own counts, as an operator reads them. */
function formatStatus(
  rows: AccountStatus[],
  totals: HealthTotals,
  listed: ListedTotals,
): string {
  const now = Date.now();
  const header = [
    "attention",
    "account",
    "client",
    "state",
    "reason",
    "deadline",
    "expires in",
    "last refresh",
    "fail",
    "reauth",
    "cache",
  ];
  const lines = rows.map((r) => [
    r.attention === "ok" ? "" : r.attention,
    r.account_id,
    r.client_id ?? "—",
    r.state,
    r.reason ?? "",
    r.deadline ? span(Date.parse(r.deadline) - now) : "",
    r.expires_at ? span(Date.parse(r.expires_at) - now) : "—",
    r.last_refresh_at ? `${span(now - Date.parse(r.last_refresh_at))} ago` : "never",
    String(r.failures),
    r.needs_reauth ? "YES" : "no",
    r.cache,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [
    fmt(header),
    ...lines.map(fmt),
    "",
    ...formatTotals(totals),
    `listed: ${figures(listed)}`,
  ].join("\n");
}

async function main(): Promise<number> {
  const values = parseFlags("status", { json: { type: "boolean", default: false } });
  const ctx = scriptContext("status", ["backendDbUrl", "adminDbUrl"]);
  try {
    const rows = await accountStatuses(ctx);
    let unlinked = 0;
    await scanOrphans(ctx, (orphans) => {
      unlinked += orphans.length;
    });
    const totals = await healthTotals(ctx);
    const listed = listedTotals(rows, unlinked);
    console.log(
      values.json
        ? JSON.stringify({ totals, listed, accounts: rows })
        : formatStatus(rows, totals, listed),
    );
    return 0;
  } catch (err) {
    fail("status", scrub((err as Error).message), 1);
  } finally {
    await ctx.close();
  }
}

if (import.meta.main) Deno.exit(await main());
