// deno-lint-ignore-file no-explicit-any
/**
 * The chaos run's commands: each a fast-check `AsyncCommand` over a `World` (the model and the
 * real stack). `run` drives the real handlers through the gateway (or a domain function
 * in-process, for the backfill), updates the model from what it observed, asserts what SPEC
 * requires of the answer when no fault could excuse it, and then checks invariants 1–10
 * (`checkInvariants`). Commands hold only indices and modes, so their `toString` (the shrunk
 * command list of a failure) never shows a secret.
 */
import fc from "fast-check";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  cluster,
  keyRing,
  newAccount,
  newClient,
  sandbox,
  stack,
} from "../_stack.ts";
import { encryptSecret } from "../../shared/platform/crypto.ts";
import { signatureManifest, signManifest } from "../../shared/mercadopago/signature.ts";
import { createContext } from "../../shared/platform/context.ts";
import { loadConfig } from "../../shared/platform/config.ts";
import { createLogger } from "../../shared/platform/log.ts";
import { runBackfill } from "../../shared/operations/backfill.ts";
import { type Acc, cacheOf, checkInvariants, masterOf, Violation, type World } from "./world.ts";
import type { ReceiverMode } from "./events.ts";

type Cmd = fc.AsyncCommand<World, World, false>;

const MAX_ACCOUNTS = 5;

/** A fresh model account. */
function model(accountId: string, clientId: string, seller: number | null): Acc {
  return {
    accountId,
    clientId,
    seller,
    allowedSellers: new Set([seller]),
    revoked: false,
    unknownOutcome: false,
    maxCacheVersion: -1,
    mpDead: new Set(),
    confirmedDead: new Set(),
    forged: new Set(),
    eventsSeen: new Set(),
  };
}

/** Base of every command: counts the step, runs it, settles the fault, checks invariants. */
abstract class Step implements Cmd {
  abstract readonly name: string;
  check(w: Readonly<World>): boolean {
    return w.accounts.length > 0;
  }
  abstract act(w: World): Promise<void>;
  async run(_m: World, w: World): Promise<void> {
    w.totals.steps++;
    w.totals.commands[this.name] = (w.totals.commands[this.name] ?? 0) + 1;
    w.log(`step ${w.totals.steps}: ${this}`);
    await this.act(w);
    await w.settleFault();
    await checkInvariants(w);
  }
  abstract toString(): string;
}

/** No fault in force that could excuse an unexpected answer. */
const calm = (w: World) => w.allUp && !w.pendingFault;

function expect(w: World, ok: boolean, invariant: number | string, what: string) {
  if (!ok && calm(w)) throw new Violation(invariant, what);
}

// ---------------------------------------------------------------------------------------------
// Connect (OAuth through the sandbox)

/** mp-oauth-start → the sandbox's authorization (as `seller`) → mp-oauth-callback. */
async function oauth(
  w: World,
  accountId: string,
  seller: number,
  replace: boolean,
): Promise<{ ok: boolean; reason: string | null }> {
  const start = await call("mp-oauth-start", {
    account_id: accountId,
    ...(replace ? { replace_seller: true } : {}),
  });
  w.noteAnswer(start);
  if (start.status !== 200) return { ok: false, reason: `start_${start.status}` };
  const url = new URL(start.body.url);
  url.searchParams.set("user_id", String(seller));
  const auth = await fetch(url, { redirect: "manual" });
  await auth.body?.cancel();
  const back = auth.headers.get("location");
  if (auth.status !== 302 || !back) return { ok: false, reason: "authorize" };
  const cb = await fetch(back, { redirect: "manual" });
  await cb.body?.cancel();
  const loc = cb.headers.get("location");
  if (cb.status !== 302 || !loc) return { ok: false, reason: `callback_${cb.status}` };
  const q = new URL(loc).searchParams;
  return { ok: q.get("mp") === "connected", reason: q.get("reason") };
}

/**
 * A first connect, or one with `replace_seller`, sets the seller MercadoPago's token answer
 * names (the sandbox's `other_seller` mode may name another than the one that authorized): no
 * change of seller, or one the caller asked for (invariant 6 forbids only the others), so
 * whatever the master took is allowed.
 */
async function answeredSeller(w: World, a: Acc, asked: number) {
  a.seller = asked;
  if (w.db.admin !== "up") return;
  const m = await masterOf(a.accountId);
  if (m?.seller != null) {
    a.allowedSellers.add(m.seller);
    a.seller = m.seller;
  }
}

/** A new account linked to a new client, connected through OAuth as a new seller. */
export class ConnectNew extends Step {
  readonly name = "connect";
  override check(w: Readonly<World>) {
    return w.accounts.length < MAX_ACCOUNTS && w.allUp;
  }
  async act(w: World) {
    const clientId = await newClient();
    const accountId = await newAccount({ clientId });
    const seller = w.newSeller();
    const a = model(accountId, clientId, null);
    a.allowedSellers.add(seller);
    w.accounts.push(a);
    const r = await oauth(w, accountId, seller, false);
    if (r.ok) await answeredSeller(w, a, seller);
    expect(w, r.ok, "connect", `a first connect failed (${r.reason})`);
  }
  toString() {
    return "ConnectNew";
  }
}

/** Connect again: the same seller (reconnect), another with replace_seller, or another without. */
export class Connect extends Step {
  readonly name: string;
  constructor(readonly i: number, readonly kind: "reconnect" | "replace" | "mismatch") {
    super();
    this.name = `connect_${kind}`;
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const seller = this.kind === "reconnect" && a.seller !== null ? a.seller : w.newSeller();
    const legit = this.kind !== "mismatch" || a.seller === null;
    if (legit) a.allowedSellers.add(seller);
    const fault = w.pendingFault;
    const r = await oauth(w, a.accountId, seller, this.kind === "replace");
    // A code exchange MercadoPago processed but whose answer was lost or unreadable issued a
    // pair nobody received: not a refresh token of ours to keep (invariant 3 is about those).
    if (!r.ok && fault !== null) a.unknownOutcome = true;
    if (r.ok) {
      if (!legit) {
        throw new Violation(6, `a connect as another seller without replace_seller succeeded`);
      }
      if (a.seller === null || this.kind === "replace") await answeredSeller(w, a, seller);
      else a.seller = seller;
      a.revoked = false;
      a.unknownOutcome = false;
    } else if (legit) {
      expect(w, false, "connect", `${this.kind} failed (${r.reason})`);
    } else {
      expect(w, r.reason === "seller_mismatch", 6, `mismatch answered ${r.reason}`);
    }
  }
  toString() {
    return `Connect(${this.i}, ${this.kind})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Provisioning

/** A new account with a sandbox grant whose token is due (30 days), provisioned (step 7.1). */
export class ProvisionNew extends Step {
  readonly name = "provision";
  override check(w: Readonly<World>) {
    return w.accounts.length < MAX_ACCOUNTS && w.allUp;
  }
  async act(w: World) {
    const seller = w.newSeller();
    const { grants: [grant] } = await sandbox.post("grants", { count: 1, user_id: seller });
    const clientId = await newClient();
    const accountId = await newAccount({ grant, expiresInDays: 30 });
    w.accounts.push(model(accountId, clientId, seller));
    const res = await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
    w.noteAnswer(res);
    expect(
      w,
      res.status === 200 && res.body.synced === true,
      "provision",
      `answered ${res.status}`,
    );
  }
  toString() {
    return "ProvisionNew";
  }
}

/** provision-step-7-1 again for a linked account: harmless. */
export class Provision extends Step {
  readonly name = "provision_again";
  constructor(readonly i: number) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const res = await call("provision-step-7-1", {
      account_id: a.accountId,
      client_id: a.clientId,
    });
    w.noteAnswer(res);
    if (res.status === 200 && res.body.synced === true && a.revoked) {
      throw new Violation(2, `provisioning a revoked account synced a token`);
    }
  }
  toString() {
    return `Provision(${this.i})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Refresh

/** Two mp-refresh runs at once for the account (invariant 4: it is refreshed at most once). */
export class RefreshPair extends Step {
  readonly name = "refresh_pair";
  constructor(readonly i: number, readonly force: boolean) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const before = await sandbox.stats();
    const fault = w.pendingFault;
    const body = { account_id: a.accountId, ...(this.force ? { force: true } : {}) };
    const runs = await Promise.all([call("mp-refresh", body), call("mp-refresh", body)]);
    const after = await sandbox.stats();
    runs.forEach((r) => w.noteAnswer(r));
    const results = runs.flatMap((r) => (r.status === 200 ? r.body.results : []) as any[]);
    const refreshed = results.filter((r) => r.status === "refreshed").length;
    // Without force the account is refreshed once (after the first, it is no longer due);
    // with force each run may refresh it, one after the other (never both at once: the lease).
    const most = this.force ? 2 : 1;
    const processed = after.refreshes - before.refreshes;
    if (refreshed > most || processed > most) {
      throw new Violation(
        4,
        `two concurrent runs (force=${this.force}): ${refreshed} refreshed, ${processed} refresh(es) processed by MercadoPago`,
      );
    }
    if (refreshed === 1) a.unknownOutcome = false;
    // An after-mode fault (or a timeout) on a processed refresh: the answer is lost on purpose.
    if (
      fault && after.token_calls > before.token_calls &&
      ["lose_answer", "error_500_after", "malformed_200", "timeout", "other_seller"].includes(fault)
    ) a.unknownOutcome = true;
    if (runs.some((r) => r.status !== 200)) a.unknownOutcome ||= !w.allUp;
  }
  toString() {
    return `RefreshPair(${this.i}, force=${this.force})`;
  }
}

/**
 * An isolate terminated mid-run: mp-refresh is called while the sandbox holds token calls
 * (latency); once the call is at the sandbox, every live mp-refresh isolate of this stack is
 * SIGKILLed (pids from the gateway's "Edge isolate started" log lines).
 */
export class KillRefreshIsolate extends Step {
  readonly name = "kill_isolate";
  constructor(readonly i: number) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.length > 0 && calm(w as World);
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const before = await sandbox.stats();
    await sandbox.latency(1500);
    try {
      const pending = call("mp-refresh", { account_id: a.accountId, force: true });
      let killed = 0;
      for (let n = 0; n < 100; n++) { // at most 100 polls of the sandbox's counter
        const s = await sandbox.stats();
        if (s.token_calls > before.token_calls) {
          killed = await killIsolates("mp-refresh");
          break;
        }
        const settled = await Promise.race([pending.then(() => true), delay(50).then(() => false)]);
        if (settled) break;
      }
      const res = await pending;
      if (killed > 0) a.unknownOutcome = true;
      w.fault(killed > 0 ? "isolate_killed" : "isolate_kill_missed");
      w.log(`  isolates killed: ${killed}, mp-refresh answered ${res.status}`);
    } finally {
      await sandbox.latency(0);
    }
  }
  toString() {
    return `KillRefreshIsolate(${this.i})`;
  }
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGKILLs the live isolates of `fn` started by this stack; returns how many. */
async function killIsolates(fn: string): Promise<number> {
  const log = await Deno.readTextFile(stack.env("STACK_LOG"));
  const pids = new Set<number>();
  for (const line of log.split("\n")) {
    if (!line.includes('"Edge isolate started"') || !line.includes(`"function":"${fn}"`)) continue;
    try {
      pids.add(Number(JSON.parse(line.slice(line.indexOf("{"))).pid));
    } catch { /* not a JSON line */ }
  }
  let killed = 0;
  for (const pid of pids) {
    // Still an isolate, and one of this stack (a pid may have been reused since).
    const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    const env = await Deno.readTextFile(`/proc/${pid}/environ`).catch(() => "");
    if (!cmd.includes("local/edge/isolate.ts")) continue;
    if (!env.split("\0").includes(`SUPABASE_URL=${stack.supabaseUrl}`)) continue;
    try {
      Deno.kill(pid, "SIGKILL");
      killed++;
    } catch { /* already gone */ }
  }
  return killed;
}

// ---------------------------------------------------------------------------------------------
// Revoke, reads, reports, probe

export class Revoke extends Step {
  readonly name = "revoke";
  constructor(readonly i: number) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const res = await call("mp-revoke", { account_id: a.accountId });
    w.noteAnswer(res);
    if (res.status === 200) {
      a.revoked = true;
      w.observed("revoked");
    }
    expect(w, res.status === 200, 2, `mp-revoke answered ${res.status}`);
  }
  toString() {
    return `Revoke(${this.i})`;
  }
}

/** get-mp-config, optionally reporting the current version's token as rejected. */
export class GetConfig extends Step {
  readonly name: string;
  constructor(readonly i: number, readonly report: boolean) {
    super();
    this.name = report ? "get_config_report" : "get_config";
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const before = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const body: Record<string, unknown> = { client_id: a.clientId };
    if (this.report && before) body.rejected_token_version = before.version;
    const res = await call("get-mp-config", body);
    w.noteAnswer(res);
    const token: string | undefined = res.status === 200 ? res.body.access_token : undefined;
    if (token !== undefined && a.confirmedDead.has(token)) {
      throw new Violation(9, `get-mp-config (${res.body.source}) answered a token confirmed dead`);
    }
    if (token !== undefined && a.revoked) {
      throw new Violation(
        2,
        `get-mp-config (${res.body.source}) answered a revoked account's token`,
      );
    }
    // The report confirmed the token dead: MercadoPago killed it, and the answer moved on.
    if (this.report && before?.access && a.mpDead.has(before.access)) {
      const movedOn = (res.status === 404 && res.body?.error?.code === "mp_reauth_required") ||
        (token !== undefined && token !== before.access);
      if (movedOn) {
        a.confirmedDead.add(before.access);
        w.observed("confirmed_dead_by_report");
      }
    }
  }
  toString() {
    return `GetConfig(${this.i}${this.report ? ", report" : ""})`;
  }
}

export class Probe extends Step {
  readonly name = "probe";
  constructor(readonly i: number) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const before = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const res = await call("mp-probe", { account_id: a.accountId });
    w.noteAnswer(res);
    const mine = res.status === 200
      ? (res.body.results as any[]).find((r) => r.account_id === a.accountId)
      : undefined;
    if (before?.access && a.mpDead.has(before.access) && mine && mine.state !== "unverified") {
      a.confirmedDead.add(before.access); // MercadoPago answered 401 for it to the probe
      w.observed("confirmed_dead_by_probe");
    }
  }
  toString() {
    return `Probe(${this.i})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Deauthorization webhooks

/** The access tokens the databases hold for the account now (MercadoPago is about to kill them). */
async function storedTokens(w: World, a: Acc): Promise<string[]> {
  const out: string[] = [];
  if (w.db.admin === "up") {
    const m = await masterOf(a.accountId);
    if (m?.access) out.push(m.access);
  }
  if (w.db.backend === "up") {
    const c = await cacheOf(a.clientId);
    if (c?.access) out.push(c.access);
  }
  return out;
}

/** The seller removes the app at the sandbox, which delivers the signed notification itself. */
export class DeauthorizeGenuine extends Step {
  readonly name = "webhook_genuine";
  constructor(readonly i: number) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.some((a) => a.seller !== null);
  }
  async act(w: World) {
    const a = w.acc(this.i);
    if (a.seller === null) return;
    for (const t of await storedTokens(w, a)) a.mpDead.add(t);
    // Only a stored access token can be verified (a 401 confirms); an account whose token was
    // already cleared as dead (reauth_required) has nothing to confirm with.
    const before = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const res = await sandbox.post("deauthorize", {
      user_id: a.seller,
      notify_url: `${stack.functionsUrl}/mp-webhook`,
    });
    if (res.notified === 200 && w.db.admin === "up") {
      const m = await masterOf(a.accountId);
      if (m && !m.connected) {
        a.revoked = true;
        w.observed("deauthorized");
      }
      if (before?.connected && before.access !== null) {
        expect(w, !!m && !m.connected, 2, `a confirmed deauthorization left the account connected`);
      }
    }
  }
  toString() {
    return `DeauthorizeGenuine(${this.i})`;
  }
}

/**
 * A notification signed as MercadoPago signs it, sent `times` times with the same
 * x-request-id (the later ones are replays); `killFirst` removes the app at the sandbox first,
 * otherwise the claim is false and must not revoke anything.
 */
export class DeauthorizeSigned extends Step {
  readonly name: string;
  constructor(readonly i: number, readonly killFirst: boolean, readonly times: number) {
    super();
    this.name = killFirst ? "webhook_replayed" : "webhook_false_claim";
  }
  override check(w: Readonly<World>) {
    return w.accounts.some((a) => a.seller !== null);
  }
  async act(w: World) {
    const a = w.acc(this.i);
    if (a.seller === null) return;
    if (this.killFirst) {
      for (const t of await storedTokens(w, a)) a.mpDead.add(t);
      await sandbox.post("deauthorize", { user_id: a.seller });
    }
    const before = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const requestId = crypto.randomUUID();
    const ts = String(Math.floor(Date.now() / 1000));
    const dataId = String(a.seller);
    const v1 = await signManifest(
      stack.webhookSecret,
      signatureManifest({ dataId, requestId, ts }),
    );
    const note = {
      action: "application.deauthorized",
      api_version: "v1",
      data: { id: dataId },
      date_created: new Date().toISOString(),
      id: crypto.randomUUID(),
      live_mode: true,
      type: "mp-connect",
      user_id: a.seller,
      version: 1,
    };
    let acted = false;
    let versionAfterFirst: number | undefined;
    for (let n = 0; n < this.times; n++) {
      const res = await call("mp-webhook", note, {
        key: null,
        headers: { "x-request-id": requestId, "x-signature": `ts=${ts},v1=${v1}` },
        query: `?data.id=${dataId}&type=mp-connect`,
      });
      w.noteAnswer(res);
      if (n === 0) {
        acted = res.status === 200;
        if (acted && w.db.admin === "up") {
          const m = await masterOf(a.accountId);
          versionAfterFirst = m?.version;
          if (m && !m.connected && before?.connected) a.revoked = true;
          // An account without a stored token had it confirmed dead by MercadoPago already
          // (a probe or a report): that earlier 401 confirms the claim.
          if (
            !this.killFirst && before?.connected && m && !m.connected &&
            before.access !== null && before.access !== undefined &&
            !a.mpDead.has(before.access)
          ) {
            throw new Violation(
              2,
              `a deauthorization MercadoPago did not confirm revoked the account`,
            );
          }
        }
      } else if (acted && w.db.admin === "up") {
        expect(w, res.status === 200, 8, `a replayed delivery answered ${res.status}`);
      }
    }
    if (versionAfterFirst !== undefined && this.times > 1 && w.db.admin === "up") {
      const m = await masterOf(a.accountId);
      if (m && m.version !== versionAfterFirst) {
        throw new Violation(
          8,
          `a replayed delivery changed the account (version ${versionAfterFirst} → ${m.version})`,
        );
      }
    }
  }
  toString() {
    return `DeauthorizeSigned(${this.i}, killFirst=${this.killFirst}, times=${this.times})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Reconcile and backfill

export class Reconcile extends Step {
  readonly name = "reconcile";
  override check() {
    return true;
  }
  async act(w: World) {
    const res = await call("mp-reconcile", {});
    w.noteAnswer(res);
    if (res.status !== 200 || !calm(w)) return;
    await assertInSync(w, "mp-reconcile");
  }
  toString() {
    return "Reconcile";
  }
}

/** After a repair with both databases up: each linked account's cache is at the master's version. */
async function assertInSync(w: World, by: string, only?: Acc) {
  for (const a of only ? [only] : w.accounts) {
    const m = await masterOf(a.accountId);
    const c = await cacheOf(a.clientId);
    const [link] =
      await adminDb()`select backend_client_id from nv_accounts where id = ${a.accountId}`;
    if (!m || !c || link?.backend_client_id !== a.clientId) continue;
    if (m.access !== null && c.version !== m.version) {
      throw new Violation(
        1,
        `after ${by}, account ${a.accountId}: cache at ${c.version}, master at ${m.version}`,
      );
    }
  }
}

/** `deno task backfill --account <id>`, as its domain function in-process. */
export class Backfill extends Step {
  readonly name = "backfill";
  constructor(readonly i: number) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const ctx = createContext(loadConfig({ ...Deno.env.toObject(), DB_TIMEOUT_MS: "5000" }));
    try {
      const summary = await runBackfill(ctx, createLogger({ component: "chaos-backfill" }), {
        accountId: a.accountId,
      }).catch((err) => ({ failed: 1, error: String(err) }));
      if (summary.failed === 0 && !summary.error && calm(w)) await assertInSync(w, "backfill", a);
    } finally {
      await ctx.close();
    }
  }
  toString() {
    return `Backfill(${this.i})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Invariant 7: forged escrow rows, then a refresh

export class ForgeEscrow extends Step {
  readonly name = "forge_escrow";
  constructor(readonly i: number, readonly kind: "garbage" | "other_aad" | "other_seller") {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.length > 0 && w.allUp;
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const m = await masterOf(a.accountId);
    if (!m || m.seller === null) return;
    const ring = await keyRing();
    let access: string, refresh: string, userId: number | null;
    if (this.kind === "garbage") {
      access = refresh = "v1:local1:AAAA";
      userId = 31337;
    } else if (this.kind === "other_aad") {
      access = await encryptSecret(ring, crypto.randomUUID(), "access_token", "x");
      refresh = await encryptSecret(ring, crypto.randomUUID(), "refresh_token", "x");
      userId = m.seller;
    } else {
      // A real pair of another seller, encrypted for THIS account, claimed without a user_id.
      const { grants: [g] } = await sandbox.post("grants", { count: 1, user_id: w.newSeller() });
      a.forged.add(g.access_token);
      a.forged.add(g.refresh_token);
      access = await encryptSecret(ring, a.accountId, "access_token", g.access_token);
      refresh = await encryptSecret(ring, a.accountId, "refresh_token", g.refresh_token);
      userId = null;
    }
    await backendDb()`delete from mp_refresh_escrow where account_id = ${a.accountId}`;
    await backendDb()`insert into mp_refresh_escrow ${
      backendDb()({
        account_id: a.accountId,
        base_version: m.version,
        access_token_encrypted: access,
        refresh_token_encrypted: refresh,
        expires_in: 15552000,
        token_expires_at: new Date(Date.now() + 15552000_000),
        user_id: userId,
        public_key: "APP_USR-forged",
        live_mode: true,
        scope: "read",
      })
    }`;
    const res = await call("mp-refresh", { account_id: a.accountId });
    w.noteAnswer(res);
  }
  toString() {
    return `ForgeEscrow(${this.i}, ${this.kind})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Invariant 8: unauthenticated requests

async function rowCounts(): Promise<number> {
  let total = 0;
  for (const sql of [adminDb(), backendDb()]) {
    const tables = await sql`select schemaname, relname from pg_stat_user_tables
      where schemaname in ('public')`;
    for (const t of tables) {
      const [{ n }] = await sql`select count(*)::int as n from ${sql(t.schemaname)}.${
        sql(t.relname)
      }`;
      total += n;
    }
  }
  return total;
}

export class Unauthenticated extends Step {
  readonly name = "unauthenticated";
  constructor(readonly kind: "no_key" | "bad_signature" | "unknown_state") {
    super();
  }
  override check(w: Readonly<World>) {
    return w.allUp;
  }
  async act(w: World) {
    const before = await rowCounts();
    const allowed = this.kind === "unknown_state" ? 1 : 0;
    for (let n = 0; n < 3; n++) {
      if (this.kind === "no_key") {
        for (const fn of ["get-mp-config", "mp-refresh", "mp-revoke", "provision-step-7-1"]) {
          const res = await call(fn, { client_id: crypto.randomUUID() }, { key: "x".repeat(40) });
          w.noteAnswer(res);
          expect(w, res.status === 401, 8, `${fn} without a valid key answered ${res.status}`);
        }
      } else if (this.kind === "bad_signature") {
        const res = await call("mp-webhook", {
          action: "application.deauthorized",
          data: { id: "1" },
        }, {
          key: null,
          headers: {
            "x-request-id": "chaos-" + "a".repeat(100),
            "x-signature": `ts=1,v1=${"0".repeat(64)}`,
          },
          query: `?data.id=1&type=mp-connect`,
        });
        w.noteAnswer(res);
        expect(w, res.status === 401, 8, `a badly signed webhook answered ${res.status}`);
      } else {
        const res = await fetch(
          `${stack.functionsUrl}/mp-oauth-callback?code=TG-forged&state=chaos-forged-state-${w.totals.runs}`,
          { redirect: "manual" },
        );
        await res.body?.cancel();
      }
    }
    const after = await rowCounts();
    if (after - before > allowed) {
      throw new Violation(
        8,
        `3 unauthenticated ${this.kind} requests grew storage by ${after - before} rows`,
      );
    }
  }
  toString() {
    return `Unauthenticated(${this.kind})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Faults

export const SANDBOX_MODES = [
  "error_500",
  "timeout",
  "rate_limited",
  "invalid_grant",
  "lose_answer",
  "error_500_after",
  "malformed_200",
  "other_seller",
] as const;

/** The next sandbox call fails as `mode` (SPEC §7). */
export class SandboxFault extends Step {
  readonly name = "sandbox_fault";
  constructor(readonly mode: typeof SANDBOX_MODES[number]) {
    super();
  }
  override check() {
    return true;
  }
  async act(w: World) {
    w.faultCallsAt = w.calls(await sandbox.stats(), this.mode);
    await sandbox.faults(this.mode, 1);
    w.pendingFault = this.mode;
    w.fault(`sandbox_${this.mode}`);
  }
  toString() {
    return `SandboxFault(${this.mode})`;
  }
}

/** MercadoPago silently kills the seller's access tokens, or the whole grant. */
export class Invalidate extends Step {
  readonly name = "invalidate";
  constructor(readonly i: number, readonly scope: "access" | "grant") {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    if (a.seller === null) return;
    for (const t of await storedTokens(w, a)) a.mpDead.add(t);
    await sandbox.invalidate(a.seller, this.scope);
    w.fault(`invalidate_${this.scope}`);
  }
  toString() {
    return `Invalidate(${this.i}, ${this.scope})`;
  }
}

/**
 * Silent invalidation found by the system (SPEC §9, invariant 9): MercadoPago kills the
 * seller's access tokens (or grant), then mp-probe or a checkout report looks at the account.
 */
export class InvalidateThenCheck extends Step {
  readonly name = "invalidate_then_check";
  constructor(
    readonly i: number,
    readonly scope: "access" | "grant",
    readonly via: "probe" | "report",
  ) {
    super();
  }
  async act(w: World) {
    await new Invalidate(this.i, this.scope).act(w);
    if (this.via === "probe") await new Probe(this.i).act(w);
    else await new GetConfig(this.i, true).act(w);
  }
  toString() {
    return `InvalidateThenCheck(${this.i}, ${this.scope}, ${this.via})`;
  }
}

/** A database stopped (until `StartDb`). */
export class StopDb extends Step {
  readonly name = "db_stop";
  constructor(readonly which: "backend" | "admin") {
    super();
  }
  override check(w: Readonly<World>) {
    return w.db[this.which] === "up";
  }
  async act(w: World) {
    await cluster(this.which).stop();
    w.db[this.which] = "stopped";
    await closeDbs();
    w.fault(`${this.which}_stopped`);
  }
  toString() {
    return `StopDb(${this.which})`;
  }
}

export class StartDb extends Step {
  readonly name = "db_start";
  constructor(readonly which: "backend" | "admin") {
    super();
  }
  override check(w: Readonly<World>) {
    return w.db[this.which] !== "up";
  }
  async act(w: World) {
    await cluster(this.which).start();
    w.db[this.which] = "up";
    await closeDbs();
  }
  toString() {
    return `StartDb(${this.which})`;
  }
}

/** A database hangs (SIGSTOP) while a read and a forced refresh are in flight, then resumes. */
export class HangDb extends Step {
  readonly name = "db_hang";
  constructor(readonly which: "backend" | "admin", readonly i: number) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.length > 0 && w.allUp;
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const c = cluster(this.which);
    w.fault(`${this.which}_hung`);
    await c.freeze(true);
    try {
      const answers = await Promise.all([
        call("get-mp-config", { client_id: a.clientId }),
        call("mp-refresh", { account_id: a.accountId, force: true }),
      ]);
      answers.forEach((r) => w.noteAnswer(r));
      const token = answers[0].status === 200 ? answers[0].body.access_token : undefined;
      if (token !== undefined && (a.revoked || a.confirmedDead.has(token))) {
        throw new Violation(
          a.revoked ? 2 : 9,
          `get-mp-config answered a token it must not, ${this.which} hanging`,
        );
      }
      if (answers[1].status !== 200) a.unknownOutcome = true;
    } finally {
      await c.freeze(false);
    }
    await closeDbs();
  }
  toString() {
    return `HangDb(${this.which}, ${this.i})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Events to the platform (SPEC §10, invariant 10; the receiver and the checks: ./events.ts)

/** Makes the pending events of `ids` due now, as if their retry delays had passed. */
async function makeDue(ids: string[]) {
  if (ids.length === 0) return;
  await adminDb()`update mp_event_outbox set next_attempt_at = now()
    where account_id = any (${ids}::uuid[]) and status = 'pending'`;
}

/**
 * The receiver answers as `mode` from now on (2xx, 5xx, or never: held until the run ends),
 * then one mp-deliver-events run (`{}` or `{"limit": n}`); with `due`, the tracked accounts'
 * pending events are made due first, and with a 2xx receiver and no fault in force the
 * tracked accounts are drained: each of their events is then delivered (invariant 10: at
 * least once), unless a live lease of a run that lost its database holds one back.
 */
export class DeliverEvents extends Step {
  readonly name: string;
  constructor(
    readonly mode: ReceiverMode,
    readonly limit: number | null,
    readonly due: boolean,
  ) {
    super();
    this.name = `deliver_${mode}`;
  }
  override check() {
    return true;
  }
  async act(w: World) {
    w.platform.mode = this.mode;
    const ids = w.accounts.map((a) => a.accountId);
    if (this.due && w.db.admin === "up") await makeDue(ids);
    await this.deliverOnce(w);
    if (this.mode === "ok" && this.due && calm(w)) await this.drain(w, ids);
  }
  private async deliverOnce(w: World) {
    const res = await call("mp-deliver-events", this.limit === null ? {} : { limit: this.limit });
    w.noteAnswer(res);
    expect(w, res.status === 200, 10, `mp-deliver-events answered ${res.status}`);
    if (res.status !== 200) return;
    const keys = Object.keys(res.body ?? {}).sort().join(",");
    if (keys !== "delivered,failed,pending") {
      throw new Violation(10, `mp-deliver-events answered the fields ${keys}`);
    }
    if (this.mode !== "ok" && res.body.delivered > 0) {
      throw new Violation(
        10,
        `mp-deliver-events counted ${res.body.delivered} delivered while the receiver answers ${this.mode}`,
      );
    }
    if (res.body.delivered > 0) w.observed("events_delivered");
  }
  private async drain(w: World, ids: string[]) {
    if (ids.length === 0) return;
    let stuck: any[] = [];
    for (let n = 0; n < 20; n++) {
      stuck = await adminDb()`select account_id, bool_or(lease_until > now()) as leased
        from mp_event_outbox where account_id = any (${ids}::uuid[]) and status = 'pending'
        group by account_id`;
      if (stuck.length === 0) return w.observed("events_drained");
      await delay(250);
      await makeDue(ids);
      await this.deliverOnce(w);
    }
    const unleased = stuck.filter((s) => !s.leased);
    if (unleased.length > 0 && calm(w)) {
      throw new Violation(
        10,
        `account ${
          unleased[0].account_id
        }: events still pending after 20 runs with a 2xx receiver, none leased`,
      );
    }
    w.observed("events_drain_blocked_by_lease");
  }
  toString() {
    return `DeliverEvents(${this.mode}, limit=${this.limit}, due=${this.due})`;
  }
}

/** Up to `pages` pages of mp-events after the run's cursor, `limit` each; the cursor moves on. */
export class PullEvents extends Step {
  readonly name = "pull_events";
  constructor(readonly limit: number, readonly pages: number) {
    super();
  }
  override check() {
    return true;
  }
  async act(w: World) {
    const p = w.platform;
    for (let page = 0; page < this.pages; page++) {
      const after = p.cursor === undefined ? "" : `&after=${encodeURIComponent(p.cursor)}`;
      const res = await call("mp-events", undefined, { query: `?limit=${this.limit}${after}` });
      w.noteAnswer(res);
      expect(w, res.status === 200, 10, `mp-events answered ${res.status}`);
      if (res.status !== 200) return;
      const events = res.body?.events;
      if (!Array.isArray(events) || typeof res.body.next !== "string") {
        throw new Violation(10, `mp-events answered no events list or no cursor`);
      }
      if (events.length > this.limit) {
        throw new Violation(
          10,
          `mp-events answered ${events.length} events for limit ${this.limit}`,
        );
      }
      for (const e of events) {
        if (p.pulledIds.has(e.id)) {
          throw new Violation(10, `mp-events answered event ${e.id} a second time`);
        }
        p.pulledIds.add(e.id);
        p.pulled.push({ id: e.id, event: e });
      }
      if (events.length === 0 && p.cursor !== undefined && res.body.next !== p.cursor) {
        throw new Violation(10, `an empty page of mp-events moved the cursor`);
      }
      p.cursor = res.body.next;
      if (events.length > 0) w.observed("events_pulled");
      if (events.length < this.limit) return;
    }
  }
  toString() {
    return `PullEvents(limit=${this.limit}, pages=${this.pages})`;
  }
}

/**
 * The served token of an account comes within 7 days of its expiry with no refresh succeeding
 * (the clock moved for it alone): two mp-deliver-events runs, each of which flags `expiring`
 * events first, then the expiry is put back. Invariant 10 (checked after the step): one
 * `mp.connection.expiring` per token version, in the account's state. Put back so that no
 * refresh runs inside the last-resort window, where a refresh token sent once may go again
 * (invariant 3's one exception, which the model does not follow).
 */
export class NearExpiry extends Step {
  readonly name = "near_expiry";
  constructor(readonly i: number) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.length > 0 && w.allUp;
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const [row] = await adminDb()`select mp_token_expires_at as at from nv_accounts
      where id = ${a.accountId} and mp_access_token_encrypted is not null`;
    if (!row?.at) return;
    await adminDb()`update nv_accounts set mp_token_expires_at = now() + interval '3 days'
      where id = ${a.accountId}`;
    try {
      for (let n = 0; n < 2; n++) {
        const res = await call("mp-deliver-events", { limit: 5 });
        w.noteAnswer(res);
        expect(w, res.status === 200, 10, `mp-deliver-events answered ${res.status}`);
      }
    } finally {
      await adminDb()`update nv_accounts set mp_token_expires_at = ${row.at}
        where id = ${a.accountId}`;
    }
  }
  toString() {
    return `NearExpiry(${this.i})`;
  }
}

/** Every command, weighted by repetition. */
export function commandArbitraries(): fc.Arbitrary<Cmd>[] {
  const i = fc.nat(MAX_ACCOUNTS - 1);
  const db = fc.constantFrom("backend" as const, "admin" as const);
  const deliver = fc.tuple(
    fc.constantFrom<ReceiverMode>("ok", "ok", "error", "never"),
    fc.constantFrom(null, 1, 5, 100),
    fc.boolean(),
  ).map(([m, l, d]) => new DeliverEvents(m, l, d));
  const common: fc.Arbitrary<Cmd>[] = [
    fc.constant(new ConnectNew()),
    fc.constant(new ConnectNew()),
    fc.constant(new ProvisionNew()),
    fc.constant(new ProvisionNew()),
    fc.tuple(i, fc.constantFrom("reconnect" as const, "replace" as const, "mismatch" as const))
      .map(([n, k]) => new Connect(n, k)),
    i.map((n) => new Provision(n)),
    fc.tuple(i, fc.boolean()).map(([n, f]) => new RefreshPair(n, f)),
    fc.tuple(i, fc.boolean()).map(([n, f]) => new RefreshPair(n, f)),
    i.map((n) => new Revoke(n)),
    fc.tuple(i, fc.boolean()).map(([n, r]) => new GetConfig(n, r)),
    fc.tuple(i, fc.boolean()).map(([n, r]) => new GetConfig(n, r)),
    i.map((n) => new Probe(n)),
    i.map((n) => new DeauthorizeGenuine(n)),
    fc.tuple(i, fc.boolean(), fc.integer({ min: 1, max: 3 }))
      .map(([n, k, t]) => new DeauthorizeSigned(n, k, t)),
    fc.constant(new Reconcile()),
    i.map((n) => new Backfill(n)),
    fc.tuple(i, fc.constantFrom("garbage" as const, "other_aad" as const, "other_seller" as const))
      .map(([n, k]) => new ForgeEscrow(n, k)),
    fc.constantFrom("no_key" as const, "bad_signature" as const, "unknown_state" as const)
      .map((k) => new Unauthenticated(k)),
    fc.constantFrom(...SANDBOX_MODES).map((m) => new SandboxFault(m)),
    fc.tuple(i, fc.constantFrom("access" as const, "grant" as const))
      .map(([n, s]) => new Invalidate(n, s)),
    fc.tuple(
      i,
      fc.constantFrom("access" as const, "grant" as const),
      fc.constantFrom("probe" as const, "report" as const),
    ).map(([n, s, v]) => new InvalidateThenCheck(n, s, v)),
    db.map((d) => new StopDb(d)),
    db.map((d) => new StartDb(d)),
    fc.tuple(db, i).map(([d, n]) => new HangDb(d, n)),
    i.map((n) => new KillRefreshIsolate(n)),
    i.map((n) => new NearExpiry(n)),
    deliver,
    deliver,
    fc.tuple(fc.constantFrom(1, 3, 100, 500), fc.integer({ min: 1, max: 3 }))
      .map(([l, p]) => new PullEvents(l, p)),
  ];
  return common;
}
