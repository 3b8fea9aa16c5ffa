/**
 * The audit trail's best-effort write (shared/store/audit.ts; no stack needed): when the Admin
 * DB refuses it, the caller goes on, and the log line says which events were lost — their names
 * only, never their details (invariant 5: the log carries ids and codes, nothing an event
 * recorded about a seller).
 */
import assert from "node:assert/strict";
import type { Context } from "../shared/platform/context.ts";
import type { Fields, Logger } from "../shared/platform/log.ts";
import { recordEvents } from "../shared/store/audit.ts";

function capturingLogger(lines: { level: string; msg: string; fields?: Fields }[]): Logger {
  const at = (level: string) => (msg: string, fields?: Fields) => {
    lines.push({ level, msg, fields });
  };
  const log: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => log,
  };
  return log;
}

Deno.test("audit: a write the Admin DB refuses is logged by event names only, and nothing is thrown", async () => {
  const ctx = {
    admin: () => Promise.reject(new Error("connection refused")),
    backend: () => Promise.reject(new Error("not used")),
  } as unknown as Context;
  const lines: { level: string; msg: string; fields?: Fields }[] = [];
  await recordEvents(ctx, capturingLogger(lines), [
    {
      event: "connect_rejected",
      accountId: "11111111-1111-4111-8111-111111111111",
      detail: { reason: "seller_mismatch", mp_user_id: 987654321, note: "detail-only-text" },
      requestId: "req-audit-1",
    },
    { event: "declined", detail: { mp_error: "access_denied" } },
  ]);
  assert.equal(lines.length, 1);
  assert.equal(lines[0].level, "warn");
  assert.deepEqual(lines[0].fields?.events, ["connect_rejected", "declined"]);
  const text = JSON.stringify(lines[0].fields);
  for (const detail of ["987654321", "detail-only-text", "seller_mismatch", "access_denied"]) {
    assert.ok(!text.includes(detail), `the log line carries the detail ${detail}`);
  }
});
