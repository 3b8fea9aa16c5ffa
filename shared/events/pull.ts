/**
 * mp-events, the pull API (SPEC §10, docs/events.md): pages of events in commit order after
 * an opaque cursor. The order is (writing transaction's xid, row position), and only events
 * of transactions below the reader's snapshot xmin are returned — all of those have finished —
 * so an event whose transaction commits later than a newer one's is never skipped.
 */
import type { Context } from "../platform/context.ts";
import { HttpError } from "../platform/http.ts";
import { readEvents } from "../store/events.ts";
import { decodeCursor, encodeCursor } from "./cursor.ts";

/** The largest page (SPEC §6). */
export const EVENTS_MAX_LIMIT = 500;
/** The page size when the caller gives none. */
export const EVENTS_DEFAULT_LIMIT = 100;

/** One event as the platform receives it (its `id` is the deliveries' `webhook-id`). */
export interface PulledEvent {
  id: string;
  type: string;
  timestamp: string;
  data: Record<string, unknown>;
}

/** Parses the query of mp-events; 400 `invalid_request` for a bad cursor or limit. Pure. */
export function parseEventsQuery(
  query: Record<string, unknown>,
): { after: { xid: string; pos: string } | null; limit: number } {
  for (const k of Object.keys(query)) {
    if (k !== "after" && k !== "limit") {
      throw new HttpError(400, "invalid_request", `unknown field ${k}`);
    }
  }
  let after = null;
  if (query.after !== undefined) {
    after = typeof query.after === "string" ? decodeCursor(query.after) : null;
    if (!after) throw new HttpError(400, "invalid_request", "after: not a cursor of mp-events");
  }
  let limit = EVENTS_DEFAULT_LIMIT;
  if (query.limit !== undefined) {
    const text = String(query.limit);
    limit = /^[0-9]{1,4}$/.test(text) ? Number(text) : NaN;
    if (!(limit >= 1 && limit <= EVENTS_MAX_LIMIT)) {
      throw new HttpError(400, "invalid_request", `limit: must be from 1 to ${EVENTS_MAX_LIMIT}`);
    }
  }
  return { after, limit };
}

/** A page of events after `after` (from the oldest kept one without it) and the next cursor. */
export async function readEventPage(
  ctx: Context,
  after: { xid: string; pos: string } | null,
  limit: number,
): Promise<{ events: PulledEvent[]; next: string }> {
  const rows = await ctx.admin((sql) => readEvents(sql, after, limit));
  const last = rows.at(-1);
  return {
    events: rows.map((r) => ({ id: r.id, ...JSON.parse(r.payload) })),
    next: encodeCursor(last ? { xid: last.xid, pos: last.pos } : after ?? { xid: "0", pos: "0" }),
  };
}
