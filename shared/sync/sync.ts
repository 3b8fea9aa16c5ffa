/**
 * The one writer of the plain-text cache (Backend `clients`) from the encrypted master (Admin
 * `nv_accounts`): every write of `clients` goes through this folder (docs/invariants.md,
 * invariant 1) — connect, provisioning, the dead-token clear and the single refresh here
 * (`syncAccountRow`), revoke (`clearClientCache`), read-repair (`writeClientCache`),
 * reconcile's orphan clears (`clearOrphanedCaches`); the batched refresh, reconcile's repairs
 * and the backfill through `sync_batch.ts`. Each gets back the cache as it stands after the
 * version-fenced write. tests/layering_test.ts fails if any other module imports a
 * cache-writing function of `shared/store/clients.ts`.
 */
import { type AccountRow, readAccount } from "../store/accounts.ts";
import {
  type CacheWrite,
  type CacheWriteResult,
  clearOrphanedCache,
  writeCache,
} from "../store/clients.ts";
import type { Context } from "../platform/context.ts";
import { decryptSecret } from "../platform/crypto.ts";

/** What a sync did. */
export type SyncResult =
  | "synced"
  | "already_current"
  | "mp_not_connected"
  | "client_not_found"
  | "account_not_found"
  | "not_linked";

/**
 * What a sync did, from the fenced write's result and whether the account is connected: a
 * missing client row, else the write's result for a connected account, else `mp_not_connected`
 * (its NULLs were written or already there). The one mapping, for the single and batched syncs.
 */
export function syncResultOf(
  write: "synced" | "already_current" | "client_not_found",
  connected: boolean,
): SyncResult {
  if (write === "client_not_found") return "client_not_found";
  return connected ? write : "mp_not_connected";
}

/** The outcome of a sync and the Admin version it carried. */
interface SyncOutcome {
  result: SyncResult;
  version?: number;
}

/** The plaintext cache contents for an account row (decrypting its access token). */
export async function cacheContents(ctx: Context, account: AccountRow) {
  const connected = account.mp_connected && account.mp_access_token_encrypted !== null;
  const accessToken = connected
    ? await decryptSecret(
      await ctx.keys(),
      account.id,
      "access_token",
      account.mp_access_token_encrypted!,
    )
    : null;
  return {
    connected,
    write: {
      accessToken,
      publicKey: connected ? account.mp_public_key : null,
      siteId: connected ? account.mp_site_id ?? null : null,
      version: account.mp_token_version,
    },
  };
}

/**
 * Writes `write` to client `clientId`'s cache in one version-fenced statement; the cache as it
 * stands after the write (a newer version that landed first is reported, not overwritten).
 */
export async function writeClientCache(
  ctx: Context,
  clientId: string,
  write: CacheWrite,
): Promise<CacheWriteResult> {
  return await ctx.backend((sql) => writeCache(sql, clientId, write));
}

/** Clears client `clientId`'s cache at `version` (a revoke's new version); the cache after. */
export async function clearClientCache(
  ctx: Context,
  clientId: string,
  version: number,
): Promise<CacheWriteResult> {
  return await writeClientCache(ctx, clientId, { accessToken: null, publicKey: null, version });
}

/**
 * Clears the caches no account feeds, each only while it holds the version it was seen with;
 * the ids cleared.
 */
export async function clearOrphanedCaches(
  ctx: Context,
  seen: { id: string; version: number | null }[],
): Promise<string[]> {
  return await ctx.backend((sql) => clearOrphanedCache(sql, seen));
}

/** Writes an already-read account row to its client's cache, fenced by the row's version. */
export async function syncAccountRow(
  ctx: Context,
  account: AccountRow,
): Promise<SyncOutcome & { cache?: CacheWriteResult }> {
  if (!account.backend_client_id) return { result: "not_linked" };
  const { connected, write } = await cacheContents(ctx, account);
  const cache = await writeClientCache(ctx, account.backend_client_id, write);
  const result = syncResultOf(cache.result, connected);
  return { result, version: account.mp_token_version, cache };
}

/**
 * Syncs account `accountId` to Backend client `clientId` (the client it is linked to):
 * reads the master, decrypts, and writes the cache version-fenced in one statement.
 * Disconnected accounts sync as NULLs with their version.
 */
export async function syncMpCredentialsToBackend(
  ctx: Context,
  accountId: string,
  clientId: string,
): Promise<SyncOutcome> {
  const account = await ctx.admin((sql) => readAccount(sql, accountId));
  if (!account) return { result: "account_not_found" };
  if (account.backend_client_id !== clientId) return { result: "not_linked" };
  const { result, version } = await syncAccountRow(ctx, account);
  return { result, version };
}
