/**
 * `deno task events [--since <ISO time>] [--redeliver] [--json]`: the event outbox for
 * operators (docs/events.md, "Operators") — pending and failed events, oldest first, and with
 * `--redeliver` the failed ones (created since `--since` when given) put back to pending, due
 * now, for another 3 days of retries. Needs ADMIN_DB_URL.
 */
import { listUndelivered, readOutboxTotals, redeliverEvents } from "../shared/store/events.ts";
import { scrub } from "../shared/platform/log.ts";
import { fail, parseFlags, scriptContext } from "./_cli.ts";

/** Events listed at most. */
const LIST_LIMIT = 1000;

async function main(): Promise<number> {
  const values = parseFlags("events", {
    json: { type: "boolean", default: false },
    redeliver: { type: "boolean", default: false },
    since: { type: "string" },
  });
  let since: Date | undefined;
  if (values.since !== undefined) {
    since = new Date(String(values.since));
    if (Number.isNaN(since.getTime())) fail("events", "--since: not an ISO time");
  }
  const ctx = scriptContext("events", ["adminDbUrl"]);
  try {
    const redelivered = values.redeliver
      ? await ctx.admin((sql) => redeliverEvents(sql, { since }))
      : undefined;
    const [events, totals] = await Promise.all([
      ctx.admin((sql) => listUndelivered(sql, { since, limit: LIST_LIMIT })),
      ctx.admin((sql) => readOutboxTotals(sql)),
    ]);
    if (values.json) {
      console.log(JSON.stringify({ totals, redelivered, events }));
      return 0;
    }
    const header = [
      "status",
      "event",
      "account",
      "seq",
      "type",
      "attempts",
      "created",
      "next",
      "error",
    ];
    const lines = events.map((e) => [
      e.status,
      e.id,
      e.account_id,
      String(e.seq),
      e.type.replace("mp.connection.", ""),
      String(e.attempts),
      e.created_at.toISOString(),
      e.status === "pending" ? e.next_attempt_at.toISOString() : "",
      e.last_error ?? "",
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
    const fmt = (c: string[]) => c.map((x, i) => x.padEnd(widths[i])).join("  ").trimEnd();
    console.log([fmt(header), ...lines.map(fmt)].join("\n"));
    console.log(
      `\npending: ${totals.pending} · failed: ${totals.failed}` +
        (totals.oldest_pending_at
          ? ` · oldest pending: ${totals.oldest_pending_at.toISOString()}`
          : "") +
        (redelivered !== undefined ? ` · redelivered: ${redelivered}` : ""),
    );
    return 0;
  } catch (err) {
    fail("events", scrub((err as Error).message), 1);
  } finally {
    await ctx.close();
  }
}

if (import.meta.main) Deno.exit(await main());
