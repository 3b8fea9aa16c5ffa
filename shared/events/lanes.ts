/**
 * Bursts (100,000 events within 15 minutes: docs/events.md, "Bursts"): a run of
 * mp-deliver-events that used its whole limit (or its budget) while events are still due
 * starts successors of itself — POSTs to its own URL with the project's secret key, carrying
 * `{"limit"}` with its link in the `x-mp-delivery-chain` header — so a burst drains in parallel lanes while an idle outbox costs one
 * small scheduled run a minute. Bounded three ways: the scheduled run (a root, no `chain`)
 * opens at most {@link DELIVER_LANES} lanes minus the runs already delivering, a lane run
 * continues itself with one successor only while fewer than that many others deliver, and no
 * chain goes past {@link DELIVER_CHAIN_MAX} links (the next schedule's root picks up what is
 * left). Parallel runs keep the order per account: `mp_claim_events` leases only an account's
 * oldest pending event, under `for update skip locked`.
 */
import type { Context } from "../platform/context.ts";
import { DomainError } from "../platform/errors.ts";
import type { Logger } from "../platform/log.ts";
import { readBacklog } from "../store/events.ts";
import { DELIVER_MAX_LIMIT, deliverEvents, type DeliverReport } from "./deliver.ts";

/** Runs delivering in parallel at most (lanes opened by one scheduled run). */
export const DELIVER_LANES = 4;
/**
 * The header a run sets on the successors it starts: their link in the chain (1 to
 * {@link DELIVER_CHAIN_MAX}). A header, so the body stays the contract's `{"limit"?}`.
 */
export const CHAIN_HEADER = "x-mp-delivery-chain";
/** The header of the answer saying how many successors the run started. */
export const CONTINUED_HEADER = "x-mp-delivery-continued";

/**
 * A run's link in its chain from its request's {@link CHAIN_HEADER}: 0 when absent (a scheduled
 * or manual run), the link when it is an integer from 1 to `max`, else undefined (malformed).
 */
function chainOf(header: string | null, max = DELIVER_CHAIN_MAX): number | undefined {
  if (header === null) return 0;
  if (!/^[0-9]{1,3}$/.test(header)) return undefined;
  const n = Number(header);
  return n >= 1 && n <= max ? n : undefined;
}

/** Links of one chain at most (`chain` of a successor: 1 to this). */
export const DELIVER_CHAIN_MAX = 30;
/**
 * How long a run waits for a successor's answer: past it the successor is running (the
 * gateway has its request) and the run stops waiting, without cancelling it.
 */
const SUCCESSOR_ACK_MS = 1_000;

/** What decides how many successors a run starts. */
interface LanePlan {
  /** The run's link in its chain: 0 for a scheduled (or manual) run, 1… for successors. */
  chain: number;
  /** Whether the run used its whole limit or budget (more may be due). */
  full: boolean;
  /** Events due and unleased now (counted up to a cap). */
  due: number;
  /** Other runs delivering now (holding leases). */
  active: number;
  /** Events one successor delivers at most. */
  limit: number;
}

/** How many successors a run starts. Pure. */
export function successorsToStart(
  p: LanePlan,
  lanes = DELIVER_LANES,
  chainMax = DELIVER_CHAIN_MAX,
): number {
  if (!p.full || p.due <= 0 || p.chain >= chainMax) return 0;
  // A lane continues itself, unless enough others already deliver.
  if (p.chain > 0) return p.active < lanes ? 1 : 0;
  // A root opens the lanes the backlog fills, up to `lanes` runs delivering in all.
  return Math.max(0, Math.min(lanes - p.active, Math.ceil(p.due / Math.max(1, p.limit))));
}

/** The key a run calls its successors with: a secret key (`sb_secret_…`) when there is one. */
function successorKey(ctx: Context): string | undefined {
  const keys = ctx.config.serverKeys ?? [];
  return keys.find((k) => k.startsWith("sb_secret_")) ?? keys[0];
}

/** Starts one successor; whether it is running (or ran). Never throws. */
async function startOne(
  url: URL,
  key: string,
  body: string,
  chain: number,
  log: Logger,
): Promise<boolean> {
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: {
        apikey: key,
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        [CHAIN_HEADER]: String(chain),
      },
      body,
      signal: AbortSignal.timeout(SUCCESSOR_ACK_MS),
    });
    await res.body?.cancel().catch(() => {});
    if (res.ok) return true; // a short run: it already finished
    log.warn("Delivery successor refused", { status: res.status });
    return false;
  } catch (err) {
    // No answer yet: the successor has its request and delivers; dropping the connection
    // does not stop it (the edge runtime runs a request to its end).
    if ((err as Error)?.name === "TimeoutError") return true;
    log.warn("Delivery successor not started", { error: (err as Error)?.name ?? "Error" });
    return false;
  }
}

/**
 * After a run: starts the successors {@link successorsToStart} asks for and answers how many
 * started. Waits at most {@link SUCCESSOR_ACK_MS} (no CPU) so a retiring isolate cannot drop
 * them; never throws.
 */
async function continueDelivery(
  ctx: Context,
  log: Logger,
  run: { chain: number; full: boolean; limit?: number },
): Promise<number> {
  if (!run.full || run.chain >= DELIVER_CHAIN_MAX) return 0;
  const limit = run.limit ?? DELIVER_MAX_LIMIT;
  try {
    const backlog = await ctx.admin((sql) => readBacklog(sql, DELIVER_LANES * limit));
    const n = successorsToStart({ chain: run.chain, full: run.full, limit, ...backlog });
    if (n === 0) return 0;
    const key = successorKey(ctx);
    const base = ctx.config.supabaseUrl;
    if (!base || !key) {
      log.warn("Delivery not continued: SUPABASE_URL or a secret key is not set");
      return 0;
    }
    const url = new URL("functions/v1/mp-deliver-events", base.endsWith("/") ? base : `${base}/`);
    const body = JSON.stringify({ limit });
    const started = await Promise.all(
      Array.from({ length: n }, () => startOne(url, key, body, run.chain + 1, log)),
    );
    const count = started.filter(Boolean).length;
    log.info("Delivery continued", {
      chain: run.chain + 1,
      successors: count,
      due: backlog.due,
      active: backlog.active,
    });
    return count;
  } catch (err) {
    log.warn("Delivery not continued", { error: err });
    return 0;
  }
}

/** One run of mp-deliver-events: its answer, whether delivery is on, its link, its successors. */
interface LaneRun {
  report: DeliverReport;
  delivery: "on" | "off";
  chain: number;
  continued: number;
}

/**
 * One run of mp-deliver-events: its link in its chain from the request's {@link CHAIN_HEADER}
 * (`invalid_request` when malformed), what is due delivered (`deliverEvents`), then the
 * successors {@link continueDelivery} starts.
 */
export async function deliverInLane(
  ctx: Context,
  log: Logger,
  opts: { chainHeader: string | null; limit?: number },
): Promise<LaneRun> {
  const chain = chainOf(opts.chainHeader);
  if (chain === undefined) {
    throw new DomainError(
      "invalid_request",
      `${CHAIN_HEADER}: must be an integer from 1 to ${DELIVER_CHAIN_MAX}`,
    );
  }
  const { full, delivery, ...report } = await deliverEvents(ctx, log, { limit: opts.limit });
  const continued = await continueDelivery(ctx, log, { chain, full, limit: opts.limit });
  return { report, delivery, chain, continued };
}
