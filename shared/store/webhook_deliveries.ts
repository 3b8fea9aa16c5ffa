/**
 * MercadoPago webhook deliveries (Admin `mp_webhook_deliveries`): each is claimed in one
 * statement before it is acted on, so a replay is a no-op; a delivery whose handling failed can
 * be claimed again (docs/invariants.md, invariant 8).
 */
import type { Sql } from "../platform/db.ts";

/**
 * Claims a delivery before it is acted on (one statement): true for a new one, or for one
 * whose earlier handling failed or was abandoned; false for a repeat of a handled delivery.
 */
export async function claimDelivery(
  sql: Sql,
  requestId: string,
  action: string,
  mpUserId: number | null,
): Promise<boolean> {
  const [row] = await sql<{ claimed: boolean }[]>`
    select mp_claim_webhook_delivery(${requestId}, ${action}, ${mpUserId}::bigint) as claimed`;
  return row.claimed;
}

/** Marks a claimed delivery handled (`done`) or `failed` (MercadoPago will deliver it again). */
export async function finishDelivery(
  sql: Sql,
  requestId: string,
  status: "done" | "failed",
): Promise<void> {
  await sql`select mp_finish_webhook_delivery(${requestId}, ${status})`;
}
