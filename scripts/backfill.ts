/**
 * `deno task backfill [--dry-run] [--account <id>] [--batch <n>] [--json]`: syncs every
 * connected or linked account's credentials to its client's cache (Backend `clients`) through
 * the version-fenced batched sync. Needs BACKEND_DB_URL, ADMIN_DB_URL and MP_TOKEN_KEYS.
 * Exits 1 when any account failed (or a database became unreachable; rerun to resume).
 */
import {
  BACKFILL_BATCH,
  type BackfillSummary,
  runBackfill,
} from "../shared/operations/backfill.ts";
import { createLogger } from "../shared/platform/log.ts";
import { batchFlag, fail, parseFlags, progressBar, scriptContext } from "./_cli.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The summary as the lines an operator reads. */
function formatBackfill(s: BackfillSummary): string {
  return [
    `backfill${
      s.dry_run ? " (dry run: nothing written)" : ""
    }: ${s.accounts} accounts in ${s.seconds}s`,
    `  synced           ${s.synced}`,
    `  already current  ${s.already_current}`,
    `  cleared          ${s.cleared}  (disconnected; cached credentials removed)`,
    `  not connected    ${s.not_connected}`,
    `  not linked       ${s.not_linked}  (connected, no backend_client_id)`,
    `  client missing   ${s.client_missing}`,
    `  failed           ${s.failed}`,
    ...(s.error ? [`stopped early: ${s.error} — run it again to resume`] : []),
  ].join("\n");
}

async function main(): Promise<number> {
  const values = parseFlags("backfill", {
    "dry-run": { type: "boolean", default: false },
    account: { type: "string" },
    batch: { type: "string", default: String(BACKFILL_BATCH) },
    json: { type: "boolean", default: false },
  });
  if (values.account && !UUID.test(values.account)) fail("backfill", "--account must be a UUID");
  const batchSize = batchFlag("backfill", values.batch);
  const ctx = scriptContext("backfill", ["backendDbUrl", "adminDbUrl", "tokenKeys"]);
  const bar = progressBar("backfill");
  try {
    const summary = await runBackfill(ctx, createLogger({ component: "backfill" }), {
      dryRun: values["dry-run"],
      accountId: values.account?.toLowerCase(),
      batchSize,
      onProgress: bar.update,
    });
    bar.stop();
    console.log(values.json ? JSON.stringify(summary) : formatBackfill(summary));
    return summary.failed > 0 || summary.error ? 1 : 0;
  } finally {
    bar.stop();
    await ctx.close();
  }
}

if (import.meta.main) Deno.exit(await main());
