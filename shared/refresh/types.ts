/**
 * What a refresh run is asked, what it answers, and the state its steps share and hand on
 * (docs/contract.md, mp-refresh). Types only.
 */
import type { AuditEvent } from "../store/audit.ts";
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import type { AccountRow } from "../store/accounts.ts";
import type { ClaimedAccount } from "../store/refresh_leases.ts";

/** What one run is asked to do. */
export interface RefreshOptions {
  /** How many due accounts to claim (1–500). */
  limit?: number;
  /** Only this account. */
  accountId?: string;
  /** Refresh even when not due, backing off or needing re-authorization (never a live lease). */
  force?: boolean;
  requestId?: string;
  /** Overrides `RUN_BUDGET_MS` (`run_limits.ts`). */
  budgetMs?: number;
  /** Overrides `LEASE_MS` (`run_limits.ts`). */
  leaseMs?: number;
}

/** What happened to one claimed account. */
export type RefreshStatus =
  | "refreshed"
  | "escrow_applied"
  | "escrowed"
  | "failed"
  | "at_risk"
  | "reauth_required"
  | "superseded"
  | "skipped";

/** One account's line in the answer: its status and, when not refreshed, why. */
export interface RefreshResult {
  account_id: string;
  status: RefreshStatus;
  error?: string;
}

/** The answer of a run (docs/contract.md, mp-refresh). */
export interface RefreshReport {
  claimed: number;
  refreshed: number;
  /** Failed this run, including those left at risk (result status `at_risk`). */
  failed: number;
  reauth_required: number;
  results: RefreshResult[];
}

/**
 * One application's circuit breaker in a run: unknown outcomes in a row, whether it is open (no
 * more calls this run), and its persisted breaker's half-open trial (`app_breaker.ts`): `due`
 * (the backoff is over: this run may claim it), `held` (claimed: the next account to call makes
 * it); `trialCall` while the trial's call is in flight (the site's other accounts wait for it);
 * `openUntil`, the end of its persisted backoff.
 */
export interface Breaker {
  unknownInARow: number;
  open: boolean;
  trial?: "due" | "held";
  trialCall?: Promise<void>;
  /** The end of the persisted breaker's backoff (epoch ms), when known: spared accounts wait for it. */
  openUntil?: number;
}

/**
 * What a run shares among its accounts: who it is (the lease owner), its budget, and a circuit
 * breaker per application (unknown outcomes in a row, `outcome.ts`: one site's MercadoPago
 * failing stops only that site's calls). Everything else an account's steps produce is
 * returned to the run as an {@link AccountOutcome}.
 */
export interface Run {
  ctx: Context;
  log: Logger;
  owner: string;
  requestId?: string;
  budgetEnd: number;
  /**
   * The circuit breaker of each application (by site) that was called this run, or that the
   * Admin DB holds open or half open (`mp_app_breakers`, read as the run starts).
   */
  breakers: Map<string, Breaker>;
}

/** Why a run spares an account whose site's MercadoPago is failing, and how long it waits. */
export interface Deferral {
  error: string;
  retryAfterMs: number;
}

/**
 * What one account's steps came to, before it is recorded (`recordEnding` in `record.ts`
 * writes what it must and turns it into the account's {@link AccountOutcome}):
 * - `skipped`: not refreshed this run (its lease released, or deferred: `defer`);
 * - `superseded`: newer credentials (or another owner) won the compare-and-swap;
 * - `saved`: a pair saved at the claimed version (`refreshed`, or `escrow_applied`); `accessToken`
 *   is the plaintext it was encrypted from;
 * - `escrowed`: the Admin DB did not take the pair, the Backend DB keeps it; `token_lost`: neither;
 * - `failed`: a transient failure (`unsent`: provably never reached MercadoPago);
 * - `needs_reauth`: MercadoPago refused the grant, or answered for another seller;
 * - `at_risk`: the outcome is unknown (the call may have reached MercadoPago);
 * - `escrow_rejected`: an escrowed pair failed verification; `escrow_apply_failed`: the Admin DB
 *   did not take a verified one.
 *
 * `discardedEscrow`: the base version of an escrowed pair from an older version, discarded
 * before the call.
 */
export type Ending =
  & (
    | { kind: "skipped"; reason: string; defer?: Deferral }
    | { kind: "superseded" }
    | {
      kind: "saved";
      row: AccountRow;
      status: "refreshed" | "escrow_applied";
      accessToken?: string;
    }
    | { kind: "escrowed" }
    | { kind: "token_lost" }
    | { kind: "failed"; error: string; unsent: boolean; retryAfterMs?: number }
    | { kind: "needs_reauth"; reason: "invalid_grant" | "seller_mismatch" }
    | { kind: "at_risk"; error: string }
    | { kind: "escrow_rejected"; reason: string }
    | { kind: "escrow_apply_failed" }
  )
  & { discardedEscrow?: number };

/**
 * A pair saved this run, whose cache is written with the others' at the run's end
 * (`syncSavedToCache` in `run_end.ts`); `accessToken` is the plaintext it was encrypted from, so
 * it is not decrypted again in the same process.
 */
export interface SavedPair {
  account: ClaimedAccount;
  row: AccountRow;
  status: "refreshed" | "escrow_applied";
  accessToken?: string;
}

/**
 * What one account's way through a run produced: its line in the answer, its audit events,
 * whether the run must release its lease (`release`: nothing was recorded that released it),
 * or defer it (`defer`: its site's MercadoPago is failing, see `deferralOf`), and the pair it
 * saved.
 */
export interface AccountOutcome {
  result: RefreshResult;
  events: AuditEvent[];
  release?: boolean;
  defer?: Deferral;
  saved?: SavedPair;
}
