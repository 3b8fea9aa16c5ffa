import * as v from "valibot";
import { defineScheduledFunction, optionalLimit } from "../../../shared/platform/http.ts";
import { DELIVER_MAX_LIMIT } from "../../../shared/events/deliver.ts";
import { CHAIN_HEADER, CONTINUED_HEADER, deliverInLane } from "../../../shared/events/lanes.ts";
import { runRecordOf } from "../../../shared/schedules/runs.ts";

/**
 * mp-deliver-events (pg_cron, every minute): delivers the due events of the outbox to
 * PLATFORM_WEBHOOK_URL, signed as Standard Webhooks, in order per account
 * (`shared/events/deliver.ts`); a run that used its whole limit while events are still due
 * starts successors of itself (`shared/events/lanes.ts`), so a burst drains in parallel lanes.
 * Answers `{"delivered","failed","pending"}` (how many successors it started: the
 * `x-mp-delivery-continued` header; a successor's link: the `x-mp-delivery-chain` header of its
 * request). With delivery off (no PLATFORM_WEBHOOK_URL) it delivers nothing and the events wait
 * for mp-events.
 */
export const handler = defineScheduledFunction({
  job: runRecordOf("mp-deliver-events"),
  needs: ["adminDbUrl", "platformWebhook"],
  input: v.strictObject({ limit: optionalLimit(DELIVER_MAX_LIMIT) }),
  async run({ req, input, ctx, log }) {
    const { report, delivery, chain, continued } = await deliverInLane(ctx, log, {
      chainHeader: req.headers.get(CHAIN_HEADER),
      limit: input.limit,
    });
    return {
      answer: report,
      summary: { ...report, delivery, chain, continued },
      headers: { [CONTINUED_HEADER]: String(continued) },
    };
  },
});
