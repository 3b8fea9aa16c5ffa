import * as v from "valibot";
import { defineFunction, json, uuid } from "../../../shared/platform/http.ts";
import { PROBE_MAX_LIMIT, runProbe } from "../../../shared/probe/probe.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";
import { recordRun } from "../../../shared/operations/schedules.ts";

/**
 * mp-probe (pg_cron, every minute): verifies the connected access tokens due for
 * verification at MercadoPago (`GET /users/me`), or one account's now; a dead token is
 * cleared and replaced or the account needs re-authorization (`shared/probe/probe.ts`).
 */
export const handler = defineFunction({
  name: "mp-probe",
  methods: ["POST"],
  auth: "server",
  needs: ["backendDbUrl", "adminDbUrl", "tokenKeys", "mpClientId", "mpClientSecret"],
  changes: CONNECTION_CHANGES,
  input: v.strictObject({
    limit: v.optional(
      v.pipe(
        v.number("must be a number"),
        v.integer("must be an integer"),
        v.minValue(1, "must be at least 1"),
        v.maxValue(PROBE_MAX_LIMIT, `must be at most ${PROBE_MAX_LIMIT}`),
      ),
    ),
    account_id: v.optional(uuid),
  }),
  async run({ input, ctx, log, requestId }) {
    const started = new Date();
    const report = await runProbe(ctx, log, {
      limit: input.limit,
      accountId: input.account_id,
      requestId,
    });
    if (!input.account_id) {
      const { results: _, ...counts } = report;
      await recordRun(ctx, log, "mp-probe", started, counts);
    }
    return json(200, report);
  },
});
