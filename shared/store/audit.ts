/**
 * The credential audit trail in the Admin DB (`mp_credential_events`): what happened to
 * which account, never a secret. Recording is best effort: a failure is logged, not thrown.
 */
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";

/** One credential event. `detail` holds codes and counts only. */
export interface AuditEvent {
  event: string;
  accountId?: string | null;
  clientId?: string | null;
  detail?: Record<string, string | number | boolean | null>;
  requestId?: string;
}

/** Appends events to the audit trail; logs (and swallows) a failure to write them. */
export async function recordEvents(ctx: Context, log: Logger, events: AuditEvent[]): Promise<void> {
  if (events.length === 0) return;
  const rows = events.map((e) => ({
    event: e.event,
    account_id: e.accountId ?? null,
    client_id: e.clientId ?? null,
    detail: e.detail ?? {},
    request_id: e.requestId ?? null,
  }));
  try {
    await ctx.admin((sql) => sql`insert into mp_credential_events ${sql(rows)}`);
  } catch (err) {
    log.warn("Could not record audit events", { events: events.map((e) => e.event), error: err });
  }
}

/** Appends one event to the audit trail (best effort). */
export function recordEvent(ctx: Context, log: Logger, event: AuditEvent): Promise<void> {
  return recordEvents(ctx, log, [event]);
}
