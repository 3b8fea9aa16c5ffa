import { defineFunction, json, readInput } from "../../../shared/platform/http.ts";
import { parseEventsQuery, readEventPage } from "../../../shared/events/pull.ts";

/**
 * mp-events (the platform): `GET ?after=<cursor>&limit=<1–500>` → the events in commit order
 * after the cursor, and the cursor to continue from (`shared/events/pull.ts`, docs/events.md).
 */
export const handler = defineFunction({
  name: "mp-events",
  methods: ["GET"],
  auth: "server",
  needs: ["adminDbUrl"],
  async run({ req, ctx }) {
    const { after, limit } = parseEventsQuery(await readInput(req));
    return json(200, await readEventPage(ctx, after, limit));
  },
});
