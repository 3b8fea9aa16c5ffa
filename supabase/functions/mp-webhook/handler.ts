import * as v from "valibot";
import {
  defineFunction,
  HttpError,
  json,
  readInput,
  validate,
} from "../../../shared/platform/http.ts";
import { recordEvent } from "../../../shared/store/audit.ts";
import { confirmDeauthorization } from "../../../shared/connection/deauthorization.ts";
import { MpError } from "../../../shared/mercadopago/api.ts";
import {
  claimDelivery,
  finishDelivery,
  verifySignature,
} from "../../../shared/mercadopago/signature.ts";

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

/**
 * mp-webhook: MercadoPago `mp-connect` notifications, verified by a strictly parsed
 * `x-signature` (401 when missing, malformed, wrong or older than 5 minutes). Each delivery
 * (`x-request-id`) is claimed before it is acted on, so a repeat changes nothing.
 * `application.deauthorized` is confirmed with MercadoPago account by account before it
 * revokes anything; 503 when MercadoPago cannot be asked, so it delivers again.
 */
export const handler = defineFunction({
  name: "mp-webhook",
  methods: ["POST"],
  auth: "public",
  needs: ["mpWebhookSecret", "adminDbUrl", "backendDbUrl", "tokenKeys", "mpClientId"],
  async run({ req, ctx, log, requestId }) {
    let body: Record<string, unknown> | undefined;
    let malformed: HttpError | undefined;
    try {
      body = await readInput(req);
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 400)) throw err;
      malformed = err;
    }
    const mpRequestId = req.headers.get("x-request-id");
    const check = await verifySignature(ctx.config.mpWebhookSecret!, {
      header: req.headers.get("x-signature"),
      requestId: mpRequestId,
      dataId: dataId(new URL(req.url), body),
    });
    if (!check.ok) {
      log.warn("MP webhook signature refused", { reason: check.reason });
      throw new HttpError(401, "unauthorized", "missing, invalid or stale x-signature");
    }
    if (malformed) throw malformed;
    const note = validate(Notification, body);
    const action = note.action ?? note.type ?? "unknown";
    const deauthorized = action === "application.deauthorized";
    if (deauthorized && note.user_id === undefined) {
      throw new HttpError(400, "invalid_request", "user_id: required for application.deauthorized");
    }
    const delivery = mpRequestId!;
    const mpUserId = note.user_id ?? null;
    if (!(await ctx.admin((sql) => claimDelivery(sql, delivery, action, mpUserId)))) {
      log.info("MP webhook delivery already handled", { action, mp_user_id: mpUserId });
      return json(200, { received: true, action, duplicate: true, revoked: 0 });
    }
    if (!deauthorized) {
      await ctx.admin((sql) => finishDelivery(sql, delivery, "done"));
      log.info("MP webhook acknowledged", { action, type: note.type, mp_user_id: mpUserId });
      return json(200, { received: true, action });
    }

    let outcome;
    try {
      outcome = await confirmDeauthorization(ctx, log, mpUserId!, requestId);
    } catch (err) {
      await ctx.admin((sql) => finishDelivery(sql, delivery, "failed")).catch(() => {});
      if (!(err instanceof MpError)) throw err;
      log.warn("MP deauthorization could not be confirmed: MercadoPago unreachable", {
        mp_user_id: mpUserId,
        kind: err.kind,
        status: err.status,
      });
      throw new HttpError(503, "unavailable", "MercadoPago could not be asked; deliver again");
    }
    await ctx.admin((sql) => finishDelivery(sql, delivery, "done"));
    await recordEvent(ctx, log, {
      event: "deauthorized",
      detail: {
        mp_user_id: mpUserId,
        revoked: outcome.revoked.length,
        unconfirmed: outcome.unconfirmed.length,
      },
      requestId,
    });
    log.info("MP deauthorization handled", {
      mp_user_id: mpUserId,
      revoked: outcome.revoked,
      unconfirmed: outcome.unconfirmed,
      undecryptable: outcome.undecryptable,
    });
    return json(200, {
      received: true,
      action,
      revoked: outcome.revoked.length,
      unconfirmed: outcome.unconfirmed.length,
    });
  },
});
