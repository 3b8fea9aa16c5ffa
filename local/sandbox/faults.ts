/** How a fault or the latency strikes an API call of the sandbox, before or after it is processed. */
import { DroppedConnection } from "./serve.ts";
import { mpError } from "./wire.ts";
import type { FaultMode, SandboxState, TokenBody } from "./state.ts";

/** Answer for a request abandoned by its client (or held until close()); nobody reads it. */
export function gone(): Response {
  return mpError(504, "timeout", "request abandoned");
}

/**
 * Waits out the latency (application `clientId`'s own, else every call's), then fails the call
 * if `mode` fails it before processing.
 */
export async function failBefore(
  s: SandboxState,
  req: Request,
  mode?: FaultMode,
  clientId?: string,
): Promise<Response | undefined> {
  const latency = s.latencyFor(clientId);
  if (latency > 0 && !(await s.wait(latency, req.signal))) return gone();
  if (mode === "timeout") {
    await s.wait(null, req.signal);
    return gone();
  }
  if (mode === "error_500") return mpError(500, "internal_error", "internal server error");
  if (mode === "invalid_grant") return mpError(400, "invalid_grant", "invalid_grant");
  if (mode === "rate_limited") {
    return mpError(429, "too_many_requests", "too many requests", { "retry-after": "1" });
  }
}

/** The answer to a processed token call, as the fault `mode` (if any) mangles it. */
export function answer(outcome: Response | TokenBody, mode?: FaultMode): Response {
  if (mode === "lose_answer") throw new DroppedConnection();
  if (mode === "error_500_after") return mpError(500, "internal_error", "internal server error");
  if (outcome instanceof Response) return outcome;
  if (mode === "malformed_200") {
    const { access_token: _, ...rest } = outcome;
    return Response.json(rest);
  }
  return Response.json(outcome);
}
