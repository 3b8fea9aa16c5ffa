/**
 * How often and how soon the refresh tries again: the backoff of failures MercadoPago provably
 * did not process, and the pauses between attempts to keep a pair MercadoPago handed out.
 */
import type { Backoff } from "../store/refresh_leases.ts";

/** Backoff of transient failures: 5 min · 2^failures, at most 6 h. */
export const BACKOFF: Backoff = { baseMs: 5 * 60_000, capMs: 6 * 3600_000 };
/** Pauses between attempts to save a pair MercadoPago handed out (then: escrow). */
export const SAVE_RETRY_MS = [200, 800];
/** Pauses between attempts to escrow a pair the Admin DB would not take. */
export const ESCROW_RETRY_MS = [200, 800];
