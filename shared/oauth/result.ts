/** What the OAuth callback ends with, and what its steps are given. */
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";

/** Where the browser goes back to: `mp=connected&account_id=…` or `mp=error&reason=…`. */
export type CallbackResult = { mp: "connected"; account_id: string } | {
  mp: "error";
  reason: string;
};

/** An error result with `reason`. */
export const failed = (reason: string): CallbackResult => ({ mp: "error", reason });

/** The callback's request as its steps need it: the query string, the context, the logger, the request id. */
export interface CallbackCall {
  query: URLSearchParams;
  ctx: Context;
  log: Logger;
  requestId: string;
}
