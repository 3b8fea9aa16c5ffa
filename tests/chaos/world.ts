// deno-lint-ignore-file no-explicit-any
/**
 * The chaos run's model (what the run has done and may expect) and its checker. One `World` lives
 * for one fast-check run (one command sequence); `Totals` live for the whole `deno task chaos`
 * invocation.
 *
 * The checker (`checkInvariants`, after every step) only reads: both databases, the sandbox's
 * ledger (tests/chaos/ledger.ts), the run's platform receiver, the stack log. Whatever changes
 * state is a command (tests/chaos/commands.ts): a step of the shrunk list, replayed with it.
 *
 * Secrets: tokens are held in memory to compare them with `===` or by their ledger id; no message
 * built here or in the commands ever contains one (ids, versions, states and counts only).
 */
import { adminDb, backendDb, closeDbs, cluster, keyRing, sandbox, stack } from "../_stack.ts";
import { decryptSecret } from "../../shared/platform/crypto.ts";
import { checkEvents, type Platform } from "./events.ts";
import { addDelta, emptyDelta, type LedgerDelta, type LedgerMirror, tokenId } from "./ledger.ts";
import {
  crossAppProblem,
  faultExcuses,
  isLastResort,
  sendsPerAccount,
  sendsProblem,
  unkeptPair,
  usableRequestId,
} from "./judge.ts";

/** One MercadoPago application of the stack under the run (`MP_APPS`'s, or the single app). */
interface ChaosApp {
  site: string;
  clientId: string;
  clientSecret: string;
  webhookSecrets: string[];
}

/**
 * The applications of the stack under the run, from its environment: every entry of `MP_APPS`
 * in its order (`multi`), or else the single app (`MP_CLIENT_ID`, `MP_SITE_ID`, default `MLA`).
 */
interface ChaosApps {
  multi: boolean;
  list: ChaosApp[];
}

/** The stack's applications (see {@link ChaosApps}). */
export function stackApps(env: (name: string) => string | undefined = Deno.env.get): ChaosApps {
  const raw = env("MP_APPS");
  if (raw) {
    const apps = JSON.parse(raw) as Record<string, any>;
    return {
      multi: true,
      list: Object.entries(apps).map(([site, a]) => ({
        site,
        clientId: String(a.client_id),
        clientSecret: String(a.client_secret),
        webhookSecrets: (a.webhook_secrets ?? []).map(String),
      })),
    };
  }
  return {
    multi: false,
    list: [{
      site: env("MP_SITE_ID") || "MLA",
      clientId: env("MP_CLIENT_ID") ?? "",
      clientSecret: env("MP_CLIENT_SECRET") ?? "",
      webhookSecrets: [env("MP_WEBHOOK_SECRET") ?? ""],
    }],
  };
}

/** One account the run created (each with a seller of its own). */
export interface Acc {
  accountId: string;
  clientId: string;
  /** Its site: every connect, refresh, probe and webhook goes through that site's application. */
  site: string;
  /** The seller the model connected it to, as the sandbox issued its token (null: none yet). */
  seller: number | null;
  /**
   * Sellers `mp_user_id` may hold (invariant 6), each as the sandbox's ledger says it issued the
   * pair: the seeded grant's, a first connect's, a `replace_seller` connect's.
   */
  allowedSellers: Set<number>;
  /** mp-revoke answered 200, or a confirmed deauthorization revoked it; cleared by a connect. */
  revoked: boolean;
  /** Highest `clients.mp_token_version` seen (invariant 1). */
  maxCacheVersion: number;
  /** Ledger ids of token values planted through forged escrow rows (invariant 7). */
  forged: Set<string>;
  /** Outbox events of the account the invariant-10 check has seen (counted once each). */
  eventsSeen: Set<string>;
  /** Refresh-token sends this step may make for the account (invariant 4; 0 unless a command says). */
  refreshBudget: number;
}

/** A database fault in force. */
type DbState = "up" | "stopped";

export class Violation extends Error {
  constructor(readonly invariant: number | string, message: string) {
    super(`invariant ${invariant}: ${message}`);
  }
}

/** Counts over a whole chaos invocation. */
export interface Totals {
  /** Steps that ran and did something (no-op and shrinking steps not counted). */
  steps: number;
  /** Command sequences run before any failure (fast-check runs). */
  sequences: number;
  /** Steps that found nothing to do (an account without a seller, nothing to kill, …). */
  noopSteps: number;
  /** Steps and sequences run while shrinking a failure. */
  shrinkSteps: number;
  shrinkSequences: number;
  /** True once a failure was found: what runs next is shrinking. */
  shrinking: boolean;
  /** Faults that fired (a sandbox fault taken by a call, a database stopped or hung, …). */
  faults: Record<string, number>;
  /** Faults of one application that fired, by its site, then by kind (a part of `faults`). */
  faultsPerApp: Record<string, Record<string, number>>;
  /** Accounts the run created, by site (not while shrinking). */
  accountsPerApp: Record<string, number>;
  /** Sandbox faults set that no call took before they were cleared (not injected). */
  faultsUnfired: Record<string, number>;
  commands: Record<string, number>;
  violations: string[];
  /** Where the stack-log scan has got to. */
  logOffset: number;
}

export function newTotals(): Totals {
  return {
    steps: 0,
    sequences: 0,
    noopSteps: 0,
    shrinkSteps: 0,
    shrinkSequences: 0,
    shrinking: false,
    faults: {},
    faultsPerApp: {},
    accountsPerApp: {},
    faultsUnfired: {},
    commands: {},
    violations: [],
    logOffset: 0,
  };
}

/** What one step did, as the checker needs it. */
interface StepState {
  /** The ledger's records read during the step (commands may read it too). */
  delta: LedgerDelta;
  /** Both databases up from start to end and none hung: nothing excused a function's failure. */
  dbCalm: boolean;
  hung: boolean;
  /** Sites whose application's calls took a sandbox fault during the step (`*`: every app's). */
  faultSites: Set<string>;
  /** The faults that fired, each with the site of the one application it hit (null: none alone). */
  faults: { name: string; site: string | null }[];
}

/** A sandbox fault queued and not taken yet: its mode and the site it is limited to (null: every application). */
interface PendingFault {
  mode: string;
  site: string | null;
}

/** Request-controlled text a command sent: `strict` for request ids, which a function may use only when valid. */
interface SentText {
  text: string;
  strict: boolean;
}

/** The model and the handle on the real stack of one fast-check run. */
export class World {
  accounts: Acc[] = [];
  db: Record<"backend" | "admin", DbState> = { backend: "up", admin: "up" };
  /** A sandbox fault set and not taken by a call yet. */
  pendingFault: PendingFault | null = null;
  /** Response texts of failed answers this step (invariant 5: no secret in an error body). */
  errorBodies: string[] = [];
  /** Ledger ids of access tokens MercadoPago confirmed dead (401 on /users/me) in a calm step. */
  deadIds = new Set<string>();
  /** Request-controlled text sent in this sequence that must not be stored (invariant 8). */
  sent: SentText[] = [];
  step: StepState = {
    delta: emptyDelta(),
    dbCalm: true,
    hung: false,
    faultSites: new Set(),
    faults: [],
  };
  /** Seller ids handed out in this process. */
  private static nextSeller = 0;

  constructor(
    readonly totals: Totals,
    readonly log: (line: string) => void,
    /** The run's receiver of pushed events and reader of the pull API (invariant 10). */
    readonly platform: Platform,
    /** The run's copy of the sandbox's ledger. */
    readonly ledger: LedgerMirror,
    /** The stack's applications. */
    readonly apps: ChaosApps,
  ) {}

  /** The application of `site`. */
  app(site: string): ChaosApp {
    const app = this.apps.list.find((a) => a.site === site);
    if (!app) throw new Error(`the chaos stack runs no application of site ${site}`);
    return app;
  }

  /**
   * The client id a sandbox control of `site` is limited to: undefined for the single app (the
   * control of every call, as the single-app run always set it).
   */
  controlClient(site: string | null): string | undefined {
    return this.apps.multi && site !== null ? this.app(site).clientId : undefined;
  }

  /** The site of the application of `clientId` (undefined: none of the stack's). */
  siteOfClient(clientId: string): string | undefined {
    return this.apps.list.find((a) => a.clientId === clientId)?.site;
  }

  newSeller(): number {
    // Distinct per invocation and per process: a base from the clock, then a counter.
    World.nextSeller ||= 100_000_000 + (Date.now() % 1_000_000) * 1000;
    return ++World.nextSeller;
  }

  acc(i: number): Acc {
    return this.accounts[i % this.accounts.length];
  }

  /** The account of this run whose tokens `userId`'s are (undefined: none). */
  accountOfSeller(userId: number): Acc | undefined {
    return this.accounts.find((a) => a.seller === userId || a.allowedSellers.has(userId));
  }

  /** Adds an account of the run to the model (counted by site, unless shrinking). */
  addAccount(a: Acc) {
    this.accounts.push(a);
    if (!this.totals.shrinking) {
      this.totals.accountsPerApp[a.site] = (this.totals.accountsPerApp[a.site] ?? 0) + 1;
    }
  }

  /** Counts what the model saw happen (`observed:<what>` in the command counts). */
  observed(what: string) {
    if (this.totals.shrinking) return;
    const k = `observed:${what}`;
    this.totals.commands[k] = (this.totals.commands[k] ?? 0) + 1;
  }

  /** A fault that fired in this step (counted when the step counts), of `site`'s application alone when given. */
  fault(name: string, site: string | null = null) {
    this.step.faults.push({ name, site });
  }

  get allUp(): boolean {
    return this.db.backend === "up" && this.db.admin === "up";
  }

  /** No fault in force that could excuse an unexpected answer: databases up, no sandbox fault queued or taken in this step. */
  get calm(): boolean {
    return this.allUp && this.pendingFault === null && this.step.faultSites.size === 0;
  }

  /**
   * No fault in force that could excuse an unexpected answer for an account of `site`:
   * databases up, and no sandbox fault of its application (or of every one) queued or taken in
   * this step. Another application's fault is no excuse: failures stay in their country.
   */
  calmFor(site: string): boolean {
    return this.allUp && !faultExcuses(site, this.pendingFault, this.step.faultSites);
  }

  /** Queues a sandbox fault for the next call of `site`'s application (null: of every call). */
  async queueFault(mode: string, site: string | null) {
    await this.dropPendingFault(); // the one before was never taken: replaced, so not injected
    await sandbox.faults(mode, 1, this.controlClient(site));
    this.pendingFault = { mode, site };
  }

  /** Notes a failed answer's text for the invariant-5 check. */
  noteAnswer(res: { status: number; body: any }) {
    if (res.status >= 300 && res.status !== 302) this.errorBodies.push(JSON.stringify(res.body));
  }

  /** Reads the sandbox's ledger into the step's records; returns what this read brought. */
  async readLedger(): Promise<LedgerDelta> {
    const delta = await this.ledger.read();
    addDelta(this.step.delta, delta);
    for (const f of delta.faults) {
      const site = f.client_id === null ? null : this.siteOfClient(f.client_id) ?? null;
      this.fault(`sandbox_${f.mode}`, this.apps.multi ? site : null);
      this.step.faultSites.add(site ?? "*");
      this.pendingFault = null; // one fault is queued at a time, for one call
    }
    return delta;
  }

  /** Starts a step: its ledger records, budgets and faults from nothing. */
  beginStep() {
    this.step = {
      delta: emptyDelta(),
      dbCalm: this.allUp,
      hung: false,
      faultSites: new Set(),
      faults: [],
    };
    for (const a of this.accounts) a.refreshBudget = 0;
  }

  /** Ends a step (its ledger read): counts it, unless it was a no-op or shrinking. */
  async endStep(name: string, noop: boolean) {
    await this.readLedger();
    this.step.dbCalm &&= this.allUp && !this.step.hung;
    const t = this.totals;
    if (t.shrinking) t.shrinkSteps++;
    else if (noop) t.noopSteps++;
    else {
      t.steps++;
      t.commands[name] = (t.commands[name] ?? 0) + 1;
      for (const f of this.step.faults) {
        t.faults[f.name] = (t.faults[f.name] ?? 0) + 1;
        if (f.site === null) continue;
        const per = t.faultsPerApp[f.site] ??= {};
        per[f.name] = (per[f.name] ?? 0) + 1;
      }
    }
  }

  /**
   * Forgets the queued sandbox fault, counted as set and never taken (not injected); with
   * several applications it is cleared at the sandbox too (a fault of one application's is not
   * replaced by another's).
   */
  async dropPendingFault() {
    const p = this.pendingFault;
    if (p === null) return;
    if (!this.totals.shrinking) {
      const t = this.totals.faultsUnfired;
      const k = `sandbox_${p.mode}`;
      t[k] = (t[k] ?? 0) + 1;
    }
    this.pendingFault = null;
    if (this.apps.multi) await sandbox.faults("none", 0, this.controlClient(p.site));
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
    if (this.apps.multi) {
      for (const app of this.apps.list) {
        await sandbox.faults("none", 0, app.clientId);
        await sandbox.latency(0, app.clientId);
      }
    }
    await this.dropPendingFault();
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

/**
 * The escrowed pair of an account: absent (null), or its refresh token decrypted (null when it
 * does not decrypt under the account's AAD).
 */
export async function escrowOf(accountId: string): Promise<{ refresh: string | null } | null> {
  const [row] = await backendDb()`select refresh_token_encrypted from mp_refresh_escrow
    where account_id = ${accountId}`;
  if (!row) return null;
  try {
    return {
      refresh: await decryptSecret(
        await keyRing(),
        accountId,
        "refresh_token",
        row.refresh_token_encrypted,
      ),
    };
  } catch {
    return { refresh: null };
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
 * Invariants 1–10 against the model, both databases (those up), the sandbox's ledger, the
 * receiver and the stack log. Reads only. Throws a `Violation` naming the invariant, the account
 * and what differs (never a secret).
 */
export async function checkInvariants(w: World): Promise<void> {
  const d = w.step.delta;

  // No request carried one application's credentials for another's token (the sandbox's count,
  // of every application, since it started).
  const crossApp = crossAppProblem(await sandbox.stats());
  if (crossApp) throw new Violation("cross_app", crossApp);

  // 3: every refresh token sent at most once, or twice with the last resort (the ledger's own
  // record of each presentation and its answer).
  for (const np of d.presentations) {
    const all = w.ledger.presentationsOf(np.refreshId);
    const problem = sendsProblem(all, np.pair?.access_expires_at ?? null);
    if (
      !problem && np.pair &&
      isLastResort(np.pair.presented.slice(0, np.index + 1), np.pair.access_expires_at)
    ) w.observed("last_resort_send");
    if (problem) {
      const whose = np.pair ? `of seller ${np.pair.user_id}` : "never issued";
      throw new Violation(3, `refresh token ${np.refreshId} (${whose}) ${problem}`);
    }
  }

  // 4: no account's refresh token is sent more often in a step than its mp-refresh runs allow.
  const { perAccount, unattributed } = sendsPerAccount(
    d.presentations,
    (u) => w.accountOfSeller(u)?.accountId,
  );
  for (const a of w.accounts) {
    const sends = perAccount.get(a.accountId) ?? 0;
    if (sends > a.refreshBudget) {
      throw new Violation(
        4,
        `account ${a.accountId}: ${sends} refresh token send(s) in one step, ${a.refreshBudget} allowed by its runs`,
      );
    }
  }
  for (const np of unattributed) {
    const forged = w.accounts.some((a) => a.forged.has(np.refreshId));
    if (forged) throw new Violation(7, `a forged escrowed refresh token was sent to MercadoPago`);
    if (np.pair) {
      throw new Violation(
        6,
        `a refresh token of seller ${np.pair.user_id}, whom no account holds, was sent (${np.p.answer})`,
      );
    }
  }

  // 9: a 401 on /users/me delivered in a step with both databases up is a confirmed death the
  // system must act on (with a database down it may answer 503 and change nothing).
  for (const u of d.usersMe) {
    if (u.status !== 401 || !u.delivered || u.access_id === null) continue;
    if (w.step.dbCalm) {
      if (!w.deadIds.has(u.access_id)) w.observed("confirmed_dead");
      w.deadIds.add(u.access_id);
    } else w.observed("confirmed_dead_with_a_database_down");
  }

  // 5: no secret in the stack log (read the log first: a secret in it was issued before the
  // secret list is fetched) nor in an error body of this step.
  const text = await newLogText(w.totals);
  const secrets = await knownSecretsNow(w.apps);
  const leaked = [
    ...new Set([...findIn(text, secrets), ...findIn(w.errorBodies.join("\n"), secrets)]),
  ];
  w.errorBodies = [];
  if (leaked.length > 0) {
    throw new Violation(5, `${leaked.length} secret(s) appear in the stack log or an error body`);
  }

  // 8: request-controlled text is never stored over 128 characters, and a request id a function
  // may not use is neither stored nor logged.
  await checkSentText(w, text);

  for (const a of w.accounts) {
    const master = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const cache = w.db.backend === "up" ? await cacheOf(a.clientId) : null;
    const escrow = w.db.backend === "up" ? await escrowOf(a.accountId) : undefined;
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

    // 2: revoked → no token in either database (get-mp-config's answer: GetConfig's check).
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
    }

    // 6: the master's seller is one a connect allowed, and the one the sandbox issued its
    // tokens to.
    if (master?.seller != null && !a.allowedSellers.has(master.seller)) {
      throw new Violation(6, `${id}: mp_user_id is ${master.seller}, not one a connect put there`);
    }
    for (const [what, token] of [["access", master?.access], ["refresh", master?.refresh]]) {
      if (!master || !token) continue;
      const pair = what === "access" ? w.ledger.pairOfAccess(token) : w.ledger.pairOfRefresh(token);
      if (!pair) {
        throw new Violation(7, `${id}: the master holds a ${what} token MercadoPago never issued`);
      }
      if (pair.user_id !== master.seller) {
        throw new Violation(
          6,
          `${id}: the master holds seller ${pair.user_id}'s ${what} token under mp_user_id ${master.seller}`,
        );
      }
    }

    // 7: nothing planted through the escrow reaches the master.
    if (
      master &&
      [master.access, master.refresh].some((t) => t !== null && a.forged.has(tokenId(t)))
    ) {
      throw new Violation(7, `${id}: a forged escrowed token reached the master`);
    }

    // 9: a token MercadoPago confirmed dead is in neither database.
    for (const [where, token] of [["master", master?.access], ["cache", cache?.access]]) {
      if (token && w.deadIds.has(tokenId(token))) {
        throw new Violation(
          9,
          `${id}: the ${where} still holds an access token MercadoPago confirmed dead (401 on /users/me; ${
            killedBy(w, tokenId(token))
          })`,
        );
      }
    }

    // 3: a pair MercadoPago delivered for the refresh token the master holds is kept (the
    // master would hold it, or the escrow).
    if (master?.refresh && master.seller !== null && escrow !== undefined) {
      const held = tokenId(master.refresh);
      const escrowed = escrow?.refresh ? tokenId(escrow.refresh) : null;
      const lost = unkeptPair(w.ledger, held, master.seller, escrowed);
      if (lost) {
        throw new Violation(
          3,
          `${id}: MercadoPago delivered pair ${lost.refresh_id} for the refresh token the master holds (state ${master.state}); neither the master nor the escrow keeps it`,
        );
      }
    }
  }

  // 10: events (tests/chaos/events.ts).
  await checkEvents(w, secrets);
}

/** Why the sandbox's kill list says an access token died (or that it is not on it). */
function killedBy(w: World, accessId: string): string {
  const kill = w.ledger.kills.find((k) => k.access_ids.includes(accessId));
  return kill ? `killed by ${kill.cause}` : "not on the sandbox's kill list";
}

/** Every text column of the public tables of one database, per table (for the invariant-8 scan). */
const textColumns = new Map<"admin" | "backend", Promise<Map<string, string[]>>>();

function columnsOf(which: "admin" | "backend"): Promise<Map<string, string[]>> {
  let p = textColumns.get(which);
  if (!p) {
    const db = which === "admin" ? adminDb() : backendDb();
    p = db`select table_name, column_name from information_schema.columns
      where table_schema = 'public' and data_type in ('text', 'character varying', 'jsonb', 'json')
        and table_name in (select table_name from information_schema.tables
                           where table_schema = 'public' and table_type = 'BASE TABLE')`
      .then((rows) => {
        const out = new Map<string, string[]>();
        for (const r of rows) {
          out.set(r.table_name, [...(out.get(r.table_name) ?? []), r.column_name]);
        }
        return out;
      });
    textColumns.set(which, p);
    p.catch(() => textColumns.delete(which));
  }
  return p;
}

const quoteIdent = (s: string) => `"${s.replaceAll('"', '""')}"`;
const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/**
 * Invariant 8 after every step: no request-controlled text this sequence sent that is over 128
 * characters (nor a request id a function may not use) appears in any text column of either
 * database (up), and no such request id in the stack log. Searched by its first 64 characters,
 * so a copy cut to 128 is found too.
 */
async function checkSentText(w: World, logText: string): Promise<void> {
  const banned = w.sent.filter((s) =>
    s.text.length > 128 || (s.strict && !usableRequestId(s.text) && s.text.length >= 16)
  );
  if (banned.length === 0) return;
  for (const s of banned) {
    if (s.strict && logText.includes(s.text.slice(0, 64))) {
      throw new Violation(
        8,
        `a request id of ${s.text.length} characters a function may not use appears in the stack log`,
      );
    }
  }
  const patterns = banned.map((s) => `%${likeEscape(s.text.slice(0, 64))}%`);
  for (const which of ["admin", "backend"] as const) {
    if (w.db[which] !== "up") continue;
    const db = which === "admin" ? adminDb() : backendDb();
    for (const [table, cols] of await columnsOf(which)) {
      const concat = cols.map((c) => `coalesce(${quoteIdent(c)}::text, '')`).join(" || ' ' || ");
      const [{ n }] = await db.unsafe(
        `select count(*)::int as n from public.${
          quoteIdent(table)
        } where ${concat} like any ($1::text[])`,
        [patterns],
      );
      if (n > 0) {
        throw new Violation(
          8,
          `${which} table ${table} stores request-controlled text a request was not allowed to leave (${n} row(s))`,
        );
      }
    }
  }
}

/** Every secret the stack knows of now: issued tokens and codes, keys, webhook secrets. */
async function knownSecretsNow(apps: ChaosApps): Promise<string[]> {
  const res = await fetch(`${stack.sandboxUrl}/__sandbox/secrets`);
  const issued = (await res.json()).secrets as string[];
  const keys = [
    stack.secretKey,
    stack.serviceRoleKey,
    stack.env("MP_CLIENT_SECRET"),
    stack.webhookSecret,
    ...apps.list.flatMap((a) => [a.clientSecret, ...a.webhookSecrets]),
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
