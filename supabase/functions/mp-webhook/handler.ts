import * as v from "valibot";
import { defineFunction, HttpError, json, readInput, validate } from "../../../shared/http.ts";
import { accountsOfSeller } from "../../../shared/accounts.ts";
import { revokeConnection } from "../../../shared/connection.ts";
import { recordEvent } from "../../../shared/audit.ts";
import { isDeliveryHandled, recordDelivery, verifySignature } from "../../../shared/webhook.ts";

/** A MercadoPago seller id, as a number or a numeric string. */
const sellerId = v.union([
  v.pipe(v.number(), v.integer(), v.minValue(1)),
  v.pipe(v.string(), v.regex(/^[1-9]\d{0,14}$/), v.transform(Number)),
]);

/** The fields of a notification this function reads; MercadoPago may send more. */
const Notification = v.looseObject({
  type: v.optional(v.string()),
  action: v.optional(v.string()),
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
 * mp-webhook: MercadoPago `mp-connect` notifications, verified by `x-signature` (401 when
 * missing, wrong or older than 5 minutes). `application.deauthorized` revokes every account
 * of that seller through the same path as mp-revoke; other notifications are acknowledged.
 * A delivery already acted on (same signed x-request-id) is acknowledged and changes nothing.
 */
export const handler = defineFunction({
  name: "mp-webhook",
  methods: ["POST"],
  auth: "public",
  needs: ["mpWebhookSecret", "adminDbUrl", "backendDbUrl"],
  async run({ req, ctx, log, requestId }) {
    let body: Record<string, unknown> | undefined;
    let malformed: HttpError | undefined;
    try {
      body = await readInput(req);
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 400)) throw err;
      malformed = err;
    }
    const signature = req.headers.get("x-signature");
    const mpRequestId = req.headers.get("x-request-id");
    const check = await verifySignature(ctx.config.mpWebhookSecret!, {
      header: signature,
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

    if (action !== "application.deauthorized") {
      log.info("MP webhook acknowledged", { action, type: note.type, mp_user_id: note.user_id });
      return json(200, { received: true, action });
    }
    if (note.user_id === undefined) {
      throw new HttpError(400, "invalid_request", "user_id: required for application.deauthorized");
    }
    const mpUserId = note.user_id;
    const deliveryId = mpRequestId ?? `x-signature:${signature}`;
    if (await ctx.admin((sql) => isDeliveryHandled(sql, deliveryId))) {
      log.info("MP webhook delivery already handled", { action, mp_user_id: mpUserId });
      return json(200, { received: true, action, duplicate: true, revoked: 0 });
    }
    const accounts = await ctx.admin((sql) => accountsOfSeller(sql, mpUserId));
    for (const accountId of accounts) {
      await revokeConnection(ctx, log, accountId, { requestId, reason: "mp_deauthorized" });
    }
    await ctx.admin((sql) => recordDelivery(sql, deliveryId, action, mpUserId));
    await recordEvent(ctx, log, {
      event: "deauthorized",
      detail: { mp_user_id: mpUserId, accounts: accounts.length },
      requestId,
    });
    log.info("MP seller deauthorized the application", {
      mp_user_id: mpUserId,
      account_ids: accounts,
    });
    return json(200, { received: true, action, revoked: accounts.length });
  },
});
