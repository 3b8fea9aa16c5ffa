import * as v from "valibot";
import { defineFunction, json } from "../../../shared/platform/http.ts";
import { reconcile, RECONCILE_LIMIT } from "../../../shared/reconcile/reconcile.ts";
import { recordEvent } from "../../../shared/store/audit.ts";
import { recordRun } from "../../../shared/operations/schedules.ts";

/**
 * mp-reconcile (pg_cron, every minute): finds accounts whose cache differs from the Admin master
 * (by version and presence, never by secret) over one slice of the keyspace from the saved
 * cursors, repairs up to `limit` of them through the batched version-fenced sync, and answers
 * (and logs) the counts by kind (docs/scale.md).
 */
export const handler = defineFunction({
  name: "mp-reconcile",
  methods: ["POST"],
  auth: "server",
  needs: ["backendDbUrl", "adminDbUrl", "tokenKeys"],
  input: v.strictObject({
    limit: v.optional(
      v.pipe(
        v.number("must be a number"),
        v.integer("must be an integer"),
        v.minValue(1, "must be at least 1"),
        v.maxValue(RECONCILE_LIMIT.max, `must be at most ${RECONCILE_LIMIT.max}`),
      ),
    ),
  }),
  async run({ input, ctx, log, requestId }) {
    const started = new Date();
    const summary = await reconcile(ctx, log, { limit: input.limit });
    if (summary.drifted > 0 || summary.client_missing > 0) {
      await recordEvent(ctx, log, { event: "reconciled", detail: { ...summary }, requestId });
    }
    await recordRun(ctx, log, "mp-reconcile", started, { ...summary });
    return json(200, summary);
  },
});
