/**
 * `deno task rotate-keys [--batch <n>] [--json]`: after a new key was put FIRST in
 * `MP_TOKEN_KEYS` (old keys kept after it), re-encrypts every stored ciphertext (access and
 * refresh tokens, OAuth code verifiers, escrowed refresh pairs) under it, in batches, safe
 * while refreshes run. When it reports 0 remaining, the old keys can leave the ring.
 * Exits 1 when a value failed to decrypt or some remain.
 */
import { recordEvent } from "../shared/store/audit.ts";
import { createLogger } from "../shared/platform/log.ts";
import {
  KeyMismatchError,
  rotateKeys,
  ROTATION_BATCH,
  type RotationSummary,
} from "../shared/operations/rotation.ts";
import { batchFlag, parseFlags, progressBar, scriptContext } from "./_cli.ts";

/** The summary as the lines an operator reads. */
function formatRotation(s: RotationSummary): string {
  return [
    `rotate-keys: current key ${s.key_id}; ${s.rotated} values re-encrypted in ${s.seconds}s`,
    ...s.columns.map((c) =>
      `  ${c.column.padEnd(42)} rotated ${c.rotated}, changed meanwhile ${c.changed_meanwhile}, ` +
      `failed ${c.failed}, remaining ${c.remaining}`
    ),
    s.remaining === 0 && s.failed === 0
      ? "every value is under the current key: the old keys can be removed from MP_TOKEN_KEYS"
      : `${s.remaining} values are not under the current key yet` +
        (s.failed ? ` (${s.failed} failed to decrypt: see the log lines)` : "") +
        ": keep the old keys and run it again",
  ].join("\n");
}

async function main(): Promise<number> {
  const values = parseFlags("rotate-keys", {
    batch: { type: "string", default: String(ROTATION_BATCH) },
    json: { type: "boolean", default: false },
  });
  const batchSize = batchFlag("rotate-keys", values.batch);
  const ctx = scriptContext("rotate-keys", ["backendDbUrl", "adminDbUrl", "tokenKeys"]);
  const log = createLogger({ component: "rotate-keys" });
  const bar = progressBar("rotate-keys");
  try {
    const summary = await rotateKeys(ctx, log, { batchSize, onProgress: bar.update });
    bar.stop();
    await recordEvent(ctx, log, {
      event: "keys_rotated",
      detail: {
        key_id: summary.key_id,
        rotated: summary.rotated,
        failed: summary.failed,
        remaining: summary.remaining,
      },
    });
    console.log(values.json ? JSON.stringify(summary) : formatRotation(summary));
    return summary.failed > 0 || summary.remaining > 0 ? 1 : 0;
  } catch (err) {
    bar.stop();
    if (err instanceof KeyMismatchError) {
      console.error(`rotate-keys: ${err.message}`);
      return 1;
    }
    log.error("Key rotation stopped; run it again to resume", { error: err });
    return 1;
  } finally {
    await ctx.close();
  }
}

if (import.meta.main) Deno.exit(await main());
