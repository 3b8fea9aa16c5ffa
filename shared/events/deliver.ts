/**
 * mp-deliver-events (docs/contract.md, "mp-deliver-events"): POSTs the due events of the outbox
 * to `PLATFORM_WEBHOOK_URL`,
 * signed as Standard Webhooks (`sign.ts`). At least once (an event is marked delivered only
 * after a 2xx), in order per account (only each account's oldest pending event is claimed),
 * one attempt at most `PLATFORM_WEBHOOK_TIMEOUT_MS` (15 s), redirects not followed (a 3xx is
 * a failure), retries on the schedule of `schedule.ts`, then `failed`. A run is bounded by its
 * `limit` and a time budget well inside the edge runtime's wall clock. `CONNECTION_CHANGES` is
 * what a function that changes connection states declares (`defineFunction`'s `changes`): after
 * each of its requests the platform runs `deliverSoon`, a small delivery in the background.
 * A failed attempt is recorded naming the receiver's host and the cause (`attemptError`).
 */
import { MisconfiguredError, WEBHOOK_VARIABLES } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import type { ChangeFollowUp } from "../platform/http.ts";
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
const DELIVER_DEFAULT_LIMIT = 500;
/** The largest `limit` a caller may ask for (docs/contract.md, "mp-deliver-events"). */
export const DELIVER_MAX_LIMIT = 1000;
/** After this long a run claims nothing new. */
const DELIVER_BUDGET_MS = 40_000;
/** Deliveries in flight at once. */
const DELIVER_CONCURRENCY = 16;
/** Events claimed per round trip. */
const CLAIM_BATCH = 100;
/** `expiring` events written per run at most. */
const EXPIRING_PER_RUN = 500;

/** What a run is asked. */
interface DeliverOptions {
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
interface DeliverRun extends DeliverReport {
  /** Claimed `limit` events, or stopped by its budget after claiming some: not drained. */
  full: boolean;
  /** Whether PLATFORM_WEBHOOK_URL was set (recorded with the run; mp-health reads it). */
  delivery: "on" | "off";
}

/** Where events go, or undefined when delivery is off (PLATFORM_WEBHOOK_URL unset). */
interface WebhookTarget {
  url: string;
  secrets: string[];
  timeoutMs: number;
}

/** The configured target; throws `MisconfiguredError` when a PLATFORM_WEBHOOK_* is malformed. */
function webhookTarget(ctx: Context): WebhookTarget | undefined {
  for (const name of WEBHOOK_VARIABLES) {
    const reason = ctx.config.problems.get(name);
    if (reason) throw new MisconfiguredError(name, reason);
  }
  const { platformWebhookUrl: url, platformWebhookSecrets: secrets } = ctx.config;
  return url && secrets
    ? { url, secrets, timeoutMs: ctx.config.platformWebhookTimeoutMs }
    : undefined;
}

/** Why an attempt got no HTTP answer. */
type NoAnswer = "refused" | "dns" | "tls" | "timeout" | "closed" | "blocked" | "network";

/**
 * What a thrown `fetch` error means, read from its name and its (nested) causes' messages, which
 * are never recorded themselves (they may carry the URL). Pure.
 */
export function noAnswerOf(err: unknown): NoAnswer {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    const x = e as { name?: unknown; message?: unknown; code?: unknown; cause?: unknown };
    parts.push(String(x.name ?? ""), String(x.message ?? ""), String(x.code ?? ""));
    e = x.cause;
  }
  const text = parts.join(" ").toLowerCase();
  if (/timeouterror|timed out|\btimeout\b/.test(text)) return "timeout";
  if (/connection refused|econnrefused/.test(text)) return "refused";
  if (
    /dns error|failed to lookup address|name or service not known|no address associated|nodename nor servname|getaddrinfo|enotfound|name resolution/
      .test(text)
  ) return "dns";
  if (/\btls\b|\bssl\b|certificate|handshake|corrupt message|invalidcontenttype/.test(text)) {
    return "tls";
  }
  if (/requests to port \d+ are blocked/.test(text)) return "blocked";
  if (
    /connection reset|connection closed|broken pipe|incomplete message|econnreset|unexpected eof|connection aborted/
      .test(text)
  ) return "closed";
  return "network";
}

/** The receiver as an error names it: host and port only (never its path, query or user). Pure. */
export function receiverHost(url: string): string {
  try {
    return new URL(url).host || "the receiver";
  } catch {
    return "the receiver";
  }
}

/**
 * A failed attempt in words, naming the receiver's host and the cause: refused, DNS, TLS,
 * timeout, closed, or the HTTP status it answered (never a secret or signature). Pure.
 */
export function attemptError(
  host: string,
  answer: { status: number } | { noAnswer: NoAnswer },
  timeoutMs: number,
): string {
  if ("status" in answer) {
    return answer.status >= 300 && answer.status < 400
      ? `${host} answered ${answer.status} (a redirect, not followed)`
      : `${host} answered ${answer.status}`;
  }
  switch (answer.noAnswer) {
    case "refused":
      return `${host} refused the connection`;
    case "dns":
      return `${host}: DNS lookup failed`;
    case "tls":
      return `${host}: TLS handshake failed`;
    case "timeout":
      return `${host} timed out after ${timeoutMs / 1000} s`;
    case "closed":
      return `${host} closed the connection without an answer`;
    case "blocked":
      return `${host}: the runtime blocks requests to this port`;
    case "network":
      return `${host} could not be reached (network error)`;
  }
}

/** What one HTTP answer (or its absence) means for an attempt to `host`. Pure. */
export function attemptResult(
  host: string,
  answer: { status: number } | { noAnswer: NoAnswer },
  timeoutMs: number,
): { ok: true } | { ok: false; error: string } {
  if ("status" in answer && answer.status >= 200 && answer.status < 300) return { ok: true };
  return { ok: false, error: attemptError(host, answer, timeoutMs) };
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
    return attemptResult(receiverHost(target.url), { status: res.status }, target.timeoutMs);
  } catch (err) {
    return attemptResult(
      receiverHost(target.url),
      { noAnswer: noAnswerOf(err) },
      target.timeoutMs,
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
      // Fewer than asked and none settled: nothing else is claimable now. A delivered (or
      // failed) event lets its account's next event go, so the run claims again.
      if (batch.length < asked && outcomes.every((o) => o.outcome === "retry")) drained = true;
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
  return { delivered, failed, pending, full, delivery: target ? "on" : "off" };
}

/** Events a background delivery handles at most per round (the schedule does the rest). */
const DELIVER_SOON_LIMIT = 50;
let running: Promise<void> | undefined;
/** Asked again while a delivery ran: by whom (its request's log goes with the next round). */
let again: { ctx: Context; log: Logger } | undefined;

/**
 * Delivers what is due, in the background of a request that may have changed a connection
 * (the platform runs it after the answer: `CONNECTION_CHANGES`). One at a time per isolate:
 * asked while one runs, that one runs another round when it ends, so a change committed before
 * the call is always tried. Never throws (errors are logged); nothing when PLATFORM_WEBHOOK_URL
 * is unset or malformed (mp-deliver-events names the variable).
 */
function deliverSoon(ctx: Context, log: Logger): Promise<void> {
  try {
    if (!webhookTarget(ctx)) return Promise.resolve();
  } catch {
    return Promise.resolve();
  }
  if (running) {
    again = { ctx, log };
    return running;
  }
  const rounds = async (caller: { ctx: Context; log: Logger }) => {
    for (;;) {
      const { ctx, log } = caller;
      again = undefined;
      await deliverEvents(ctx, log, {
        limit: DELIVER_SOON_LIMIT,
        budgetMs: 20_000,
        skipExpiring: true,
      }).catch((err) => log.warn("Background event delivery failed", { error: err }));
      // Checked and cleared in one step: a call that comes later finds nothing running.
      if (!again || shutdownReason()) {
        running = again = undefined;
        return;
      }
      caller = again;
    }
  };
  running = rounds({ ctx, log });
  return running;
}

/**
 * What a function that changes connection states declares (`changes` of `defineFunction`):
 * after each of its requests that was not refused, the events the change wrote are delivered
 * in the background (`deliverSoon`).
 */
export const CONNECTION_CHANGES: ChangeFollowUp = {
  name: "connection",
  run: deliverSoon,
};
