/**
 * `deno task status [--json]`: every MercadoPago connection's health — account, client,
 * connection state (with reason and deadline), expires in, last refresh, failures, needs re-authorization, cache in sync —
 * the ones that need a person first, then totals. Needs BACKEND_DB_URL and ADMIN_DB_URL.
 */
import {
  type AccountStatus,
  accountStatuses,
  fastPathMisses,
} from "../shared/operations/health.ts";
import { scanOrphans } from "../shared/reconcile/drift.ts";
import { scrub } from "../shared/platform/log.ts";
import { fail, parseFlags, scriptContext } from "./_cli.ts";

/** The totals printed under the table (and under `totals` with --json). */
export interface StatusTotals {
  accounts: number;
  connected: number;
  needs_reauth: number;
  at_risk: number;
  expired: number;
  expiring_7d: number;
  failing: number;
  drifted: number;
  client_missing: number;
  not_linked: number;
  unlinked_caches: number;
  fast_path_misses_1h: number;
}

/** Totals over the status rows plus the caches no account feeds and the last hour's misses. */
export function statusTotals(
  rows: AccountStatus[],
  unlinkedCaches: number,
  misses: number,
): StatusTotals {
  const now = Date.now();
  const count = (f: (r: AccountStatus) => boolean) => rows.filter(f).length;
  const expiresIn = (r: AccountStatus) => (r.expires_at ? Date.parse(r.expires_at) - now : NaN);
  const drifted = count((r) => !["in_sync", "not_linked", "client_missing"].includes(r.cache));
  return {
    accounts: rows.length,
    connected: count((r) => r.connected),
    needs_reauth: count((r) => r.needs_reauth),
    at_risk: count((r) => r.state === "at_risk"),
    expired: count((r) => r.connected && expiresIn(r) <= 0),
    expiring_7d: count((r) => r.connected && expiresIn(r) < 7 * 86_400_000),
    failing: count((r) => r.failures > 0),
    drifted: drifted + unlinkedCaches,
    client_missing: count((r) => r.cache === "client_missing"),
    not_linked: count((r) => r.cache === "not_linked"),
    unlinked_caches: unlinkedCaches,
    fast_path_misses_1h: misses,
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

/** The table and totals as an operator reads them. */
export function formatStatus(rows: AccountStatus[], totals: StatusTotals): string {
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
    Object.entries(totals).map(([k, v]) => `${k.replaceAll("_", " ")}: ${v}`).join(" · "),
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
    const totals = statusTotals(rows, unlinked, await fastPathMisses(ctx));
    console.log(
      values.json ? JSON.stringify({ totals, accounts: rows }) : formatStatus(rows, totals),
    );
    return 0;
  } catch (err) {
    fail("status", scrub((err as Error).message), 1);
  } finally {
    await ctx.close();
  }
}

if (import.meta.main) Deno.exit(await main());
