/**
 * Changes of a seller's connection that span both databases. Revoke clears the cache first, at
 * the version the master is about to take (the Backend DB unreachable: nothing changed, 503),
 * then the master, then the cache again at the version the master took, and only then reports
 * success (docs/invariants.md, invariant 2) — so a revoke whose answer is an error never leaves
 * the master revoked behind a cache that still serves the token.
 * Connect stores the master first, then syncs the cache.
 */
import { readAccount } from "../store/accounts.ts";
import { revokeAccount, storeConnection } from "../store/connections.ts";
import type { Context } from "../platform/context.ts";
import { recordEvent } from "../store/audit.ts";
import type { Logger } from "../platform/log.ts";
import { encryptTokenPair } from "../platform/crypto.ts";
import type { MpTokens } from "../mercadopago/api.ts";
import { clearClientCache, syncAccountRow, type SyncResult } from "../sync/sync.ts";

/** Revokes account `accountId` in both databases; false when the account does not exist. */
export async function revokeConnection(
  ctx: Context,
  log: Logger,
  accountId: string,
  opts: { requestId?: string; reason?: string } = {},
): Promise<boolean> {
  const current = await ctx.admin((sql) => readAccount(sql, accountId));
  if (!current) return false;
  if (current.backend_client_id && current.mp_connected) {
    await clearClientCache(ctx, current.backend_client_id, current.mp_token_version + 1);
  }
  const revoked = await ctx.admin((sql) => revokeAccount(sql, accountId, opts.reason ?? "admin"));
  if (!revoked) return false;
  const clientId = revoked.backend_client_id;
  if (clientId) {
    await clearClientCache(ctx, clientId, revoked.mp_token_version);
  }
  if (revoked.changed) {
    await recordEvent(ctx, log, {
      event: "revoked",
      accountId,
      clientId,
      detail: { reason: opts.reason ?? "admin", token_version: revoked.mp_token_version },
      requestId: opts.requestId,
    });
  }
  log.info("MP connection revoked", {
    account_id: accountId,
    client_id: clientId,
    token_version: revoked.mp_token_version,
    changed: revoked.changed,
  });
  return true;
}

/** What saving a connection did; `sync` is "failed" when the cache write did not happen. */
type SaveOutcome =
  | {
    result: "connected";
    version: number;
    clientId: string | null;
    sync: SyncResult | "failed";
  }
  | { result: "mp_account_in_use"; otherAccountId: string }
  | { result: "seller_mismatch" }
  | { result: "account_not_found" };

/**
 * Stores a token set exchanged for `accountId` through the application of `opts.siteId`
 * (encrypted, version +1, connected, that site) and syncs it to the linked client. The Admin
 * write is the master: a failed sync after it is logged and left to read-repair and
 * reconciliation, never undone.
 */
export async function saveConnection(
  ctx: Context,
  log: Logger,
  accountId: string,
  tokens: MpTokens & { public_key: string; user_id: number },
  opts: { requestId?: string; replaceSeller?: boolean; siteId: string },
): Promise<SaveOutcome> {
  const keys = await ctx.keys();
  const write = {
    mpUserId: tokens.user_id,
    ...await encryptTokenPair(keys, accountId, tokens),
    publicKey: tokens.public_key,
    expiresIn: tokens.expires_in,
    liveMode: tokens.live_mode ?? null,
    scope: tokens.scope ?? null,
    replaceSeller: opts.replaceSeller ?? false,
    siteId: opts.siteId,
  };
  const stored = await ctx.admin((sql) => storeConnection(sql, accountId, write));
  if (stored.result !== "connected") return stored;
  const { account } = stored;
  let sync: SyncResult | "failed" = "not_linked";
  try {
    sync = (await syncAccountRow(ctx, account)).result;
  } catch (err) {
    sync = "failed";
    log.warn("Sync after connect failed; read-repair and reconciliation will fix the cache", {
      account_id: accountId,
      client_id: account.backend_client_id,
      token_version: account.mp_token_version,
      error: err,
    });
  }
  await recordEvent(ctx, log, {
    event: "connected",
    accountId,
    clientId: account.backend_client_id,
    detail: {
      mp_user_id: tokens.user_id,
      site: opts.siteId,
      token_version: account.mp_token_version,
      live_mode: tokens.live_mode ?? null,
      sync,
    },
    requestId: opts.requestId,
  });
  log.info("MP connection saved", {
    account_id: accountId,
    client_id: account.backend_client_id,
    mp_user_id: tokens.user_id,
    site: opts.siteId,
    token_version: account.mp_token_version,
    sync,
  });
  return {
    result: "connected",
    version: account.mp_token_version,
    clientId: account.backend_client_id,
    sync,
  };
}
