/**
 * mp-deliver-events (docs/contract.md, "mp-deliver-events"): POSTs the due events of the outbox
 * to `PLATFORM_WEBHOOK_URL`,
 * signed as Standard Webhooks (`sign.ts`). At least once (an event is marked delivered only
 * after a 2xx), in order per account (only each account's oldest pending event is claimed),
 * one attempt at most `PLATFORM_WEBHOOK_TIMEOUT_MS` (15 s), redirects not followed (a 3xx is
 * a failure), retries on the schedule of `schedule.ts`, then `failed`. A run is bounded by its
 * `limit` and a time budget well inside the edge runtime's wall clock. `deliverSoon` runs a
 * small delivery in the background of a request that made a change.
 */
import { MisconfiguredError, WEBHOOK_VARIABLES } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import { latestStart, shutdownReason } from "../platform/worker_life.ts";
import {
  type ClaimedEvent,
  claimEvents,
  type EventOutcome,
  finishEvents,
  flagExpiring,
  readOutboxTotals,
} from "../store/events.ts";
import { nextAttemptAt } from "./schedule.ts";
import { signatureHeaders, signers } from "./sign.ts";

/** Events a run delivers at most when the caller gives no limit. */
export const DELIVER_DEFAULT_LIMIT = 500;
/** The largest `limit` a caller may ask for (docs/contract.md, "mp-deliver-events"). */
export const DELIVER_MAX_LIMIT = 1000;
/** After this long a run claims nothing new. */
export const DELIVER_BUDGET_MS = 40_000;
/** Deliveries in flight at once. */
export const DELIVER_CONCURRENCY = 16;
/** Events claimed per round trip. */
const CLAIM_BATCH = 100;
/** `expiring` events written per run at most. */
const EXPIRING_PER_RUN = 500;

/** What a run is asked. */
export interface DeliverOptions {
  limit?: number;
  /** Overrides {@link DELIVER_BUDGET_MS}. */
  budgetMs?: number;
  /** Skip writing `expiring` events (the background delivery does). */
  skipExpiring?: boolean;
}

/** The answer of mp-deliver-events (docs/contract.md, "mp-deliver-events"). */
export interface DeliverReport {
  delivered: number;
  failed: number;
  pending: number;
}

/** A run's report, and whether it used its whole limit or budget (more may be due). */
export interface DeliverRun extends DeliverReport {
  /** Claimed `limit` events, or stopped by its budget after claiming some: not drained. */
  full: boolean;
}

/** Where events go, or undefined when delivery is off (PLATFORM_WEBHOOK_URL unset). */
export interface WebhookTarget {
  url: string;
  secrets: string[];
  timeoutMs: number;
}

/** The configured target; throws `MisconfiguredError` when a PLATFORM_WEBHOOK_* is malformed. */
export function webhookTarget(ctx: Context): WebhookTarget | undefined {
  for (const name of WEBHOOK_VARIABLES) {
    const reason = ctx.config.problems.get(name);
    if (reason) throw new MisconfiguredError(name, reason);
  }
  const { platformWebhookUrl: url, platformWebhookSecrets: secrets } = ctx.config;
  return url && secrets
    ? { url, secrets, timeoutMs: ctx.config.platformWebhookTimeoutMs }
    : undefined;
}

/** What one HTTP answer (or its absence) means for an attempt. Pure. */
export function attemptResult(
  status: number | null,
  error?: string,
): { ok: true } | { ok: false; error: string } {
  if (status !== null && status >= 200 && status < 300) return { ok: true };
  if (status === null) return { ok: false, error: error ?? "no answer" };
  if (status >= 300 && status < 400) {
    return { ok: false, error: `redirect ${status} (not followed)` };
  }
  return { ok: false, error: `http ${status}` };
}

/** The outcome to record for an attempt of `event` that ended with `result` at `now`. Pure. */
export function outcomeOf(
  event: Pick<ClaimedEvent, "id" | "retry_from" | "attempts">,
  result: { ok: true } | { ok: false; error: string },
  now: Date,
): EventOutcome {
  if (result.ok) return { id: event.id, outcome: "delivered" };
  const next = nextAttemptAt(event.retry_from, event.attempts, now);
  return next
    ? { id: event.id, outcome: "retry", next, error: result.error }
    : { id: event.id, outcome: "failed", error: result.error };
}

let signing: { key: string; webhooks: ReturnType<typeof signers> } | undefined;

/** One POST of one event; the attempt's result (never throws). */
async function attempt(target: WebhookTarget, event: ClaimedEvent) {
  const key = target.secrets.join(" ");
  if (signing?.key !== key) signing = { key, webhooks: signers(target.secrets) };
  const headers = signatureHeaders(signing.webhooks, event.id, new Date(), event.payload);
  try {
    const res = await fetch(target.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": "mp-credential-sync/events",
        ...headers,
      },
      body: event.payload,
      redirect: "manual",
      signal: AbortSignal.timeout(target.timeoutMs),
    });
    await res.body?.cancel().catch(() => {});
    return attemptResult(res.status);
  } catch (err) {
    const e = err as Error;
    return attemptResult(
      null,
      e?.name === "TimeoutError" ? `timeout after ${target.timeoutMs} ms` : `network: ${e?.name}`,
    );
  }
}

/** Whether a run may claim more: not after its budget, the isolate's wall clock or `beforeunload`. */
function mayClaim(ctx: Context, budgetEnd: number, target: WebhookTarget): boolean {
  const now = Date.now();
  if (shutdownReason() || now + target.timeoutMs >= budgetEnd) return false;
  const reserve = target.timeoutMs + 4 * ctx.config.dbTimeoutMs;
  return ctx.config.wallClockMs <= 0 || now < latestStart(ctx.config.wallClockMs, reserve);
}

/** Delivers what is due, up to `limit` events; writes the due `expiring` events first. */
export async function deliverEvents(
  ctx: Context,
  log: Logger,
  opts: DeliverOptions = {},
): Promise<DeliverRun> {
  const started = Date.now();
  const target = webhookTarget(ctx);
  if (!opts.skipExpiring) {
    const expiring = await ctx.admin((sql) => flagExpiring(sql, EXPIRING_PER_RUN));
    if (expiring > 0) log.info("Expiring events written", { events: expiring });
  }
  let delivered = 0;
  let failed = 0;
  let retried = 0;
  let full = false;
  if (target) {
    const owner = crypto.randomUUID();
    const limit = opts.limit ?? DELIVER_DEFAULT_LIMIT;
    const budgetEnd = started + (opts.budgetMs ?? DELIVER_BUDGET_MS);
    const leaseMs = 2 * target.timeoutMs + 60_000;
    let claimed = 0;
    let drained = false;
    while (claimed < limit && mayClaim(ctx, budgetEnd, target)) {
      const asked = Math.min(CLAIM_BATCH, limit - claimed);
      const batch = await ctx.admin((sql) => claimEvents(sql, { owner, limit: asked, leaseMs }));
      if (batch.length === 0) {
        drained = true;
        break;
      }
      // Fewer than asked: nothing else is claimable now (due, unleased, first of its account).
      if (batch.length < asked) drained = true;
      claimed += batch.length;
      const outcomes: EventOutcome[] = [];
      let next = 0;
      const worker = async () => {
        while (next < batch.length) {
          const event = batch[next++];
          outcomes.push(outcomeOf(event, await attempt(target, event), new Date()));
        }
      };
      await Promise.all(
        Array.from({ length: Math.min(DELIVER_CONCURRENCY, batch.length) }, worker),
      );
      await ctx.admin((sql) => finishEvents(sql, owner, outcomes));
      for (const o of outcomes) {
        if (o.outcome === "delivered") delivered++;
        else if (o.outcome === "failed") failed++;
        else retried++;
      }
      const errors = outcomes.filter((o) => o.error);
      if (errors.length > 0) {
        log.warn("Event deliveries failed", {
          failed: errors.length,
          error: errors[0].error,
          event_id: errors[0].id,
        });
      }
      if (drained) break;
    }
    full = !drained && claimed > 0;
  }
  const { pending } = await ctx.admin((sql) => readOutboxTotals(sql));
  log.info("Event delivery run finished", {
    delivery: target ? "on" : "off",
    delivered,
    retried,
    failed,
    pending,
    full,
    duration_ms: Date.now() - started,
  });
  return { delivered, failed, pending, full };
}

/** Events a background delivery handles at most (the schedule does the rest). */
export const DELIVER_SOON_LIMIT = 50;
let soon: Promise<unknown> | undefined;

/**
 * Delivers what is due in the background of the current request, right after it changed a
 * connection: `EdgeRuntime.waitUntil` keeps the isolate alive for it where the runtime has
 * it; elsewhere it simply runs on. Never delays the answer, never throws (errors are logged);
 * at most one at a time per isolate. Off when PLATFORM_WEBHOOK_URL is unset.
 */
export function deliverSoon(ctx: Context, log: Logger): void {
  try {
    if (soon || !webhookTarget(ctx)) return;
  } catch {
    return; // misconfigured: mp-deliver-events names the variable
  }
  const work = deliverEvents(ctx, log.child({ background: "deliver-events" }), {
    limit: DELIVER_SOON_LIMIT,
    budgetMs: 20_000,
    skipExpiring: true,
  }).catch((err) => log.warn("Background event delivery failed", { error: err }))
    .finally(() => {
      soon = undefined;
    });
  soon = work;
  const runtime = (globalThis as { EdgeRuntime?: { waitUntil?(p: Promise<unknown>): void } })
    .EdgeRuntime;
  runtime?.waitUntil?.(work);
}
