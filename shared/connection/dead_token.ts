/**
 * What happens when MercadoPago confirms an access token dead (401 on `/users/me`, found by
 * checkout's report or by mp-probe; docs/contract.md "Connection states", invariant 9): the
 * cache is cleared at the version the master is about to take, then the token is cleared from
 * the master at that version under the version fence alone, so neither path serves it again —
 * whoever holds the account's refresh lease. A refresh holding it (in flight, or a crashed
 * worker's until the lease runs out) keeps it: its pair is still saved, or escrowed and applied
 * (the refresh side fences on the version its refresh token belongs to,
 * `mp_refresh_base_version`). Without such a refresh, when the account's refresh token was
 * never sent it is used at once (a new pair: `connected` again); otherwise the account stays
 * `reauth_required` (reason `token_dead`).
 */
import type { Context } from "../platform/context.ts";
import type { Logger } from "../platform/log.ts";
import { clearDeadToken, leaseAccount, releaseLeases } from "../store/refresh_leases.ts";
import { readAccount } from "../store/accounts.ts";
import { recordEvent } from "../store/audit.ts";
import { readEscrows } from "../store/escrow.ts";
import { clearClientCache, syncAccountRow } from "../sync/sync.ts";
import { refreshLeasedAccount } from "../refresh/run.ts";
// This path holds the lease as long as a refresh run does: it may make one refresh.
import { LEASE_MS } from "../refresh/run_limits.ts";

/**
 * What handling a dead token did: `refreshed` (a new token is served), `reauth_required`
 * (nothing is served until the seller connects again), `stale` (the dead token is no longer
 * the account's current one), `busy` (the token is cleared from both databases, but a refresh
 * holds the account: nothing is served until it, or the next run once its lease ends, brings a
 * new pair), `unavailable` (the Backend DB could not be reached to clear the cache: nothing
 * changed).
 */
type DeadTokenOutcome = "refreshed" | "reauth_required" | "stale" | "busy" | "unavailable";

/** Handles the confirmed death of account `accountId`'s access token of version `version`. */
export async function handleDeadToken(
  ctx: Context,
  log: Logger,
  accountId: string,
  version: number,
  opts: { requestId?: string; source: "report" | "probe" },
): Promise<DeadTokenOutcome> {
  const owner = crypto.randomUUID();
  // The lease lets this call use the refresh token at once; without it (a refresh holds the
  // account) the token is cleared all the same and that refresh replaces it.
  let leased = await ctx.admin((sql) => leaseAccount(sql, accountId, owner, LEASE_MS));
  const release = () =>
    ctx.admin((sql) => releaseLeases(sql, owner, [accountId])).catch(() => undefined);
  if (leased && leased.mp_token_version !== version) {
    await release();
    return "stale";
  }
  // A pair waiting in escrow at this version is newer than the dead token: applying it is the
  // refresh, with no moment without a token.
  const escrowed = leased
    ? await ctx.backend((sql) => readEscrows(sql, [accountId])).catch(() => undefined)
    : undefined;
  if (leased && escrowed?.get(accountId)?.baseVersion === version) {
    const applied = await refreshLeasedAccount(ctx, log, owner, leased, {
      requestId: opts.requestId,
    });
    if (applied.status === "escrow_applied") return "refreshed";
    leased = await ctx.admin((sql) => leaseAccount(sql, accountId, owner, LEASE_MS));
    if (leased && leased.mp_token_version !== version) {
      await release();
      return "stale";
    }
  }
  // The cache first, at the version the master is about to take: if the Backend DB cannot be
  // reached nothing is changed (the fast path would go on serving the dead token from a cache
  // nobody could clear); the report answers 503 and the probe checks again later. Once the
  // cache is empty at that version, a fallback read cannot refill it with an older one.
  const clientId = leased
    ? leased.backend_client_id
    : await ctx.admin((sql) => readAccount(sql, accountId)).then((current) =>
      current?.mp_connected && current.mp_token_version === version &&
        current.mp_access_token_encrypted
        ? current.backend_client_id
        : undefined
    );
  if (clientId === undefined) return "stale";
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
  const dead = await ctx.admin((sql) => clearDeadToken(sql, accountId, version));
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
  if (!leased) {
    log.warn("A refresh holds the account whose token died; it replaces the token", {
      account_id: accountId,
      token_version: version,
    });
    return "busy";
  }
  if (dead.mp_refresh_sends !== 0 || !leased.mp_refresh_token) {
    await release();
    return "reauth_required";
  }
  // Cleared, the account's refresh base is still `version` (the refresh token's).
  const result = await refreshLeasedAccount(ctx, log, owner, leased, {
    requestId: opts.requestId,
  });
  return result.status === "refreshed" || result.status === "escrow_applied"
    ? "refreshed"
    : "reauth_required";
}
