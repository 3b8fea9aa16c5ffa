import * as v from "valibot";
import { defineScheduledFunction, optionalLimit, uuid } from "../../../shared/platform/http.ts";
import { PROBE_MAX_LIMIT, runProbe } from "../../../shared/probe/probe.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";
import { runRecordOf } from "../../../shared/schedules/runs.ts";

/**
 * mp-probe (pg_cron, every minute): verifies the connected access tokens due for
 * verification at MercadoPago (`GET /users/me`), or one account's now (not recorded as a run of
 * the schedule); a dead token is cleared and replaced or the account needs re-authorization
 * (`shared/probe/probe.ts`).
 */
export const handler = defineScheduledFunction({
  job: runRecordOf("mp-probe"),
  needs: ["backendDbUrl", "adminDbUrl", "tokenKeys", "mpClientId", "mpClientSecret"],
  changes: CONNECTION_CHANGES,
  input: v.strictObject({
    limit: optionalLimit(PROBE_MAX_LIMIT),
    account_id: v.optional(uuid),
  }),
  recorded: (input) => !input.account_id,
  async run({ input, ctx, log, requestId }) {
    const answer = await runProbe(ctx, log, {
      limit: input.limit,
      accountId: input.account_id,
      requestId,
    });
    return { answer };
  },
});
