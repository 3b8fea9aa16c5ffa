import * as v from "valibot";
import { defineFunction, json } from "../../../shared/platform/http.ts";
import { healthTotals } from "../../../shared/operations/health.ts";

/**
 * mp-health (monitoring): the totals of `shared/operations/health.ts` — connection figures by
 * state, drift, fast-path misses, the event outbox and the schedules — answered 200 when `ok`,
 * else 503 with the same body (monitors read status codes; `problems` says why).
 */
export const handler = defineFunction({
  name: "mp-health",
  methods: ["GET"],
  auth: "server",
  needs: ["backendDbUrl", "adminDbUrl"],
  input: v.strictObject({}),
  async run({ ctx }) {
    const totals = await healthTotals(ctx);
    return json(totals.ok ? 200 : 503, totals);
  },
});
