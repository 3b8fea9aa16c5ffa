// deno-lint-ignore-file no-explicit-any
/**
 * The chaos run's model (what the run has done and may expect) and its view of the real stack
 * (both databases, the sandbox, the stack log). One `World` lives for one fast-check run (one
 * command sequence); `Totals` live for the whole `deno task chaos` invocation.
 *
 * Secrets: tokens are held in memory to compare them with `===`; no message built here or in
 * the commands ever contains one (ids, versions, states and counts only).
 */
import { adminDb, backendDb, call, closeDbs, cluster, keyRing, sandbox, stack } from "../_stack.ts";
import { decryptSecret } from "../../shared/platform/crypto.ts";
import { checkEvents, type Platform } from "./events.ts";

/** One account the run created (each with a seller of its own). */
export interface Acc {
  accountId: string;
  clientId: string;
  /** The seller the model expects in `mp_user_id` (null: never connected). */
  seller: number | null;
  /** Sellers `mp_user_id` may legitimately hold (invariant 6): the first connect's, and every replace_seller connect's. */
  allowedSellers: Set<number | null>;
  /** mp-revoke answered 200, or a confirmed deauthorization revoked it; cleared by a connect. */
  revoked: boolean;
  /** A refresh whose answer may be lost (after-mode fault, isolate killed): exempt from the lost-token check until the next connect or refresh. */
  unknownOutcome: boolean;
  /** Highest `clients.mp_token_version` seen (invariant 1). */
  maxCacheVersion: number;
  /** Access tokens MercadoPago killed (invalidate, deauthorize) — known dead at MercadoPago, not yet confirmed. */
  mpDead: Set<string>;
  /** Access tokens the system confirmed dead (invariant 9). */
  confirmedDead: Set<string>;
  /** Token values planted through forged escrow rows (invariant 7). */
  forged: Set<string>;
  /** Outbox events of the account the invariant-10 check has seen (counted once each). */
  eventsSeen: Set<string>;
}

/** Sandbox modes applied after processing: they concern token calls only (local/sandbox.ts). */
const AFTER_MODES = ["lose_answer", "error_500_after", "malformed_200", "other_seller"];

/** A database fault in force. */
export type DbState = "up" | "stopped";

export class Violation extends Error {
  constructor(readonly invariant: number | string, message: string) {
    super(`invariant ${invariant}: ${message}`);
  }
}

/** Counts over a whole chaos invocation. */
export interface Totals {
  steps: number;
  runs: number;
  faults: Record<string, number>;
  commands: Record<string, number>;
  violations: string[];
  /** Reuse count of the sandbox when the invocation started (invariant 3 baseline). */
  reuseBaseline: number;
  /** Where the invariant-5 scan of the stack log has got to. */
  logOffset: number;
}

export function newTotals(): Totals {
  return {
    steps: 0,
    runs: 0,
    faults: {},
    commands: {},
    violations: [],
    reuseBaseline: 0,
    logOffset: 0,
  };
}

/** The model and the handle on the real stack of one fast-check run. */
export class World {
  accounts: Acc[] = [];
  db: Record<"backend" | "admin", DbState> = { backend: "up", admin: "up" };
  /** A sandbox fault set and maybe not consumed yet. */
  pendingFault: string | null = null;
  /** Token + /users/me calls at the sandbox when the fault was set. */
  faultCallsAt = 0;
  /** Response texts of failed answers this step (invariant 5: no secret in an error body). */
  errorBodies: string[] = [];
  /** Seller ids handed out in this run. */
  private static nextSeller = 0;

  constructor(
    readonly totals: Totals,
    readonly log: (line: string) => void,
    /** The run's receiver of pushed events and reader of the pull API (invariant 10). */
    readonly platform: Platform,
  ) {}

  newSeller(): number {
    // Distinct per invocation and per process: a base from the clock, then a counter.
    World.nextSeller ||= 100_000_000 + (Date.now() % 1_000_000) * 1000;
    return ++World.nextSeller;
  }

  acc(i: number): Acc {
    return this.accounts[i % this.accounts.length];
  }

  /** Counts what the model saw happen (`observed:<what>` in the command counts). */
  observed(what: string) {
    const k = `observed:${what}`;
    this.totals.commands[k] = (this.totals.commands[k] ?? 0) + 1;
  }

  fault(name: string) {
    this.totals.faults[name] = (this.totals.faults[name] ?? 0) + 1;
  }

  get allUp(): boolean {
    return this.db.backend === "up" && this.db.admin === "up";
  }

  /** Notes a failed answer's text for the invariant-5 check. */
  noteAnswer(res: { status: number; body: any }) {
    if (res.status >= 300 && res.status !== 302) this.errorBodies.push(JSON.stringify(res.body));
  }

  /** Clears a pending sandbox fault once the sandbox has seen a call since it was set. */
  async settleFault() {
    if (!this.pendingFault) return;
    // The after-processing modes concern token calls only; the others also /users/me.
    const s = await sandbox.stats();
    if (this.calls(s, this.pendingFault) > this.faultCallsAt) this.pendingFault = null;
  }

  /** The sandbox calls a fault of `mode` may be taken by, counted so far. */
  calls(s: { token_calls: number; users_me_calls: number }, mode: string): number {
    return AFTER_MODES.includes(mode) ? s.token_calls : s.token_calls + s.users_me_calls;
  }

  /** Undoes every fault: databases started, sandbox faults and latency cleared. */
  async restore() {
    for (const w of ["backend", "admin"] as const) {
      await cluster(w).freeze(false).catch(() => {});
      if (this.db[w] !== "up") {
        await cluster(w).start();
        this.db[w] = "up";
      }
    }
    await closeDbs();
    await sandbox.faults("none", 0);
    await sandbox.latency(0);
    this.pendingFault = null;
    this.platform.mode = "ok";
  }
}

/** The master row of an account, decrypted (null fields when absent). */
export async function masterOf(accountId: string) {
  const [row] = await adminDb()`select id, mp_connected, mp_user_id, mp_token_version,
      mp_access_token_encrypted, mp_refresh_token, mp_state, mp_state_reason
    from nv_accounts where id = ${accountId}`;
  if (!row) return null;
  const ring = await keyRing();
  const access = row.mp_access_token_encrypted
    ? await decryptSecret(ring, accountId, "access_token", row.mp_access_token_encrypted)
    : null;
  const refresh = row.mp_refresh_token
    ? await decryptSecret(ring, accountId, "refresh_token", row.mp_refresh_token)
    : null;
  return {
    connected: row.mp_connected as boolean,
    seller: row.mp_user_id === null ? null : Number(row.mp_user_id),
    version: Number(row.mp_token_version),
    access,
    refresh,
    state: row.mp_state as string,
    reason: row.mp_state_reason as string | null,
  };
}

/** The cache row of a client. */
export async function cacheOf(clientId: string) {
  const [row] = await backendDb()`select mp_access_token, mp_token_version
    from clients where id = ${clientId}`;
  if (!row) return null;
  return {
    access: row.mp_access_token as string | null,
    version: row.mp_token_version === null ? -1 : Number(row.mp_token_version),
  };
}

/** The escrowed refresh token of an account, decrypted when it decrypts (null otherwise). */
async function escrowRefresh(accountId: string): Promise<string | null> {
  const [row] = await backendDb()`select refresh_token_encrypted from mp_refresh_escrow
    where account_id = ${accountId}`;
  if (!row) return null;
  try {
    return await decryptSecret(
      await keyRing(),
      accountId,
      "refresh_token",
      row.refresh_token_encrypted,
    );
  } catch {
    return null;
  }
}

/** Reads the stack log from where the last scan stopped. */
async function newLogText(totals: Totals): Promise<string> {
  const file = await Deno.open(stack.env("STACK_LOG"), { read: true });
  try {
    await file.seek(totals.logOffset, Deno.SeekMode.Start);
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(1 << 16);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      totals.logOffset += n;
    }
    // Keep some overlap so a secret split over two scans is still seen.
    const text = new TextDecoder().decode(await new Blob(chunks as BlobPart[]).arrayBuffer());
    totals.logOffset = Math.max(0, totals.logOffset - 512);
    return text;
  } finally {
    file.close();
  }
}

/**
 * Invariants 1–10 against the model, both databases (those up), the sandbox and the stack log.
 * Throws a `Violation` naming the invariant, the account and what differs (never a secret).
 */
export async function checkInvariants(w: World): Promise<void> {
  // 3: no refresh token presented twice, ever (the sandbox counts every reuse).
  const stats = await sandbox.stats();
  if (stats.refresh_token_reuse > w.totals.reuseBaseline) {
    throw new Violation(
      3,
      `the sandbox saw ${
        stats.refresh_token_reuse - w.totals.reuseBaseline
      } refresh token(s) presented twice`,
    );
  }

  // 5: no secret in the stack log (read the log first: a secret in it was issued before the
  // secret list is fetched) nor in an error body of this step.
  const text = await newLogText(w.totals);
  const secrets = await knownSecretsNow();
  const leaked = [
    ...new Set([...findIn(text, secrets), ...findIn(w.errorBodies.join("\n"), secrets)]),
  ];
  w.errorBodies = [];
  if (leaked.length > 0) {
    throw new Violation(5, `${leaked.length} secret(s) appear in the stack log or an error body`);
  }

  for (const a of w.accounts) {
    const master = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const cache = w.db.backend === "up" ? await cacheOf(a.clientId) : null;
    const id = `account ${a.accountId}`;

    // 1: the cache version never goes down, is never ahead of the master, and at the master's
    // version holds the master's token.
    if (cache) {
      if (cache.version < a.maxCacheVersion) {
        throw new Violation(
          1,
          `${id}: cache version went from ${a.maxCacheVersion} to ${cache.version}`,
        );
      }
      a.maxCacheVersion = cache.version;
      if (master) {
        if (cache.version > master.version) {
          throw new Violation(
            1,
            `${id}: cache version ${cache.version} ahead of master ${master.version}`,
          );
        }
        if (
          cache.version === master.version && cache.access !== null &&
          cache.access !== master.access
        ) {
          throw new Violation(
            1,
            `${id}: cache at the master's version ${master.version} holds another token`,
          );
        }
      }
    }

    // 2: revoked → nothing in either database, and get-mp-config answers 404.
    if (a.revoked) {
      if (master && (master.connected || master.access !== null)) {
        throw new Violation(2, `${id}: revoked, but the master is connected or holds a token`);
      }
      if (cache && cache.access !== null) {
        throw new Violation(
          2,
          `${id}: revoked, but the cache holds a token (version ${cache.version})`,
        );
      }
      if (w.db.admin === "up" || w.db.backend === "up") {
        const res = await call("get-mp-config", { client_id: a.clientId });
        w.noteAnswer(res);
        if (res.status === 200) {
          throw new Violation(
            2,
            `${id}: revoked, but get-mp-config answered ${res.status} (${res.body?.source})`,
          );
        }
      }
    }

    // 6: the seller changes only through connects that may change it.
    if (master && !a.allowedSellers.has(master.seller)) {
      throw new Violation(6, `${id}: mp_user_id is ${master.seller}, not one a connect put there`);
    }
    if (master) a.seller = master.seller;

    // 7: nothing planted through the escrow reaches the master.
    if (master && (a.forged.has(master.access ?? "") || a.forged.has(master.refresh ?? ""))) {
      throw new Violation(7, `${id}: a forged escrowed token reached the master`);
    }

    // 9: a token confirmed dead is in neither database, and get-mp-config does not answer it.
    if (a.confirmedDead.size > 0 && (w.db.admin === "up" || w.db.backend === "up")) {
      const res = await call("get-mp-config", { client_id: a.clientId });
      w.noteAnswer(res);
      if (res.status === 200 && a.confirmedDead.has(res.body.access_token)) {
        throw new Violation(
          9,
          `${id}: get-mp-config (${res.body.source}) answered a token confirmed dead`,
        );
      }
    }
    for (const dead of a.confirmedDead) {
      if (master?.access === dead || cache?.access === dead) {
        throw new Violation(9, `${id}: a token MercadoPago confirmed dead is still stored`);
      }
    }

    // 3: a refresh token MercadoPago issued for the account is kept (master or escrow) unless
    // the account knows it lost track (at risk, needing reauthorization, revoked).
    if (master && cache && master.connected && master.seller !== null && !a.unknownOutcome) {
      const issued = await sandbox.lastTokens(master.seller);
      if (
        issued && Number(issued.user_id) === master.seller &&
        issued.refresh_token !== master.refresh &&
        !["at_risk", "reauth_required", "revoked"].includes(master.state)
      ) {
        const escrowed = await escrowRefresh(a.accountId);
        if (issued.refresh_token !== escrowed) {
          throw new Violation(
            3,
            `${id}: the last refresh token MercadoPago issued is neither in the master nor escrowed (state ${master.state})`,
          );
        }
      }
    }
  }

  // 10: events (tests/chaos/events.ts).
  await checkEvents(w, secrets);
}

/** Every secret the stack knows of now: issued tokens and codes, keys, webhook secrets. */
export async function knownSecretsNow(): Promise<string[]> {
  const res = await fetch(`${stack.sandboxUrl}/__sandbox/secrets`);
  const issued = (await res.json()).secrets as string[];
  const keys = [
    stack.secretKey,
    stack.serviceRoleKey,
    stack.env("MP_CLIENT_SECRET"),
    stack.webhookSecret,
    ...stack.env("PLATFORM_WEBHOOK_SECRETS").split(/\s+/).flatMap((
      k,
    ) => [k, k.replace(/^whsec_/, "")]),
    ...stack.env("MP_TOKEN_KEYS").split(",").map((k) => k.slice(k.indexOf(":") + 1)),
  ];
  return [...issued, ...keys].filter((s) => s && s.length >= 8);
}

export function findIn(text: string, secrets: string[]): string[] {
  if (!text) return [];
  return secrets.filter((s) => text.includes(s) || text.includes(encodeURIComponent(s)));
}
