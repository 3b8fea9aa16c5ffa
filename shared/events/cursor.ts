/**
 * The opaque cursor of mp-events: the position (transaction id, row position) of the last
 * event a reader received, in commit order (docs/events.md). Pure.
 */

/** A position in the event stream: the writing transaction's xid8 and the row's position. */
export interface EventPosition {
  xid: string;
  pos: string;
}

const DIGITS = /^(0|[1-9][0-9]{0,19})$/;
const PREFIX = "c1.";

/** The cursor text of a position (URL-safe base64 of `c1.<xid>.<pos>`, no padding). */
export function encodeCursor(p: EventPosition): string {
  return btoa(`${PREFIX}${p.xid}.${p.pos}`).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

/** The position a cursor names, or null when the text is not a cursor this API made. */
export function decodeCursor(text: string): EventPosition | null {
  if (!/^[A-Za-z0-9_-]{1,96}$/.test(text)) return null;
  let plain: string;
  try {
    plain = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    return null;
  }
  if (!plain.startsWith(PREFIX)) return null;
  const [xid, pos, ...rest] = plain.slice(PREFIX.length).split(".");
  if (rest.length > 0 || !DIGITS.test(xid ?? "") || !DIGITS.test(pos ?? "")) return null;
  // Both fit their SQL types (xid8 is unsigned 64-bit, pos a positive bigint).
  if (BigInt(xid) >= 2n ** 64n || BigInt(pos) >= 2n ** 63n) return null;
  return { xid, pos };
}
