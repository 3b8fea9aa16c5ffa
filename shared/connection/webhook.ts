/**
 * MercadoPago `mp-connect` notifications (docs/contract.md, "mp-webhook"): the application they
 * are for (`?app=<site>`; none: the default one), the strictly parsed signature first (401; any
 * of that application's webhook secrets may match), then the body, then the delivery claimed
 * in one statement so a repeat changes nothing; `application.deauthorized` is confirmed with
 * MercadoPago account by account, among that application's accounts, before anything is
 * revoked (503 when MercadoPago cannot be asked, so it delivers again).
 */
import * as v from "valibot";
import { isMpSite, type MpApp } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import { DomainError } from "../platform/errors.ts";
import { validate } from "../platform/input.ts";
import type { Logger } from "../platform/log.ts";
import { MpError } from "../mercadopago/api.ts";
import { verifySignatureWithAny } from "../mercadopago/signature.ts";
import { claimDelivery, finishDelivery } from "../store/webhook_deliveries.ts";
import { recordEvent } from "../store/audit.ts";
import { confirmDeauthorization } from "./deauthorization.ts";

/** A MercadoPago seller id, as a number or a numeric string. */
const sellerId = v.union([
  v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER)),
  v.pipe(v.string(), v.regex(/^[1-9]\d{0,14}$/), v.transform(Number)),
]);

/** A short name MercadoPago gives (action, type): bounded, since it is stored. */
const name = v.pipe(v.string(), v.regex(/^[A-Za-z0-9._-]{1,64}$/, "must be a short name"));

/** The fields of a notification this function reads; MercadoPago may send more. */
const Notification = v.looseObject({
  type: v.optional(name),
  action: v.optional(name),
  user_id: v.optional(sellerId),
});

/** `data.id` of the query string (where MercadoPago signs it from), else of the body. */
function dataId(url: URL, body: Record<string, unknown> | undefined): string | null {
  const fromQuery = url.searchParams.get("data.id");
  if (fromQuery !== null) return fromQuery;
  const id = (body?.data as Record<string, unknown> | undefined)?.id;
  return typeof id === "string" || typeof id === "number" ? String(id) : null;
}

/** A notification as it arrived: headers that matter, the URL, the parsed body or why it would not parse. */
interface Delivery {
  signature: string | null;
  mpRequestId: string | null;
  url: URL;
  body: Record<string, unknown> | undefined;
  /** The 400 the body earned, answered only once the signature is good. */
  malformed: DomainError | undefined;
}

/** What the webhook answers with 200. */
interface WebhookAnswer {
  received: true;
  action: string;
  duplicate?: true;
  revoked?: number;
  unconfirmed?: number;
}

/**
 * The application a delivery is for: `?app=<site>` when it names a site this configuration has
 * an application for, the default application without `?app`; undefined otherwise (nothing can
 * verify the delivery, so it is refused as unsigned: 401).
 */
export function webhookApp(config: Context["config"], url: URL): MpApp | undefined {
  const named = url.searchParams.getAll("app");
  if (named.length > 1) return undefined;
  const site = named.length === 1 ? named[0] : config.mpDefaultSite;
  return isMpSite(site) ? config.mpApps.get(site) : undefined;
}

/**
 * The notification behind a delivery whose signature holds under one of its application's
 * secrets (DomainError `unauthorized` when it does not, or names no application of ours; 400
 * when the body is malformed or a deauthorization names no seller).
 */
async function verifiedNotification(
  ctx: Context,
  log: Logger,
  delivery: Delivery,
): Promise<{ app: MpApp; action: string; type?: string; mpUserId: number | null }> {
  const { body, malformed } = delivery;
  const app = webhookApp(ctx.config, delivery.url);
  if (!app) {
    log.warn("MP webhook for no application of this configuration refused", {
      app: (delivery.url.searchParams.get("app") ?? "").slice(0, 8).replace(/[^A-Za-z]/g, "?"),
    });
    throw new DomainError("unauthorized", "unknown application");
  }
  const check = await verifySignatureWithAny(app.webhookSecrets, {
    header: delivery.signature,
    requestId: delivery.mpRequestId,
    dataId: dataId(delivery.url, body),
  });
  if (!check.ok) {
    log.warn("MP webhook signature refused", { reason: check.reason, site: app.site });
    throw new DomainError("unauthorized", "missing, invalid or stale x-signature");
  }
  if (malformed) throw malformed;
  const note = validate(Notification, body);
  const action = note.action ?? note.type ?? "unknown";
  if (action === "application.deauthorized" && note.user_id === undefined) {
    throw new DomainError("invalid_request", "user_id: required for application.deauthorized");
  }
  return { app, action, type: note.type, mpUserId: note.user_id ?? null };
}

/**
 * A claimed `application.deauthorized`: confirms and revokes the seller's accounts, then
 * finishes the delivery (failed, so it can be claimed again, when MercadoPago cannot be asked: 503).
 */
async function handleDeauthorization(
  ctx: Context,
  log: Logger,
  app: MpApp,
  deliveryId: string,
  mpUserId: number,
  requestId: string,
): Promise<{ revoked: number; unconfirmed: number }> {
  let outcome;
  try {
    outcome = await confirmDeauthorization(ctx, log, app, mpUserId, requestId);
  } catch (err) {
    await ctx.admin((sql) => finishDelivery(sql, deliveryId, "failed")).catch(() => {});
    if (!(err instanceof MpError)) throw err;
    log.warn("MP deauthorization could not be confirmed: MercadoPago unreachable", {
      mp_user_id: mpUserId,
      site: app.site,
      kind: err.kind,
      status: err.status,
    });
    throw new DomainError("unavailable", "MercadoPago could not be asked; deliver again");
  }
  await ctx.admin((sql) => finishDelivery(sql, deliveryId, "done"));
  await recordEvent(ctx, log, {
    event: "deauthorized",
    detail: {
      mp_user_id: mpUserId,
      site: app.site,
      revoked: outcome.revoked.length,
      unconfirmed: outcome.unconfirmed.length,
    },
    requestId,
  });
  log.info("MP deauthorization handled", {
    mp_user_id: mpUserId,
    site: app.site,
    revoked: outcome.revoked,
    unconfirmed: outcome.unconfirmed,
    undecryptable: outcome.undecryptable,
  });
  return { revoked: outcome.revoked.length, unconfirmed: outcome.unconfirmed.length };
}

/** Verifies, claims and acts on one delivery (DomainError when it must not be acted on). */
export async function handleNotification(
  ctx: Context,
  log: Logger,
  delivery: Delivery,
  requestId: string,
): Promise<WebhookAnswer> {
  const { app, action, type, mpUserId } = await verifiedNotification(ctx, log, delivery);
  const deliveryId = delivery.mpRequestId!;
  if (!(await ctx.admin((sql) => claimDelivery(sql, deliveryId, action, mpUserId)))) {
    log.info("MP webhook delivery already handled", { action, mp_user_id: mpUserId });
    return { received: true, action, duplicate: true, revoked: 0 };
  }
  if (action !== "application.deauthorized") {
    await ctx.admin((sql) => finishDelivery(sql, deliveryId, "done"));
    log.info("MP webhook acknowledged", { action, type, mp_user_id: mpUserId, site: app.site });
    return { received: true, action };
  }
  const counts = await handleDeauthorization(ctx, log, app, deliveryId, mpUserId!, requestId);
  return { received: true, action, ...counts };
}
