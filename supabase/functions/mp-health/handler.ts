import * as v from "valibot";
import { defineFunction, json } from "../../../shared/platform/http.ts";
import { healthTotals } from "../../../shared/operations/health.ts";

/**
 * mp-health (monitoring): totals over both databases — connected, expiring within 7 days,
 * needing re-authorization, drifted, and fast-path misses in the last hour (counted from the
 * audit trail).
 */
export const handler = defineFunction({
  name: "mp-health",
  methods: ["GET"],
  auth: "server",
  needs: ["backendDbUrl", "adminDbUrl"],
  input: v.strictObject({}),
  async run({ ctx }) {
    return json(200, await healthTotals(ctx));
  },
});
