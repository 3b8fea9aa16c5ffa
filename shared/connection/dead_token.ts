/**
 * What happens when MercadoPago confirms an access token dead (401 on `/users/me`, found by
 * checkout's report or by mp-probe; docs/contract.md "Connection states", invariant 9): under
 * the account's refresh lease, the token is cleared from the master at a new version and the
 * cache is cleared by the fenced write, so neither path serves it again; then, when the
 * account's refresh token was never sent, it is used at once (a new pair: `connected`
 * again); otherwise the account stays `reauth_required` (reason `token_dead`).
 */
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import { leaseAccount, recordTokenDead, releaseLeases } from "../store/refresh_leases.ts";
import { recordEvent } from "../store/audit.ts";
import { readEscrows } from "../store/escrow.ts";
import { clearClientCache, syncAccountRow } from "../sync/sync.ts";
import { refreshLeasedAccount } from "../refresh/run.ts";
import { LEASE_MS } from "../refresh/types.ts";

/**
 * What handling a dead token did: `refreshed` (a new token is served), `reauth_required`
 * (nothing is served until the seller connects again), `stale` (the dead token is no longer
 * the account's current one), `busy` (a refresh holds the account: it will replace the token),
 * `unavailable` (the Backend DB could not be reached to clear the cache: nothing changed).
 */
export type DeadTokenOutcome = "refreshed" | "reauth_required" | "stale" | "busy" | "unavailable";

/** Handles the confirmed death of account `accountId`'s access token of version `version`. */
export async function handleDeadToken(
  ctx: Context,
  log: Logger,
  accountId: string,
  version: number,
  opts: { requestId?: string; source: "report" | "probe" },
): Promise<DeadTokenOutcome> {
  const owner = crypto.randomUUID();
  const leased = await ctx.admin((sql) => leaseAccount(sql, accountId, owner, LEASE_MS));
  if (!leased) return "busy";
  const release = () =>
    ctx.admin((sql) => releaseLeases(sql, owner, [accountId])).catch(() => undefined);
  if (leased.mp_token_version !== version) {
    await release();
    return "stale";
  }
  // A pair waiting in escrow at this version is newer than the dead token: applying it is the
  // refresh (clearing first would move the version past it and discard it).
  const escrowed = await ctx.backend((sql) => readEscrows(sql, [accountId])).catch(() => undefined);
  if (escrowed?.get(accountId)?.baseVersion === version) {
    const applied = await refreshLeasedAccount(ctx, log, owner, leased, {
      requestId: opts.requestId,
    });
    if (applied.status === "escrow_applied") return "refreshed";
    const again = await ctx.admin((sql) => leaseAccount(sql, accountId, owner, LEASE_MS));
    if (!again) return "busy";
    if (again.mp_token_version !== version) {
      await release();
      return "stale";
    }
  }
  // The cache first, at the version the master is about to take: if the Backend DB cannot be
  // reached nothing is changed (the fast path would go on serving the dead token from a cache
  // nobody could clear); the report answers 503 and the probe checks again later. Once the
  // cache is empty at that version, a fallback read cannot refill it with an older one.
  const clientId = leased.backend_client_id;
  if (clientId) {
    try {
      await clearClientCache(ctx, clientId, version + 1);
    } catch (err) {
      log.warn(
        "MercadoPago confirmed a token dead but the cache cannot be cleared; nothing changed",
        {
          account_id: accountId,
          client_id: clientId,
          error: err,
        },
      );
      await release();
      return "unavailable";
    }
  }
  const dead = await ctx.admin((sql) => recordTokenDead(sql, accountId, owner, version));
  if (!dead) {
    await release();
    return "stale";
  }
  log.warn("MercadoPago confirmed the access token dead; cleared from both databases", {
    account_id: accountId,
    client_id: dead.backend_client_id,
    token_version: version,
    source: opts.source,
  });
  if (dead.backend_client_id && dead.backend_client_id !== clientId) {
    // Linked to another client meanwhile: that cache is cleared by the usual fenced sync.
    await syncAccountRow(ctx, dead).catch((err) =>
      log.error("Could not clear the dead token from the cache", {
        account_id: accountId,
        error: err,
      })
    );
  }
  await recordEvent(ctx, log, {
    event: "token_dead",
    accountId,
    clientId: dead.backend_client_id,
    detail: {
      token_version: version,
      source: opts.source,
      refresh_unsent: dead.mp_refresh_sends === 0,
    },
    requestId: opts.requestId,
  });
  if (dead.mp_refresh_sends !== 0 || !leased.mp_refresh_token) {
    await release();
    return "reauth_required";
  }
  const result = await refreshLeasedAccount(
    ctx,
    log,
    owner,
    { ...leased, mp_token_version: dead.mp_token_version },
    { requestId: opts.requestId },
  );
  return result.status === "refreshed" || result.status === "escrow_applied"
    ? "refreshed"
    : "reauth_required";
}
