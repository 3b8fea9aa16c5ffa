/**
 * Invariant 5 at the log line's message (no stack needed): a secret interpolated into the
 * message itself — not passed as a field — is scrubbed like any other string.
 * (Mutant "the log line's msg unscrubbed" in tests/mutation/mutants.ts.)
 */
import assert from "node:assert/strict";
import { createLogger } from "../shared/platform/log.ts";

function captured(write: () => void): string[] {
  const lines: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (line: string) => lines.push(line);
  console.error = (line: string) => lines.push(line);
  try {
    write();
  } finally {
    [console.log, console.error] = [log, error];
  }
  return lines;
}

Deno.test("logger: a token or key inside the message is redacted, the rest of the message kept", () => {
  const token = "APP_USR-1234567890-abcdef-0123456789abcdef-987654321";
  const secretKey = "sb_secret_abcdefghijklmnopqrstuvwxyz012345";
  const lines = captured(() => {
    const log = createLogger({ function: "t" });
    log.info(`refreshed with ${token}`);
    log.warn(`key ${secretKey} refused`);
  });
  assert.equal(lines.length, 2);
  const [info, warn] = lines.map((l) => JSON.parse(l));
  assert.ok(!lines.join("\n").includes(token), "no access token in any line");
  assert.ok(!lines.join("\n").includes(secretKey), "no secret key in any line");
  assert.equal(info.msg, "refreshed with [redacted]");
  assert.equal(warn.msg, "key [redacted] refused");
});
