import * as v from "valibot";
import { defineScheduledFunction, optionalLimit, uuid } from "../../../shared/platform/http.ts";
import { runRefresh } from "../../../shared/refresh/run.ts";
import { REFRESH_MAX_LIMIT } from "../../../shared/refresh/run_limits.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";
import { runRecordOf } from "../../../shared/schedules/runs.ts";

/**
 * mp-refresh (pg_cron): refreshes the due MercadoPago tokens under leases, with bounded
 * concurrency toward MercadoPago, and answers after the run with its counts. An empty body
 * means the defaults; `force` needs `account_id`; a run of one account is not recorded as a run
 * of the schedule.
 */
export const handler = defineScheduledFunction({
  job: runRecordOf("mp-refresh"),
  needs: ["adminDbUrl", "backendDbUrl", "tokenKeys", "mpClientId", "mpClientSecret"],
  changes: CONNECTION_CHANGES,
  input: v.pipe(
    v.strictObject({
      limit: optionalLimit(REFRESH_MAX_LIMIT),
      account_id: v.optional(uuid),
      force: v.optional(v.boolean("must be a boolean")),
    }),
    v.forward(v.check((i) => !i.force || i.account_id !== undefined, "needs account_id"), [
      "force",
    ]),
  ),
  recorded: (input) => !input.account_id,
  async run({ input, ctx, log, requestId }) {
    const answer = await runRefresh(ctx, log, {
      limit: input.limit,
      accountId: input.account_id,
      force: input.force,
      requestId,
    });
    return { answer };
  },
});
