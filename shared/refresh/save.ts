/**
 * Keeping a pair MercadoPago handed out: encrypt it, save it as a compare-and-swap (retrying),
 * else escrow it in the Backend DB (retrying); and applying a verified escrowed pair instead
 * of calling MercadoPago (docs/invariants.md, invariant 3). Each returns the account's
 * `Ending`; `record.ts` records it.
 */
import { appOfSite } from "../platform/config.ts";
import { DecryptError, decryptSecret, encryptTokenPair } from "../platform/crypto.ts";
import { checkAccessToken, MpError, type MpTokens } from "../mercadopago/api.ts";
import { deleteEscrow, type EscrowEntry, writeEscrow } from "../store/escrow.ts";
import { type AccountRow, readSellerId } from "../store/accounts.ts";
import {
  type ClaimedAccount,
  readIfHolds,
  saveRefreshed,
  type StoredPair,
} from "../store/refresh_leases.ts";
import { sleep } from "../platform/sleep.ts";
import { ESCROW_RETRY_MS, SAVE_RETRY_MS } from "./retry_schedules.ts";
import type { Ending, Run } from "./types.ts";

/** Encrypts a fresh pair for the account's master columns. */
async function storedPair(
  run: Run,
  accountId: string,
  tokens: MpTokens,
  receivedAt: number,
): Promise<StoredPair> {
  const keys = await run.ctx.keys();
  return {
    ...await encryptTokenPair(keys, accountId, tokens),
    expiresIn: tokens.expires_in,
    tokenExpiresAt: new Date(receivedAt + tokens.expires_in * 1000),
    userId: tokens.user_id ?? null,
    publicKey: tokens.public_key ?? null,
    liveMode: tokens.live_mode ?? null,
    scope: tokens.scope ?? null,
  };
}

/**
 * Keeps the pair MercadoPago just handed out: saves it (retrying), else escrows it in the
 * Backend DB; the old refresh token is spent either way, so the pair must not be dropped.
 */
export async function keepPair(
  run: Run,
  account: ClaimedAccount,
  tokens: MpTokens,
  receivedAt: number,
): Promise<Ending> {
  const pair = await storedPair(run, account.id, tokens, receivedAt);
  const saved = await saveWithRetries(run, account, pair, tokens.access_token);
  if ("ending" in saved) return saved.ending;
  return await escrowWithRetries(run, account, pair, saved.saveError);
}

/**
 * The compare-and-swap save of `pair` (encrypted from `accessToken`), retried: `saved`, or
 * `superseded` when newer credentials won; the last error when the Admin DB took none of the
 * attempts.
 */
async function saveWithRetries(
  run: Run,
  account: ClaimedAccount,
  pair: StoredPair,
  accessToken: string,
): Promise<{ ending: Ending } | { saveError: unknown }> {
  const { ctx } = run;
  let saveError: unknown;
  for (let attempt = 0; attempt <= SAVE_RETRY_MS.length; attempt++) {
    try {
      let saved = await ctx.admin((sql) =>
        saveRefreshed(sql, account.id, run.owner, account.mp_token_version, pair)
      );
      // An earlier attempt may have committed before its answer was lost.
      if (!saved && saveError !== undefined) {
        saved = await ctx.admin((sql) => readIfHolds(sql, account.id, pair.refreshTokenEncrypted));
      }
      if (!saved) return { ending: { kind: "superseded" } };
      return { ending: { kind: "saved", row: saved, status: "refreshed", accessToken } };
    } catch (err) {
      saveError = err;
      if (attempt < SAVE_RETRY_MS.length) await sleep(SAVE_RETRY_MS[attempt]);
    }
  }
  return { saveError };
}

/**
 * Escrows a pair the Admin DB would not take in the Backend DB, retried; `token_lost` when
 * neither took it.
 */
async function escrowWithRetries(
  run: Run,
  account: ClaimedAccount,
  pair: StoredPair,
  saveError: unknown,
): Promise<Ending> {
  const { ctx, log } = run;
  const entry: EscrowEntry = {
    ...pair,
    accountId: account.id,
    baseVersion: account.mp_token_version,
  };
  for (let attempt = 0; attempt <= ESCROW_RETRY_MS.length; attempt++) {
    try {
      await ctx.backend((sql) => writeEscrow(sql, entry));
      log.warn("Refreshed MP token pair escrowed in the Backend DB; the Admin DB did not take it", {
        account_id: account.id,
        base_version: account.mp_token_version,
        error: saveError,
      });
      return { kind: "escrowed" };
    } catch (err) {
      if (attempt < ESCROW_RETRY_MS.length) await sleep(ESCROW_RETRY_MS[attempt]);
      else {
        log.error("Refreshed MP token pair lost: neither database took it", {
          account_id: account.id,
          base_version: account.mp_token_version,
          admin_error: saveError,
          backend_error: err,
        });
      }
    }
  }
  return { kind: "token_lost" };
}

/** Applies an escrowed pair taken from the claimed version, instead of calling MercadoPago. */
export async function applyEscrow(
  run: Run,
  account: ClaimedAccount,
  escrow: EscrowEntry,
): Promise<Ending> {
  const { ctx, log } = run;
  let rejected: string | undefined;
  try {
    rejected = await verifyEscrow(run, account, escrow);
  } catch (err) {
    if (!(err instanceof EscrowUnverifiable)) throw err;
    // MercadoPago could not tell whose pair it is: it stays in escrow for the next run.
    log.warn("Escrowed MP token pair could not be verified now; it stays in escrow", {
      account_id: account.id,
      error: err.message,
    });
    return { kind: "skipped", reason: "escrow_unverifiable" };
  }
  if (rejected) {
    log.error("Escrowed MP token pair failed verification; discarded, the master is unchanged", {
      account_id: account.id,
      reason: rejected,
    });
    await ctx.backend((sql) => deleteEscrow(sql, account.id, escrow.baseVersion)).catch(() => {});
    return { kind: "escrow_rejected", reason: rejected };
  }
  // Only what was verified reaches the master: the ciphertexts and the expiry. The seller,
  // public key, mode and scope stay as stored.
  const pair = { ...escrow, userId: null, publicKey: null, liveMode: null, scope: null };
  let saved: AccountRow | undefined;
  try {
    saved = await ctx.admin((sql) =>
      saveRefreshed(sql, account.id, run.owner, account.mp_token_version, pair)
    );
  } catch (err) {
    log.warn("Could not apply the escrowed MP token pair; it stays in escrow", {
      account_id: account.id,
      error: err,
    });
    return { kind: "escrow_apply_failed" };
  }
  if (!saved) return { kind: "superseded" };
  await ctx.backend((sql) => deleteEscrow(sql, account.id, escrow.baseVersion)).catch((err) =>
    log.warn("Applied escrow not removed; the next run discards it", {
      account_id: account.id,
      error: err,
    })
  );
  return { kind: "saved", row: saved, status: "escrow_applied" };
}

/** MercadoPago could not be asked whose an escrowed pair is; the pair stays in escrow. */
class EscrowUnverifiable extends Error {
  constructor(kind: string) {
    super(`MercadoPago /users/me failed: ${kind}`);
  }
}

/** Longest token life an escrowed pair may claim (MercadoPago's is 180 days). */
const MAX_ESCROW_EXPIRES_IN_S = 200 * 86_400;

/**
 * Why an escrowed pair (read from the Backend DB, so not trusted) may not reach the master,
 * or undefined when it may: both ciphertexts decrypt under this account's AAD, the seller is
 * the account's own, and the expiry is one MercadoPago could have given.
 */
async function verifyEscrow(
  run: Run,
  account: ClaimedAccount,
  escrow: EscrowEntry,
): Promise<string | undefined> {
  const keys = await run.ctx.keys();
  let accessToken: string;
  try {
    accessToken = await decryptSecret(
      keys,
      account.id,
      "access_token",
      escrow.accessTokenEncrypted,
    );
    await decryptSecret(keys, account.id, "refresh_token", escrow.refreshTokenEncrypted);
  } catch (err) {
    if (err instanceof DecryptError) return "decrypt_failed";
    throw err;
  }
  const storedSeller = await run.ctx.admin((sql) => readSellerId(sql, account.id));
  if (storedSeller != null) {
    let seller = escrow.userId;
    if (seller === null) {
      // A pair escrowed without its seller is checked against the stored one at MercadoPago,
      // through the application that issued it.
      const app = appOfSite(run.ctx.config, account.mp_site_id);
      if (!app) throw new EscrowUnverifiable("site_not_configured");
      const check = await checkAccessToken(app, accessToken).catch((err) => {
        if (err instanceof MpError) throw new EscrowUnverifiable(err.kind);
        throw err;
      });
      if (check.status === "invalid") return "token_dead";
      seller = check.userId;
    }
    if (seller !== storedSeller) return "seller_mismatch";
  }
  const latest = Date.now() + (escrow.expiresIn + 86_400) * 1000;
  if (
    !(escrow.expiresIn > 0 && escrow.expiresIn <= MAX_ESCROW_EXPIRES_IN_S) ||
    escrow.tokenExpiresAt.getTime() > latest
  ) {
    return "implausible_expiry";
  }
  return undefined;
}
