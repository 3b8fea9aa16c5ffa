/**
 * In-memory stand-in for MercadoPago's OAuth endpoints (docs/local-stack.md), speaking
 * MercadoPago's wire format, plus `/__sandbox/*` controls that let tests inject faults and
 * latency. One handler serves both MP_AUTH_URL (`/authorization`) and MP_API_URL
 * (`/oauth/token`, `/users/me`). Faults and latency apply to the next API calls of either
 * kind, `/users/me` included (so the webhook's confirmation can be made to fail), except the
 * faults that strike after a token call is processed (`lose_answer`, `error_500_after`,
 * `malformed_200`, `other_seller`): those concern `/oauth/token` only. `lose_answer` makes the
 * handler reject with {@link DroppedConnection}; serve the sandbox with {@link serveSandbox} to
 * turn that into a connection closed without an answer. It logs nothing.
 *
 * The latch (`POST /__sandbox/hold {"hold":true}`) holds every token call before anything of
 * it is processed, until `{"hold":false}` releases them (or their client goes away); `GET
 * /__sandbox/hold` says how many are held, so a test can wait for the calls it expects and
 * decide what happens meanwhile instead of racing a latency against a timeout.
 *
 * Every token belongs to a grant: the chain of rotations from one code exchange or one seeded
 * grant. Presenting a spent refresh token again (reuse) revokes its whole grant, as MercadoPago
 * does; the seller's other grants keep working.
 *
 * The sandbox knows one application or several (the stack's `MP_APPS`, one per country site).
 * Sellers belong to a site; codes and grants to the application that issued them: presented with
 * another application's credentials, they answer `invalid_grant` unprocessed, counted in
 * `cross_app_calls`. Every control takes an optional `"client_id"` limiting it to one
 * application; `GET /__sandbox/stats` counts per application too (`apps`, by client id).
 */
import { mpError } from "./sandbox/wire.ts";
import { SandboxState } from "./sandbox/state.ts";
import type { SandboxOptions } from "./sandbox/state.ts";
import { authorize } from "./sandbox/authorization.ts";
import { token } from "./sandbox/tokens.ts";
import { usersMe } from "./sandbox/users.ts";
import { ledgerView } from "./sandbox/ledger.ts";
import { control, controlsSet, holdView, lastIssued, reset } from "./sandbox/controls.ts";

export { DroppedConnection, serveSandbox } from "./sandbox/serve.ts";
export type { MpGrant, SandboxApp } from "./sandbox/state.ts";

/**
 * A running sandbox: serve `handler` with {@link serveSandbox} (or call it directly in unit
 * tests, where a lost answer is a rejection with {@link DroppedConnection});
 * `close()` releases held requests.
 */
export interface Sandbox {
  handler: (req: Request) => Promise<Response>;
  close(): void;
}

/**
 * Creates a fresh sandbox with empty state for the given application(s): one
 * router over MercadoPago's surfaces (`sandbox/authorization.ts`, `tokens.ts`, `users.ts`) and
 * the test controls (`sandbox/controls.ts`), sharing one `SandboxState`.
 */
export function createSandbox(opts: SandboxOptions): Sandbox {
  const s = new SandboxState(opts);
  async function handler(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const route = `${req.method} ${url.pathname}`;
    if (route === "GET /authorization") return authorize(s, url);
    if (route === "POST /oauth/token") return await token(s, req);
    if (route === "GET /users/me") return await usersMe(s, req);
    if (route === "GET /__sandbox/stats") return Response.json(s.stats);
    if (route === "GET /__sandbox/hold") return holdView(s, url);
    if (route === "GET /__sandbox/secrets") return Response.json({ secrets: [...s.issued] });
    if (route === "GET /__sandbox/last_tokens") return lastIssued(s, url);
    if (route === "GET /__sandbox/ledger") return ledgerView(s.ledger, url);
    if (route === "POST /__sandbox/reset") return reset(s);
    if (route === "GET /__sandbox/controls") return controlsSet(s);
    if (req.method === "POST" && url.pathname.startsWith("/__sandbox/")) {
      return await control(s, url.pathname, req);
    }
    return mpError(404, "not_found", `resource ${url.pathname} not found`);
  }
  return { handler, close: () => s.close() };
}
