import { defineFunction, json } from "../../../shared/platform/http.ts";
import { EventsQuery, readEventPage } from "../../../shared/events/pull.ts";

/**
 * mp-events (the platform): `GET ?after=<cursor>&limit=<1–500>` → the events in commit order
 * after the cursor, and the cursor to continue from (`shared/events/pull.ts`; docs/contract.md,
 * "mp-events").
 */
export const handler = defineFunction({
  name: "mp-events",
  methods: ["GET"],
  auth: "server",
  needs: ["adminDbUrl"],
  input: EventsQuery,
  async run({ input, ctx }) {
    return json(200, await readEventPage(ctx, input.after ?? null, input.limit));
  },
});
