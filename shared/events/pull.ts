/**
 * mp-events, the pull API (docs/contract.md, "mp-events"; docs/events.md, "Pull"): pages of
 * events in commit order after an opaque cursor. The order is (writing transaction's xid, row position), and only events
 * of transactions below the reader's snapshot xmin are returned — all of those have finished —
 * so an event whose transaction commits later than a newer one's is never skipped.
 */
import * as v from "valibot";
import type { Context } from "../platform/context.ts";
import { readEvents } from "../store/events.ts";
import { decodeCursor, encodeCursor, type EventPosition } from "./cursor.ts";

/** The largest page (docs/contract.md, "mp-events"). */
const EVENTS_MAX_LIMIT = 500;
/** The page size when the caller gives none. */
const EVENTS_DEFAULT_LIMIT = 100;

/** One event as the platform receives it (its `id` is the deliveries' `webhook-id`). */
interface PulledEvent {
  id: string;
  type: string;
  timestamp: string;
  data: Record<string, unknown>;
}

const LIMIT_RANGE = `must be from 1 to ${EVENTS_MAX_LIMIT}`;
const NOT_A_CURSOR = "not a cursor of mp-events";

/**
 * The query of mp-events (docs/contract.md, "mp-events"), the function's `input:`: `after`, a
 * cursor this API made, and `limit`, 1–500 in decimal digits (default 100); nothing else.
 */
export const EventsQuery = v.strictObject({
  after: v.optional(
    v.pipe(
      v.string(NOT_A_CURSOR),
      v.rawTransform(({ dataset, addIssue, NEVER }) => {
        const position = decodeCursor(dataset.value);
        if (position) return position;
        addIssue({ message: NOT_A_CURSOR });
        return NEVER;
      }),
    ),
  ),
  limit: v.optional(
    v.pipe(
      v.string(LIMIT_RANGE),
      v.regex(/^[0-9]{1,4}$/, LIMIT_RANGE),
      v.transform(Number),
      v.minValue(1, LIMIT_RANGE),
      v.maxValue(EVENTS_MAX_LIMIT, LIMIT_RANGE),
    ),
    String(EVENTS_DEFAULT_LIMIT),
  ),
});

/** A page of events after `after` (from the oldest kept one without it) and the next cursor. */
export async function readEventPage(
  ctx: Context,
  after: EventPosition | null,
  limit: number,
): Promise<{ events: PulledEvent[]; next: string }> {
  const rows = await ctx.admin((sql) => readEvents(sql, after, limit));
  const last = rows.at(-1);
  return {
    events: rows.map((r) => ({ id: r.id, ...JSON.parse(r.payload) })),
    next: encodeCursor(last ? { xid: last.xid, pos: last.pos } : after ?? { xid: "0", pos: "0" }),
  };
}
