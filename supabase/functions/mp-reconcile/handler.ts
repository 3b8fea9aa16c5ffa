import * as v from "valibot";
import { defineScheduledFunction, optionalLimit } from "../../../shared/platform/http.ts";
import { reconcile, RECONCILE_LIMIT } from "../../../shared/reconcile/reconcile.ts";
import { runRecordOf } from "../../../shared/schedules/runs.ts";

/**
 * mp-reconcile (pg_cron, every minute): finds accounts whose cache differs from the Admin master
 * (by version and presence, never by secret) over one slice of the keyspace from the saved
 * cursors, repairs up to `limit` of them through the batched version-fenced sync, and answers
 * (and logs, and audits when it found drift) the counts by kind (docs/scale.md).
 */
export const handler = defineScheduledFunction({
  job: runRecordOf("mp-reconcile"),
  needs: ["backendDbUrl", "adminDbUrl", "tokenKeys"],
  input: v.strictObject({ limit: optionalLimit(RECONCILE_LIMIT.max) }),
  async run({ input, ctx, log, requestId }) {
    return { answer: await reconcile(ctx, log, { limit: input.limit, requestId }) };
  },
});
