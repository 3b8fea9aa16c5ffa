/**
 * What a refresh run is asked, what it answers, and the state its steps share
 * (docs/contract.md, mp-refresh).
 */
import type { AuditEvent } from "../store/audit.ts";
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import type { AccountRow } from "../store/accounts.ts";
import type { ClaimedAccount } from "../store/refresh_leases.ts";

/** Accounts a run claims when the caller gives no limit. */
export const DEFAULT_LIMIT = 100;
/** Accounts one run may be asked to claim at most (docs/contract.md, "The functions"). */
export const REFRESH_MAX_LIMIT = 500;
/** After this long a run starts no new MercadoPago call (Edge Functions stop at 150 s). */
export const RUN_BUDGET_MS = 100_000;
/** How long a claim holds an account: far longer than a run plus one MercadoPago call. */
export const LEASE_MS = 5 * 60_000;

/** What one run is asked to do. */
export interface RefreshOptions {
  /** How many due accounts to claim (1–500). */
  limit?: number;
  /** Only this account. */
  accountId?: string;
  /** Refresh even when not due, backing off or needing re-authorization (never a live lease). */
  force?: boolean;
  requestId?: string;
  /** Overrides {@link RUN_BUDGET_MS}. */
  budgetMs?: number;
  /** Overrides {@link LEASE_MS}. */
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

/** One application's circuit breaker in a run: unknown outcomes in a row, and whether it is open. */
export interface Breaker {
  unknownInARow: number;
  open: boolean;
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
  /** The circuit breaker of each application (by site) that was called this run. */
  breakers: Map<string, Breaker>;
}

/** The run's circuit breaker for the application of `site` (closed until it opens). */
export function breakerOf(run: Run, site: string): Breaker {
  let breaker = run.breakers.get(site);
  if (!breaker) run.breakers.set(site, breaker = { unknownInARow: 0, open: false });
  return breaker;
}

/**
 * A pair saved this run, whose cache is written with the others' at the run's end
 * (`syncSaved`); `accessToken` is the plaintext it was encrypted from, so it is not decrypted
 * again in the same process.
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
  defer?: { error: string; retryAfterMs: number };
  saved?: SavedPair;
}

/** Waits `ms` milliseconds. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
