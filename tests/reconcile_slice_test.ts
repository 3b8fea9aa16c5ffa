/**
 * mp-reconcile's slices (no stack needed): each run reads at most its slice of the keyspace
 * after the saved cursor, wraps around to the first id, never reads an id twice in one run,
 * and a series of runs checks every id.
 */
import assert from "node:assert/strict";
import type { ScanEnd, ScanRange } from "../shared/reconcile/drift.ts";
import { scanSlice } from "../shared/reconcile/reconcile.ts";

/** A fake keyspace of sorted ids, scanned as the database would (after < id <= until). */
function keyspace(n: number) {
  const ids = Array.from({ length: n }, (_, i) => `id-${String(i).padStart(4, "0")}`);
  const seen: string[] = [];
  const scan = (range: ScanRange): Promise<ScanEnd> => {
    const max = range.maxRows ?? Infinity;
    const inRange = ids.filter((id) =>
      (range.after == null || id > range.after) && (range.until == null || id <= range.until)
    );
    const rows = inRange.slice(0, max);
    seen.push(...rows);
    return Promise.resolve({
      last: rows.at(-1) ?? range.after ?? null,
      done: rows.length < max || inRange.length === max,
      rows: rows.length,
    });
  };
  return { ids, seen, scan };
}

Deno.test("scanSlice: a keyspace smaller than the slice is read whole by every run", async () => {
  const k = keyspace(5);
  const end = await scanSlice(k.scan, null, 10);
  assert.deepEqual(k.seen, k.ids);
  assert.equal(end.rows, 5);
  assert.equal(end.wrapped, true);
  k.seen.length = 0;
  const again = await scanSlice(k.scan, "id-0002", 10);
  assert.deepEqual([...k.seen].sort(), k.ids, "from a cursor it wraps and stops at the cursor");
  assert.equal(again.next, "id-0002");
});

Deno.test("scanSlice: runs continue where the last stopped and cover every id", async () => {
  const k = keyspace(23);
  let cursor: string | null = null;
  const counts = new Map<string, number>();
  for (let run = 0; run < 5; run++) {
    k.seen.length = 0;
    const end = await scanSlice(k.scan, cursor, 5);
    assert.ok(end.rows <= 5, "a run reads at most its slice");
    assert.equal(new Set(k.seen).size, k.seen.length, "no id twice in one run");
    for (const id of k.seen) counts.set(id, (counts.get(id) ?? 0) + 1);
    cursor = end.next;
  }
  assert.equal(counts.size, 23, "five runs of 5 cover all 23 ids");
});
