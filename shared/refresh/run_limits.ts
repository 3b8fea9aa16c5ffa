/**
 * How much one refresh run takes on: how many accounts it claims, how long it may start
 * MercadoPago calls, and how long its claim holds an account (docs/contract.md, mp-refresh).
 */

/** Accounts a run claims when the caller gives no limit. */
export const DEFAULT_LIMIT = 100;
/** Accounts one run may be asked to claim at most (docs/contract.md, "The functions"). */
export const REFRESH_MAX_LIMIT = 500;
/** After this long a run starts no new MercadoPago call (Edge Functions stop at 150 s). */
export const RUN_BUDGET_MS = 100_000;
/** How long a claim holds an account: far longer than a run plus one MercadoPago call. */
export const LEASE_MS = 5 * 60_000;
