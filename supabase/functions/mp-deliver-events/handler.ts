import * as v from "valibot";
import { defineFunction, json, readInput, validate } from "../../../shared/platform/http.ts";
import { DELIVER_MAX_LIMIT, deliverEvents } from "../../../shared/events/deliver.ts";
import { recordRun } from "../../../shared/operations/schedules.ts";

const Body = v.strictObject({
  limit: v.optional(
    v.pipe(
      v.number("must be a number"),
      v.integer("must be an integer"),
      v.minValue(1, `must be from 1 to ${DELIVER_MAX_LIMIT}`),
      v.maxValue(DELIVER_MAX_LIMIT, `must be from 1 to ${DELIVER_MAX_LIMIT}`),
    ),
  ),
});

/**
 * mp-deliver-events (pg_cron, every minute): delivers the due events of the outbox to
 * PLATFORM_WEBHOOK_URL, signed as Standard Webhooks, in order per account, and answers
 * `{"delivered","failed","pending"}` (`shared/events/deliver.ts`). With delivery off (no
 * PLATFORM_WEBHOOK_URL) it delivers nothing and the events wait for mp-events.
 */
export const handler = defineFunction({
  name: "mp-deliver-events",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "platformWebhook"],
  async run({ req, ctx, log }) {
    const input = validate(Body, await readInput(req, { emptyIsObject: true }));
    const started = new Date();
    const report = await deliverEvents(ctx, log, { limit: input.limit });
    await recordRun(ctx, log, "mp-deliver-events", started, { ...report });
    return json(200, report);
  },
});
