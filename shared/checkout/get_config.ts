/**
 * Checkout's read of a client's MercadoPago credentials (get-mp-config; docs/contract.md,
 * get-mp-config): the fast path is one primary-key read of the Backend cache; on a miss (or a
 * Backend DB that does not answer) the fallback reads and decrypts the Admin master, logs a
 * `Fast-path miss`, records an audit event, and repairs the cache with the version-fenced
 * write so the next call takes the fast path.
 */
import { siteOf } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import { UnavailableError } from "../platform/db.ts";
import { DomainError } from "../platform/errors.ts";
import type { Logger } from "../platform/log.ts";
import { recordEvent } from "../store/audit.ts";
import { readAccountByClient } from "../store/accounts.ts";
import { type CachedCredentials, type CacheWrite, readCache } from "../store/clients.ts";
import { cacheContents, writeClientCache } from "../sync/sync.ts";

/**
 * What checkout gets: the token, the public key, where they came from, their version and the
 * MercadoPago site (country) of the application they belong to.
 */
export interface MpConfig {
  client_id: string;
  access_token: string;
  public_key: string | null;
  source: "fast_path" | "fallback";
  token_version: number | null;
  site_id: string;
}

/** The fast path's read: the cache row, or `backendUp: false` when the Backend DB is unavailable. */
async function readFastPath(
  ctx: Context,
  log: Logger,
  clientId: string,
): Promise<{ cached: CachedCredentials | null | undefined; backendUp: boolean }> {
  try {
    return { cached: await ctx.backend((sql) => readCache(sql, clientId)), backendUp: true };
  } catch (err) {
    if (!(err instanceof UnavailableError)) throw err;
    log.warn("Backend DB unavailable; trying the Admin DB", { client_id: clientId });
    return { cached: null, backendUp: false };
  }
}

/**
 * Read-repair: writes the master's credentials to the cache (version-fenced) and returns what
 * to answer — the master's, or a newer version that landed meanwhile (a refresh or a revoke,
 * even one that committed while this write waited for the row: the sync reports the cache
 * as it is after the write), so a completed revoke is honoured (no token: 404).
 */
async function repairCache(
  ctx: Context,
  log: Logger,
  clientId: string,
  write: CacheWrite,
): Promise<CacheWrite> {
  try {
    const repaired = await writeClientCache(ctx, clientId, write);
    if (
      repaired.result === "already_current" && (repaired.mp_token_version ?? -1) > write.version
    ) {
      return {
        accessToken: repaired.mp_access_token,
        publicKey: repaired.mp_public_key,
        version: repaired.mp_token_version!,
        siteId: repaired.mp_site_id,
      };
    }
  } catch (err) {
    log.warn("Cache repair failed", { client_id: clientId, error: err });
  }
  return write;
}

/** The fallback: the Admin master, decrypted, the cache repaired when reachable, the miss logged and audited. */
async function readFallback(
  ctx: Context,
  log: Logger,
  clientId: string,
  opts: { backendUp: boolean; cacheRowExists: boolean; requestId: string },
): Promise<MpConfig> {
  const account = await ctx.admin((sql) => readAccountByClient(sql, clientId));
  if (!account && opts.backendUp && !opts.cacheRowExists) {
    throw new DomainError("client_not_found", "no such client");
  }
  if (account?.mp_connected && !account.mp_access_token_encrypted) {
    // Connected without an access token: MercadoPago confirmed it dead (invariant 9).
    throw new DomainError("mp_reauth_required", "the seller must connect MercadoPago again");
  }
  if (!account?.mp_connected || !account.mp_access_token_encrypted) {
    throw new DomainError("mp_not_connected", "the client has no MercadoPago connection");
  }
  const { write } = await cacheContents(ctx, account);
  const answer = opts.backendUp ? await repairCache(ctx, log, clientId, write) : write;
  if (!answer.accessToken) {
    throw new DomainError("mp_not_connected", "the client has no MercadoPago connection");
  }
  const reason = opts.backendUp ? "cache_empty" : "backend_unavailable";
  log.warn("Fast-path miss: MP credentials served from the Admin DB", {
    client_id: clientId,
    account_id: account.id,
    reason,
  });
  await recordEvent(ctx, log, {
    event: "fast_path_miss",
    accountId: account.id,
    clientId,
    detail: { reason },
    requestId: opts.requestId,
  });
  return {
    client_id: clientId,
    access_token: answer.accessToken,
    public_key: answer.publicKey,
    source: "fallback",
    token_version: answer.version,
    site_id: siteOf(ctx.config, answer.siteId ?? null),
  };
}

/** A client's credentials for checkout: the fast path, else the fallback (DomainError when none). */
export async function getMpConfig(
  ctx: Context,
  log: Logger,
  clientId: string,
  requestId: string,
): Promise<MpConfig> {
  const { cached, backendUp } = await readFastPath(ctx, log, clientId);
  if (cached?.mp_access_token) {
    return {
      client_id: clientId,
      access_token: cached.mp_access_token,
      public_key: cached.mp_public_key,
      source: "fast_path",
      token_version: cached.mp_token_version,
      site_id: siteOf(ctx.config, cached.mp_site_id),
    };
  }
  return await readFallback(ctx, log, clientId, {
    backendUp,
    cacheRowExists: !!cached,
    requestId,
  });
}
