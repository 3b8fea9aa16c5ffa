import * as v from "valibot";
import { defineFunction, json, readInput, validate } from "../../../shared/platform/http.ts";
import { DELIVER_MAX_LIMIT, deliverEvents } from "../../../shared/events/deliver.ts";
import {
  CHAIN_HEADER,
  chainOf,
  CONTINUED_HEADER,
  continueDelivery,
  DELIVER_CHAIN_MAX,
} from "../../../shared/events/lanes.ts";
import { DomainError } from "../../../shared/platform/errors.ts";
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
 * PLATFORM_WEBHOOK_URL, signed as Standard Webhooks, in order per account
 * (`shared/events/deliver.ts`); a run that used its whole limit while events are still due
 * starts successors of itself (`shared/events/lanes.ts`), so a burst drains in parallel lanes.
 * Answers `{"delivered","failed","pending"}` (how many successors it started: the
 * `x-mp-delivery-continued` header; a successor's link: the `x-mp-delivery-chain` header of its
 * request). With delivery off (no
 * PLATFORM_WEBHOOK_URL) it delivers nothing and the events wait for mp-events.
 */
export const handler = defineFunction({
  name: "mp-deliver-events",
  methods: ["POST"],
  auth: "server",
  needs: ["adminDbUrl", "platformWebhook"],
  async run({ req, ctx, log }) {
    const input = validate(Body, await readInput(req, { emptyIsObject: true }));
    const chain = chainOf(req.headers.get(CHAIN_HEADER));
    if (chain === undefined) {
      throw new DomainError(
        "invalid_request",
        `${CHAIN_HEADER}: must be an integer from 1 to ${DELIVER_CHAIN_MAX}`,
      );
    }
    const started = new Date();
    const { full, delivery, ...report } = await deliverEvents(ctx, log, { limit: input.limit });
    const continued = await continueDelivery(ctx, log, { chain, full, limit: input.limit });
    await recordRun(ctx, log, "mp-deliver-events", started, {
      ...report,
      delivery,
      chain,
      continued,
    });
    return json(200, report, { [CONTINUED_HEADER]: String(continued) });
  },
});
