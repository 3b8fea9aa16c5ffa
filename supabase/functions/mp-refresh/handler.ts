import * as v from "valibot";
import { DomainError } from "../../../shared/platform/errors.ts";
import { defineFunction, json, readInput, uuid, validate } from "../../../shared/platform/http.ts";
import { readAccount } from "../../../shared/store/accounts.ts";
import { runRefresh } from "../../../shared/refresh/run.ts";
import { CONNECTION_CHANGES } from "../../../shared/events/deliver.ts";
import { recordRun } from "../../../shared/operations/schedules.ts";

const Body = v.strictObject({
  limit: v.optional(
    v.pipe(
      v.number("must be a number"),
      v.integer("must be an integer"),
      v.minValue(1, "must be from 1 to 500"),
      v.maxValue(500, "must be from 1 to 500"),
    ),
  ),
  account_id: v.optional(uuid),
  force: v.optional(v.boolean("must be a boolean")),
});

/**
 * mp-refresh (pg_cron): refreshes the due MercadoPago tokens under leases, with bounded
 * concurrency toward MercadoPago, and answers after the run with its counts. An empty body
 * means the defaults; `force` needs `account_id`.
 */
export const handler = defineFunction({
  name: "mp-refresh",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "backendDbUrl", "tokenKeys", "mpClientId", "mpClientSecret"],
  changes: CONNECTION_CHANGES,
  async run({ req, ctx, log, requestId }) {
    const input = validate(Body, await readInput(req, { emptyIsObject: true }));
    if (input.force && !input.account_id) {
      throw new DomainError("invalid_request", "force: needs account_id");
    }
    const started = new Date();
    const report = await runRefresh(ctx, log, {
      limit: input.limit,
      accountId: input.account_id,
      force: input.force,
      requestId,
    });
    if (!input.account_id) {
      const { results: _, ...counts } = report;
      await recordRun(ctx, log, "mp-refresh", started, counts);
    }
    if (input.account_id && report.claimed === 0) {
      const account = await ctx.admin((sql) => readAccount(sql, input.account_id!));
      if (!account) throw new DomainError("account_not_found", "no such account");
    }
    return json(200, report);
  },
});
