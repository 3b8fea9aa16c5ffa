/**
 * The one error vocabulary: what went wrong in the contract's words (docs/contract.md, "Errors"),
 * without an HTTP status. Domain code throws `DomainError`; the platform's own failures
 * (configuration, decryption, a database) are the classes `failureOf` knows; the edge
 * (`shared/platform/http.ts`) alone turns a code into a status, once, for every function.
 */
import { MisconfiguredError } from "./config.ts";
import { DecryptError, logDecryptFailure } from "./crypto.ts";
import { UnavailableError } from "./db.ts";
import type { Logger } from "./log.ts";

/** The contract's codes a domain flow can end with. */
type DomainErrorCode =
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

/** Every code a thrown error can end as: a domain code or one of the platform's failures. */
export type FailureCode = DomainErrorCode | "misconfigured" | "decrypt_failed" | "internal";

/** A thrown error in the contract's words: its code and the message the caller may read. */
interface Failure {
  code: FailureCode;
  message: string;
}

/**
 * What a thrown error means (docs/contract.md, "Errors"), logging what a person needs: a
 * refusal at info with its code, a failure at error with its cause. No status: the edge
 * chooses it from the code.
 */
export function failureOf(err: unknown, log: Logger): Failure {
  if (err instanceof DomainError) {
    log.info("Request refused", { code: err.code, reason: err.message });
    return { code: err.code, message: err.message };
  }
  if (err instanceof MisconfiguredError) {
    log.error("Function misconfigured", { variable: err.variable, reason: err.reason });
    return { code: "misconfigured", message: `${err.variable} is missing or malformed` };
  }
  if (err instanceof DecryptError) {
    logDecryptFailure(log, err.accountId, err.field);
    return { code: "decrypt_failed", message: "stored MP credentials could not be decrypted" };
  }
  if (err instanceof UnavailableError) {
    log.error("Database unavailable", { database: err.database, error: err.cause });
    return { code: "unavailable", message: "the database could not be reached" };
  }
  log.error("Unhandled error", { error: err });
  return { code: "internal", message: "internal error" };
}
