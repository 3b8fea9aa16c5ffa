/**
 * The scheduled refresh of MercadoPago tokens (SPEC §6 mp-refresh, §5 invariants 3 and 4).
 * One run: claim due accounts under a lease → look up escrowed pairs for them → per
 * account: apply its escrowed pair if one waits, else (bounded concurrency toward
 * MercadoPago) refresh at MercadoPago → save as a compare-and-swap (escrow the pair in the
 * Backend DB when the Admin DB will not take it) → sync `clients` → audit.
 * A refresh token is never sent twice: accounts whose escrow cannot be checked are skipped,
 * a pair MercadoPago handed out is always kept in one database, and a call starts only while
 * the lease outlasts the call, the save and the escrow, so no later claimer can precede it.
 */
import type { AccountRow } from "../store/accounts.ts";
import { type AuditEvent, recordEvents } from "../store/audit.ts";
import type { Context } from "../platform/context.ts";
import { DecryptError, decryptSecret, encryptSecret } from "../platform/crypto.ts";
import {
  deleteEscrow,
  type EscrowEntry,
  listEscrowed,
  readEscrows,
  writeEscrow,
} from "../store/escrow.ts";
import { sharedLimiter } from "../platform/limiter.ts";
import type { Logger } from "../platform/log.ts";
import { MpError, type MpTokens, refreshTokens } from "../mercadopago/api.ts";
import {
  type Backoff,
  claimDueAccounts,
  type ClaimedAccount,
  readIfHolds,
  recordFailure,
  recordReauthRequired,
  releaseLeases,
  saveRefreshed,
  type StoredPair,
} from "../store/refresh_store.ts";
import { syncAccountRow } from "../sync/sync.ts";
import { latestStart, shutdownReason } from "../platform/worker_life.ts";

/** Accounts a run claims when the caller gives no limit. */
export const DEFAULT_LIMIT = 100;
/** After this long a run starts no new MercadoPago call (Edge Functions stop at 150 s). */
export const RUN_BUDGET_MS = 100_000;
/** How long a claim holds an account: far longer than a run plus one MercadoPago call. */
export const LEASE_MS = 5 * 60_000;
/** Slack a MercadoPago call needs in its lease beyond the call, save and escrow bounds. */
export const LEASE_SLACK_MS = 5_000;
/** Backoff of transient failures: 5 min · 2^failures, at most 6 h. */
export const BACKOFF: Backoff = { baseMs: 5 * 60_000, capMs: 6 * 3600_000 };
/** Pauses between attempts to save a pair MercadoPago handed out (then: escrow). */
const SAVE_RETRY_MS = [200, 800];
/** Pauses between attempts to escrow a pair the Admin DB would not take. */
const ESCROW_RETRY_MS = [200, 800];

/** What one run is asked to do. */
export interface RefreshOptions {
  /** How many due accounts to claim (1–500). */
  limit?: number;
  /** Only this account. */
  accountId?: string;
  /** Refresh even when not due, backing off or needing re-authorization (never a live lease). */
  force?: boolean;
  requestId?: string;
  /** Overrides {@link RUN_BUDGET_MS}. */
  budgetMs?: number;
  /** Overrides {@link LEASE_MS}. */
  leaseMs?: number;
}

/** What happened to one claimed account. */
export type RefreshStatus =
  | "refreshed"
  | "escrow_applied"
  | "escrowed"
  | "failed"
  | "reauth_required"
  | "superseded"
  | "skipped";

/** One account's line in the answer: its status and, when not refreshed, why. */
export interface RefreshResult {
  account_id: string;
  status: RefreshStatus;
  error?: string;
}

/** The answer of a run (SPEC §6 mp-refresh). */
export interface RefreshReport {
  claimed: number;
  refreshed: number;
  failed: number;
  reauth_required: number;
  results: RefreshResult[];
}

/** Shared state of one run. */
interface Run {
  ctx: Context;
  log: Logger;
  owner: string;
  requestId?: string;
  budgetEnd: number;
  events: AuditEvent[];
  unused: string[];
}

/** What happened inside the MercadoPago slot. */
type SlotOutcome =
  | { kind: "skip"; reason: string }
  | { kind: "tokens"; tokens: MpTokens; receivedAt: number }
  | { kind: "mp_error"; error: MpError }
  | { kind: "decrypt_error"; error: DecryptError };

/** Not before this time (epoch ms) does the isolate call MercadoPago again (429 Retry-After). */
let mpPausedUntil = 0;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs one refresh pass and reports what happened to every claimed account. */
export async function runRefresh(
  ctx: Context,
  log: Logger,
  opts: RefreshOptions = {},
): Promise<RefreshReport> {
  const started = Date.now();
  const owner = crypto.randomUUID();
  const run: Run = {
    ctx,
    log: log.child({ refresh_run: owner }),
    owner,
    requestId: opts.requestId,
    budgetEnd: started + (opts.budgetMs ?? RUN_BUDGET_MS),
    events: [],
    unused: [],
  };
  const limit = opts.limit ?? DEFAULT_LIMIT;
  // Pairs waiting in escrow make their accounts claimable even when not due.
  let escrowed: string[] | undefined;
  let backendError: unknown;
  try {
    escrowed = await ctx.backend((sql) => listEscrowed(sql, limit));
  } catch (err) {
    backendError = err;
  }
  const claimed = await ctx.admin((sql) =>
    claimDueAccounts(sql, {
      owner,
      limit,
      dueWithinDays: ctx.config.refreshWindowDays,
      leaseMs: opts.leaseMs ?? LEASE_MS,
      accountId: opts.accountId,
      force: opts.force ?? false,
      escrowed: escrowed ?? [],
    })
  );
  let escrows: Map<string, EscrowEntry> | undefined;
  if (claimed.length > 0 && escrowed) {
    try {
      escrows = await ctx.backend((sql) => readEscrows(sql, claimed.map((a) => a.id)));
    } catch (err) {
      backendError = err;
    }
  }
  if (claimed.length > 0 && !escrows) {
    // Without knowing whether a newer pair waits, a stored refresh token may be used up.
    run.log.warn("Escrow check failed; the claimed accounts are skipped this run", {
      accounts: claimed.length,
      error: backendError,
    });
  }
  const results = await Promise.all(
    claimed.map((account) =>
      refreshAccount(run, account, escrows).catch((err): RefreshResult => {
        // One account's surprise must not take the run (and the others' answers) down with it;
        // its lease runs out on its own.
        run.log.error("MP refresh failed unexpectedly", { account_id: account.id, error: err });
        return { account_id: account.id, status: "failed", error: "internal" };
      })
    ),
  );

  if (run.unused.length > 0) {
    await ctx.admin((sql) => releaseLeases(sql, owner, run.unused)).catch((err) =>
      run.log.warn("Could not release unused refresh leases", {
        accounts: run.unused.length,
        error: err,
      })
    );
  }
  await recordEvents(ctx, run.log, run.events);

  const count = (...statuses: RefreshStatus[]) =>
    results.filter((r) => statuses.includes(r.status)).length;
  const report: RefreshReport = {
    claimed: claimed.length,
    refreshed: count("refreshed", "escrow_applied"),
    failed: count("failed", "escrowed"),
    reauth_required: count("reauth_required"),
    results,
  };
  run.log.info("MP refresh run finished", {
    claimed: report.claimed,
    refreshed: report.refreshed,
    failed: report.failed,
    reauth_required: report.reauth_required,
    escrow_applied: count("escrow_applied"),
    escrowed: count("escrowed"),
    superseded: count("superseded"),
    skipped: count("skipped"),
    limit,
    account_id: opts.accountId,
    force: opts.force ?? false,
    duration_ms: Date.now() - started,
  });
  return report;
}

/** Takes one claimed account through the run, given the escrowed pairs (unknown: skip). */
async function refreshAccount(
  run: Run,
  account: ClaimedAccount,
  escrows: Map<string, EscrowEntry> | undefined,
): Promise<RefreshResult> {
  const id = account.id;
  const skip = (reason: string): RefreshResult => {
    run.unused.push(id);
    return { account_id: id, status: "skipped", error: reason };
  };
  if (!escrows) return skip("escrow_unavailable");
  const escrow = escrows.get(id);
  if (escrow && escrow.baseVersion === account.mp_token_version) {
    return await applyEscrow(run, account, escrow);
  }
  if (escrow && escrow.baseVersion > account.mp_token_version) return skip("escrow_ahead");
  if (escrow) {
    // Taken from an older version: the credentials changed since (applied, or reconnected).
    await run.ctx.backend((sql) => deleteEscrow(sql, id, escrow.baseVersion)).catch(() => {});
    run.events.push(event(run, "escrow_discarded", account, { base_version: escrow.baseVersion }));
  }

  // The lease's end on this machine's clock, from the database's own now() at claim time.
  const leaseEnd = Date.now() + (account.lease_expires_at.getTime() - account.db_now.getTime());
  const release = await sharedLimiter(run.ctx.config.refreshConcurrency).acquire();
  let outcome: SlotOutcome;
  try {
    outcome = await inSlot(run, account, leaseEnd);
  } finally {
    release();
  }
  switch (outcome.kind) {
    case "skip":
      return skip(outcome.reason);
    case "tokens":
      return await saveTokens(run, account, outcome.tokens, outcome.receivedAt);
    case "decrypt_error":
      run.log.error("Stored MP credential failed to decrypt", {
        account_id: id,
        field: "refresh_token",
      });
      return await failed(run, account, "decrypt_failed");
    case "mp_error":
      if (outcome.error.kind === "invalid_grant") return await reauthRequired(run, account);
      return await failed(run, account, outcome.error.kind, outcome.error.retryAfterMs);
  }
}

/**
 * How much lease a MercadoPago call needs left when it starts: the call's timeout, every
 * save and escrow attempt at the database time bound, their pauses, and some slack.
 */
export function leaseNeededMs(config: Context["config"]): number {
  return finishNeededMs(config) + LEASE_SLACK_MS;
}

/**
 * How long a MercadoPago call may take to be over and its pair kept: the call's timeout and
 * every save and escrow attempt at the database time bound, with their pauses.
 */
export function finishNeededMs(config: Context["config"]): number {
  const attempts = SAVE_RETRY_MS.length + 1 + ESCROW_RETRY_MS.length + 1;
  const pauses = [...SAVE_RETRY_MS, ...ESCROW_RETRY_MS].reduce((a, b) => a + b, 0);
  return config.mpTimeoutMs + attempts * config.dbTimeoutMs + pauses;
}

/**
 * Why a MercadoPago call may not start now, or undefined when it may: the runtime asked the
 * isolate to shut down, the run's budget is spent, the isolate's wall clock would end before
 * the call, its save and the run's answer, or the lease would end first. Pure: the clock,
 * the isolate's boot time and the shutdown reason are passed in.
 */
export function mayStartCall(
  config: Context["config"],
  at: { now: number; budgetEnd: number; leaseEnd: number; bootedAt?: number; unload?: string },
): string | undefined {
  if (at.unload) return "shutting_down";
  if (at.now >= at.budgetEnd) return "time_budget";
  const reserve = finishNeededMs(config) + 2 * config.dbTimeoutMs;
  if (config.wallClockMs > 0 && at.now >= latestStart(config.wallClockMs, reserve, at.bootedAt)) {
    return "wall_clock";
  }
  if (at.leaseEnd - at.now < leaseNeededMs(config)) return "lease_too_short";
  return undefined;
}

/**
 * The part of an account's refresh that holds a MercadoPago slot: the budget, lease and
 * rate-limit checks, and the call itself.
 */
async function inSlot(run: Run, account: ClaimedAccount, leaseEnd: number): Promise<SlotOutcome> {
  const { ctx } = run;
  const usable = () =>
    mayStartCall(ctx.config, {
      now: Date.now(),
      budgetEnd: run.budgetEnd,
      leaseEnd,
      unload: shutdownReason(),
    });
  let reason = usable();
  if (reason) return { kind: "skip", reason };
  if (mpPausedUntil > Date.now()) {
    if (mpPausedUntil >= run.budgetEnd) return { kind: "skip", reason: "rate_limited" };
    await sleep(mpPausedUntil - Date.now());
    if ((reason = usable())) return { kind: "skip", reason };
  }

  let refreshToken: string;
  try {
    refreshToken = await decryptSecret(
      await ctx.keys(),
      account.id,
      "refresh_token",
      account.mp_refresh_token,
    );
  } catch (err) {
    if (err instanceof DecryptError) return { kind: "decrypt_error", error: err };
    throw err;
  }
  try {
    const tokens = await refreshTokens(ctx.config, refreshToken);
    return { kind: "tokens", tokens, receivedAt: Date.now() };
  } catch (err) {
    if (!(err instanceof MpError)) throw err;
    if (err.kind === "rate_limited") {
      mpPausedUntil = Math.max(mpPausedUntil, Date.now() + (err.retryAfterMs ?? 1000));
    }
    return { kind: "mp_error", error: err };
  }
}

/** Encrypts a fresh pair for the account's master columns. */
async function storedPair(
  run: Run,
  accountId: string,
  tokens: MpTokens,
  receivedAt: number,
): Promise<StoredPair> {
  const keys = await run.ctx.keys();
  return {
    accessTokenEncrypted: await encryptSecret(keys, accountId, "access_token", tokens.access_token),
    refreshTokenEncrypted: await encryptSecret(
      keys,
      accountId,
      "refresh_token",
      tokens.refresh_token,
    ),
    expiresIn: tokens.expires_in,
    tokenExpiresAt: new Date(receivedAt + tokens.expires_in * 1000),
    userId: tokens.user_id ?? null,
    publicKey: tokens.public_key ?? null,
    liveMode: tokens.live_mode ?? null,
    scope: tokens.scope ?? null,
  };
}

/**
 * Saves the pair MercadoPago just handed out (retrying), else escrows it in the Backend DB;
 * the old refresh token is spent either way, so the pair must not be dropped.
 */
async function saveTokens(
  run: Run,
  account: ClaimedAccount,
  tokens: MpTokens,
  receivedAt: number,
): Promise<RefreshResult> {
  const { ctx, log } = run;
  const pair = await storedPair(run, account.id, tokens, receivedAt);
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
      if (!saved) return superseded(run, account);
      return await synced(run, account, saved, "refreshed");
    } catch (err) {
      saveError = err;
      if (attempt < SAVE_RETRY_MS.length) await sleep(SAVE_RETRY_MS[attempt]);
    }
  }

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
      // Best effort: once the Admin DB is back, the next run may take the account at once.
      await ctx.admin((sql) => releaseLeases(sql, run.owner, [account.id])).catch(() => {});
      run.events.push(
        event(run, "escrowed", account, { base_version: account.mp_token_version }),
      );
      return { account_id: account.id, status: "escrowed", error: "admin_unavailable" };
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
  return { account_id: account.id, status: "failed", error: "token_lost" };
}

/** Applies an escrowed pair taken from the claimed version, instead of calling MercadoPago. */
async function applyEscrow(
  run: Run,
  account: ClaimedAccount,
  escrow: EscrowEntry,
): Promise<RefreshResult> {
  const { ctx, log } = run;
  const rejected = await verifyEscrow(run, account, escrow);
  if (rejected) {
    log.error("Escrowed MP token pair failed verification; discarded, the master is unchanged", {
      account_id: account.id,
      reason: rejected,
    });
    await ctx.backend((sql) => deleteEscrow(sql, account.id, escrow.baseVersion)).catch(() => {});
    run.events.push(event(run, "escrow_rejected", account, { reason: rejected }));
    run.unused.push(account.id);
    return { account_id: account.id, status: "failed", error: "escrow_rejected" };
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
    await ctx.admin((sql) => releaseLeases(sql, run.owner, [account.id])).catch(() => {});
    return { account_id: account.id, status: "failed", error: "escrow_apply_failed" };
  }
  if (!saved) return superseded(run, account);
  await ctx.backend((sql) => deleteEscrow(sql, account.id, escrow.baseVersion)).catch((err) =>
    log.warn("Applied escrow not removed; the next run discards it", {
      account_id: account.id,
      error: err,
    })
  );
  return await synced(run, account, saved, "escrow_applied");
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
  try {
    await decryptSecret(keys, account.id, "access_token", escrow.accessTokenEncrypted);
    await decryptSecret(keys, account.id, "refresh_token", escrow.refreshTokenEncrypted);
  } catch (err) {
    if (err instanceof DecryptError) return "decrypt_failed";
    throw err;
  }
  const [stored] = await run.ctx.admin((sql) =>
    sql<{ mp_user_id: number | null }[]>`
      select mp_user_id from nv_accounts where id = ${account.id}`
  );
  if (escrow.userId !== null && stored?.mp_user_id != null && escrow.userId !== stored.mp_user_id) {
    return "seller_mismatch";
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

/** Syncs a saved account to `clients` and records the success. */
async function synced(
  run: Run,
  account: ClaimedAccount,
  saved: AccountRow,
  status: "refreshed" | "escrow_applied",
): Promise<RefreshResult> {
  let sync: string;
  try {
    sync = (await syncAccountRow(run.ctx, saved)).result;
  } catch (err) {
    sync = "failed";
    run.log.warn("MP credentials refreshed but not synced to the Backend DB", {
      account_id: account.id,
      client_id: saved.backend_client_id,
      token_version: saved.mp_token_version,
      error: err,
    });
  }
  run.events.push(
    event(run, status, account, { token_version: saved.mp_token_version, sync }, saved),
  );
  return { account_id: account.id, status };
}

/** A save that lost the compare-and-swap: newer credentials (or another owner) won. */
function superseded(run: Run, account: ClaimedAccount): RefreshResult {
  run.log.warn("MP refresh lost the compare-and-swap; the newer credentials stay", {
    account_id: account.id,
    base_version: account.mp_token_version,
  });
  run.events.push(
    event(run, "refresh_superseded", account, { base_version: account.mp_token_version }),
  );
  return { account_id: account.id, status: "superseded", error: "superseded" };
}

/** Records a transient failure (backoff or Retry-After) and releases the lease. */
async function failed(
  run: Run,
  account: ClaimedAccount,
  error: string,
  retryAfterMs?: number,
): Promise<RefreshResult> {
  let state: Awaited<ReturnType<typeof recordFailure>>;
  try {
    state = await run.ctx.admin((sql) =>
      recordFailure(
        sql,
        account.id,
        run.owner,
        account.mp_token_version,
        error,
        BACKOFF,
        retryAfterMs,
      )
    );
  } catch (err) {
    run.log.warn("Could not record the refresh failure; the lease runs out instead", {
      account_id: account.id,
      error: err,
    });
  }
  run.log.warn("MP token refresh failed", {
    account_id: account.id,
    error,
    failures: state?.failures,
    next_attempt_at: state?.next_attempt_at?.toISOString(),
  });
  run.events.push(
    event(run, "refresh_failed", account, {
      error,
      failures: state?.failures ?? null,
      next_attempt_at: state?.next_attempt_at?.toISOString() ?? null,
    }),
  );
  return { account_id: account.id, status: "failed", error };
}

/** Records invalid_grant: the account needs re-authorization; its access token stays. */
async function reauthRequired(run: Run, account: ClaimedAccount): Promise<RefreshResult> {
  try {
    await run.ctx.admin((sql) =>
      recordReauthRequired(sql, account.id, run.owner, account.mp_token_version)
    );
  } catch (err) {
    run.log.warn("Could not record that the account needs re-authorization", {
      account_id: account.id,
      error: err,
    });
  }
  run.log.warn("MP refresh token rejected (invalid_grant); re-authorization required", {
    account_id: account.id,
  });
  run.events.push(event(run, "reauth_required", account, { error: "invalid_grant" }));
  return { account_id: account.id, status: "reauth_required", error: "invalid_grant" };
}

function event(
  run: Run,
  name: string,
  account: ClaimedAccount,
  detail: AuditEvent["detail"],
  saved?: AccountRow,
): AuditEvent {
  return {
    event: name,
    accountId: account.id,
    clientId: saved?.backend_client_id ?? account.backend_client_id,
    detail: { ...detail, run: run.owner },
    requestId: run.requestId,
  };
}
