/**
 * Domain errors: what went wrong in the contract's words (docs/contract.md, errors), without an
 * HTTP status. Domain code throws these; the edge (`shared/platform/http.ts`) chooses the status
 * once, for every function.
 */

/** The contract's codes a domain flow can end with. */
export type DomainErrorCode =
  | "invalid_request"
  | "unauthorized"
  | "account_not_found"
  | "client_not_found"
  | "mp_not_connected"
  | "mp_reauth_required"
  | "account_linked_elsewhere"
  | "unavailable";

/** A flow that cannot do what it was asked, for a reason the caller is told (`code`). */
export class DomainError extends Error {
  constructor(readonly code: DomainErrorCode, message: string) {
    super(message);
    this.name = "DomainError";
  }
}
