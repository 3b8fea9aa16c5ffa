/**
 * The pure decision "may this run start a MercadoPago call now", and the time bounds it is
 * made from: a call starts only if it, its save (or escrow) and the run's answer fit before
 * the isolate's wall clock and the lease (docs/invariants.md, invariant 4).
 */
import type { Context } from "../platform/context.ts";
import { latestStart } from "../platform/worker_life.ts";
import { ESCROW_RETRY_MS, SAVE_RETRY_MS } from "./retry_schedules.ts";

/** Slack a MercadoPago call needs in its lease beyond the call, save and escrow bounds. */
const LEASE_SLACK_MS = 5_000;

/** Statements a run makes after its last call: lease release, cache write, audit events. */
const RUN_END_STATEMENTS = 3;

/**
 * How much lease a MercadoPago call needs left when it starts: the call's timeout, every
 * save and escrow attempt at the database time bound, their pauses, and some slack.
 */
function leaseNeededMs(config: Context["config"]): number {
  return finishNeededMs(config) + LEASE_SLACK_MS;
}

/**
 * How long a MercadoPago call may take to be over and its pair kept: the call's timeout and
 * every save and escrow attempt at the database time bound, with their pauses.
 */
function finishNeededMs(config: Context["config"]): number {
  const attempts = SAVE_RETRY_MS.length + 1 + ESCROW_RETRY_MS.length + 1;
  const pauses = [...SAVE_RETRY_MS, ...ESCROW_RETRY_MS].reduce((a, b) => a + b, 0);
  return config.mpTimeoutMs + attempts * config.dbTimeoutMs + pauses;
}

/**
 * Why a MercadoPago call may not start now, or undefined when it may: the runtime asked the
 * isolate to shut down, the run's budget is spent, the isolate's wall clock would end before
 * the call, its save and the run's answer, or the lease would end first. Pure: the clock,
 * the isolate's boot time and the shutdown reason are passed in.
 */
export function mayStartCall(
  config: Context["config"],
  at: { now: number; budgetEnd: number; leaseEnd: number; bootedAt?: number; unload?: string },
): string | undefined {
  if (at.unload) return "shutting_down";
  if (at.now >= at.budgetEnd) return "time_budget";
  // The run's end: release unused leases, write the saved accounts' caches, record events.
  const reserve = finishNeededMs(config) + RUN_END_STATEMENTS * config.dbTimeoutMs;
  if (config.wallClockMs > 0 && at.now >= latestStart(config.wallClockMs, reserve, at.bootedAt)) {
    return "wall_clock";
  }
  if (at.leaseEnd - at.now < leaseNeededMs(config)) return "lease_too_short";
  return undefined;
}
