// deno-lint-ignore-file no-explicit-any
/**
 * The chaos run's commands: each a fast-check `AsyncCommand` over a `World` (the model and the
 * real stack). `run` drives the real handlers through the gateway (or a domain function
 * in-process, for the backfill), updates the model from what it observed (and from the sandbox's
 * ledger: whose tokens MercadoPago issued), asserts what the contract requires of the answer
 * when no fault could excuse it, and then checks invariants 1–10 (`checkInvariants`, which only
 * reads). Everything that changes state is done here, by a command: a step of the shrunk list.
 * Commands hold only indices, modes and sizes, so their `toString` (the shrunk command list of a
 * failure) never shows a secret.
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
import {
  type Acc,
  cacheOf,
  checkInvariants,
  escrowOf,
  masterOf,
  Violation,
  type World,
} from "./world.ts";
import type { ReceiverMode } from "./events.ts";
import { type PairRecord, tokenId } from "./ledger.ts";
import { mercadoPagoRequestId, usableRequestId } from "./judge.ts";

type Cmd = fc.AsyncCommand<World, World, false>;

const MAX_ACCOUNTS = 5;

/** A fresh model account of `site`. */
function model(accountId: string, clientId: string, seller: number | null, site: string): Acc {
  return {
    accountId,
    clientId,
    site,
    seller,
    allowedSellers: new Set(seller === null ? [] : [seller]),
    revoked: false,
    maxCacheVersion: -1,
    forged: new Set(),
    eventsSeen: new Set(),
    refreshBudget: 0,
  };
}

/** What `act` says when it found nothing to do (the step is not counted). */
const NOOP = "noop";

/** Base of every command: runs it, reads the ledger, counts the step, checks invariants. */
abstract class Step implements Cmd {
  abstract readonly name: string;
  check(w: Readonly<World>): boolean {
    return w.accounts.length > 0;
  }
  abstract act(w: World): Promise<void | typeof NOOP>;
  async run(_m: World, w: World): Promise<void> {
    const t = w.totals;
    w.log(
      t.shrinking ? `shrink step ${t.shrinkSteps + 1}: ${this}` : `step ${t.steps + 1}: ${this}`,
    );
    w.beginStep();
    const outcome = await this.act(w);
    await w.endStep(this.name, outcome === NOOP);
    if (outcome === NOOP) w.log("  (no-op: not counted)");
    await checkInvariants(w);
  }
  abstract toString(): string;
}

/** The account may send its refresh token `n` times in this step (invariant 4's count). */
function allow(a: Acc, n: number) {
  a.refreshBudget += n;
}

/** No fault in force that could excuse an unexpected answer. */
const calm = (w: World) => w.calm;

/**
 * Unless `ok`, a violation when no fault could excuse it: none at all, or, for an account of
 * `site`, none of its application's (another application's fault is no excuse).
 */
function expect(
  w: World,
  ok: boolean,
  invariant: number | string,
  what: string,
  site?: string,
) {
  const enforced = site === undefined ? calm(w) : w.calmFor(site);
  // An answer held to the contract while another application's fault was in force.
  if (enforced && !calm(w) && w.allUp) w.observed("expected_despite_other_app_fault");
  if (!ok && enforced) {
    throw new Violation(invariant, site === undefined || !w.apps.multi ? what : `${site}: ${what}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Connect (OAuth through the sandbox)

/**
 * mp-oauth-start (with several applications: `site`, the account's) → the sandbox's
 * authorization (as `seller`; as a new seller of `sellerSite` when given) → mp-oauth-callback.
 */
async function oauth(
  w: World,
  a: Acc,
  seller: number,
  replace: boolean,
  sellerSite?: string,
): Promise<{ ok: boolean; reason: string | null }> {
  const start = await call("mp-oauth-start", {
    account_id: a.accountId,
    ...(w.apps.multi ? { site: a.site } : {}),
    ...(replace ? { replace_seller: true } : {}),
  });
  w.noteAnswer(start);
  if (start.status !== 200) return { ok: false, reason: `start_${start.status}` };
  const url = new URL(start.body.url);
  if (w.apps.multi && url.searchParams.get("client_id") !== w.app(a.site).clientId) {
    throw new Violation("site", `${a.site}: mp-oauth-start authorizes with another application`);
  }
  url.searchParams.set("user_id", String(seller));
  if (sellerSite !== undefined) url.searchParams.set("seller_site", sellerSite);
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
 * The pairs MercadoPago issued in this step for a code `seller` authorized, from the sandbox's
 * ledger (its `other_seller` mode may issue them to another seller than the one who authorized).
 */
async function issuedForCode(w: World, seller: number): Promise<PairRecord[]> {
  await w.readLedger();
  return w.step.delta.pairs.filter((p) => p.via === "code" && p.authorized_user_id === seller);
}

/**
 * A first connect, or one with `replace_seller`, may set the seller MercadoPago's token answer
 * names (invariant 6 forbids only the other changes): the ledger says whom it issued the pair
 * to. Once such a connect succeeded, that seller is the only one allowed until the next.
 */
async function sellerChange(w: World, a: Acc, asked: number, ok: boolean) {
  const issued = (await issuedForCode(w, asked)).map((p) => p.user_id);
  if (ok && issued.length === 1) {
    a.allowedSellers = new Set(issued);
    a.seller = issued[0];
  } else {
    for (const u of issued) a.allowedSellers.add(u);
    if (ok) a.seller = asked;
  }
}

/** A new account of `site` linked to a new client, connected through OAuth as a new seller. */
class ConnectNew extends Step {
  readonly name = "connect";
  constructor(readonly site: string, readonly multi: boolean) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.length < MAX_ACCOUNTS && w.allUp;
  }
  async act(w: World) {
    const clientId = await newClient();
    const accountId = await newAccount({ clientId });
    const seller = w.newSeller();
    const a = model(accountId, clientId, null, this.site);
    w.addAccount(a);
    const r = await oauth(w, a, seller, false);
    await sellerChange(w, a, seller, r.ok);
    expect(w, r.ok, "connect", `a first connect failed (${r.reason})`, a.site);
  }
  toString() {
    return this.multi ? `ConnectNew(${this.site})` : "ConnectNew";
  }
}

/**
 * A seller of another site authorizes through the account's application (a Brazilian seller on
 * the Argentine application): refused at the callback with `seller_site_mismatch`, nothing of
 * the account changed (the checker: its seller, tokens and versions stay as the model has them).
 */
class ConnectWrongSite extends Step {
  readonly name = "connect_wrong_site";
  constructor(readonly i: number) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const other = w.apps.list.find((app) => app.site !== a.site);
    if (!other) return NOOP;
    const asked = w.newSeller();
    const r = await oauth(w, a, asked, true, other.site);
    if (r.ok) {
      // An `other_seller` fault on this application makes MercadoPago name a seller of its own
      // site instead of the one who authorized: with `replace_seller` that seller is connected,
      // as MercadoPago named it (the ledger says whom it issued the pair to). Only the seller of
      // the other site being connected is the violation.
      const issued = (await issuedForCode(w, asked)).map((p) => p.user_id);
      if (issued.length === 1 && issued[0] !== asked) {
        await sellerChange(w, a, asked, true);
        a.revoked = false;
        w.observed("wrong_site_seller_named_another");
        return;
      }
      throw new Violation(
        "site",
        `${a.site}: a seller of ${other.site} was connected through ${a.site}'s application`,
      );
    }
    if (r.reason === "seller_site_mismatch") w.observed("seller_site_mismatch");
    expect(
      w,
      r.reason === "seller_site_mismatch",
      "site",
      `a seller of ${other.site} through ${a.site}'s application answered ${r.reason}`,
      a.site,
    );
  }
  toString() {
    return `ConnectWrongSite(${this.i})`;
  }
}

/** Connect again: the same seller (reconnect), another with replace_seller, or another without. */
class Connect extends Step {
  readonly name: string;
  constructor(readonly i: number, readonly kind: "reconnect" | "replace" | "mismatch") {
    super();
    this.name = `connect_${kind}`;
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const seller = this.kind === "reconnect" && a.seller !== null ? a.seller : w.newSeller();
    const legit = this.kind !== "mismatch" || a.seller === null;
    const mayChange = a.seller === null || this.kind === "replace";
    const r = await oauth(w, a, seller, this.kind === "replace");
    if (mayChange) await sellerChange(w, a, seller, r.ok);
    if (r.ok) {
      if (!legit) {
        throw new Violation(6, `a connect as another seller without replace_seller succeeded`);
      }
      if (!mayChange) a.seller = seller;
      a.revoked = false;
    } else if (legit) {
      expect(w, false, "connect", `${this.kind} failed (${r.reason})`, a.site);
    } else {
      expect(w, r.reason === "seller_mismatch", 6, `mismatch answered ${r.reason}`, a.site);
    }
  }
  toString() {
    return `Connect(${this.i}, ${this.kind})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Provisioning

/**
 * A new account with a sandbox grant whose token is due (expiring in 30 days), or within the
 * last-resort window (3 days: a refresh token sent once may go once more), provisioned (step
 * 7.1). The sandbox and the master agree on the expiry.
 */
class ProvisionNew extends Step {
  readonly name = "provision";
  constructor(readonly days: 30 | 3, readonly site: string, readonly multi: boolean) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.length < MAX_ACCOUNTS && w.allUp;
  }
  async act(w: World) {
    const seller = w.newSeller();
    const { grants: [grant] } = await sandbox.post("grants", {
      count: 1,
      user_id: seller,
      expires_in: this.days * 86_400,
      client_id: w.controlClient(this.site),
    });
    const clientId = await newClient();
    const accountId = await newAccount({
      grant,
      expiresInDays: this.days,
      ...(this.multi ? { columns: { mp_site_id: this.site } } : {}),
    });
    w.addAccount(model(accountId, clientId, seller, this.site));
    const res = await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
    w.noteAnswer(res);
    expect(
      w,
      res.status === 200 && res.body.synced === true,
      "provision",
      `answered ${res.status}`,
      this.site,
    );
  }
  toString() {
    return `ProvisionNew(${this.days} days${this.multi ? `, ${this.site}` : ""})`;
  }
}

/** provision-step-7-1 again for a linked account: harmless. */
class Provision extends Step {
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
class RefreshPair extends Step {
  readonly name = "refresh_pair";
  constructor(readonly i: number, readonly force: boolean) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    // Without force the account is refreshed once (after the first, it is no longer due);
    // with force each run may refresh it, one after the other (never both at once: the lease).
    // The checker counts what MercadoPago was sent (invariant 4).
    const most = this.force ? 2 : 1;
    allow(a, most);
    const body = { account_id: a.accountId, ...(this.force ? { force: true } : {}) };
    const runs = await Promise.all([call("mp-refresh", body), call("mp-refresh", body)]);
    runs.forEach((r) => w.noteAnswer(r));
    const results = runs.flatMap((r) => (r.status === 200 ? r.body.results : []) as any[]);
    const refreshed = results.filter((r) => r.status === "refreshed").length;
    if (refreshed > most) {
      throw new Violation(4, `two concurrent runs (force=${this.force}): ${refreshed} refreshed`);
    }
  }
  toString() {
    return `RefreshPair(${this.i}, force=${this.force})`;
  }
}

/**
 * A refresh whose outcome MercadoPago leaves unknown (`mode`: a 5xx before or after processing,
 * no answer, or the answer lost), then the account's next mp-refresh run (forced or not). The
 * checker judges from the ledger (invariant 3): the refresh token may go a second time only as
 * the last resort, its access token expiring within 7 days (`ProvisionNew(3 days)`), never
 * otherwise, and never a third time.
 */
class RefreshUnknownThenAgain extends Step {
  readonly name = "refresh_unknown_then_again";
  constructor(
    readonly i: number,
    readonly mode: "error_500" | "timeout" | "lose_answer" | "error_500_after",
    readonly force: boolean,
  ) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    allow(a, 1); // the second run sends again only as the last resort, which is not counted
    await w.queueFault(this.mode, a.site); // its own application's MercadoPago

    const first = await call("mp-refresh", { account_id: a.accountId });
    w.noteAnswer(first);
    await w.readLedger();
    const again = await call("mp-refresh", {
      account_id: a.accountId,
      ...(this.force ? { force: true } : {}),
    });
    w.noteAnswer(again);
  }
  toString() {
    return `RefreshUnknownThenAgain(${this.i}, ${this.mode}, force=${this.force})`;
  }
}

/**
 * An isolate terminated mid-run: mp-refresh is called while the sandbox holds token calls
 * (latency); once the call is at the sandbox, every live mp-refresh isolate of this stack is
 * SIGKILLed (pids from the gateway's "Edge isolate started" log lines).
 */
class KillRefreshIsolate extends Step {
  readonly name = "kill_isolate";
  constructor(readonly i: number) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.length > 0 && calm(w as World);
  }
  async act(w: World) {
    const a = w.acc(this.i);
    allow(a, 1);
    const before = await sandbox.stats();
    await sandbox.latency(1500, w.controlClient(a.site));
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
      // A kill that came too late (or found no isolate) injected nothing: not a fault.
      if (killed > 0) w.fault("isolate_killed");
      else w.observed("isolate_kill_missed");
      w.log(`  isolates killed: ${killed}, mp-refresh answered ${res.status}`);
    } finally {
      await sandbox.latency(0, w.controlClient(a.site));
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
// Request ids (every command that sends one: lengths 1 to 200, across the 128 limit)

/** A request id a command sends: its length and what it is made of. */
interface Rid {
  len: number;
  /** `plain`: hex; `dotted`: one `.` (valid for the functions, not for MercadoPago's webhook); `bad`: one `!` (valid for neither). */
  kind: "plain" | "dotted" | "bad";
}

/** Request ids of 1 to 200 characters, often at the 128 limit. */
const ridArb: fc.Arbitrary<Rid> = fc.record({
  len: fc.oneof(fc.integer({ min: 1, max: 200 }), fc.constantFrom(127, 128, 129)),
  kind: fc.constantFrom("plain" as const, "plain" as const, "dotted" as const, "bad" as const),
});

const ridText = (r: Rid) => `id(${r.len}, ${r.kind})`;

/**
 * A fresh id of the rid's shape (random hex, so no two are alike past a few characters), noted
 * as request-controlled text for the checker (invariant 8).
 */
function makeId(w: World, r: Rid, strict = true): string {
  let s = "";
  while (s.length < r.len) s += crypto.randomUUID().replaceAll("-", "");
  s = s.slice(0, r.len);
  if (r.kind !== "plain") {
    const at = Math.floor(r.len / 2);
    s = s.slice(0, at) + (r.kind === "dotted" ? "." : "!") + s.slice(at + 1);
  }
  w.sent.push({ text: s, strict });
  if (s.length > 128) w.observed("request_id_over_128");
  return s;
}

/**
 * A function's answer to a request with `id`: it echoes the id when it may use it (1 to 128 of
 * `A-Za-z0-9._-`), and an id of its own otherwise.
 */
function checkEcho(id: string, res: { status: number; headers: Headers }, fn: string) {
  const echoed = res.headers.get("x-request-id");
  if (echoed === null) {
    if (res.status < 500) {
      throw new Violation(8, `${fn} answered ${res.status} without x-request-id`);
    }
    return;
  }
  if (usableRequestId(id) ? echoed !== id : echoed === id || !usableRequestId(echoed)) {
    throw new Violation(
      8,
      `${fn} given a request id of ${id.length} characters (${
        usableRequestId(id) ? "usable" : "not usable"
      }) echoed ${echoed === id ? "it" : `another of ${echoed.length}`}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Revoke, reads, reports, probe

class Revoke extends Step {
  readonly name = "revoke";
  constructor(readonly i: number, readonly rid: Rid) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    const id = makeId(w, this.rid);
    const res = await call("mp-revoke", { account_id: a.accountId }, {
      headers: { "x-request-id": id },
    });
    w.noteAnswer(res);
    checkEcho(id, res, "mp-revoke");
    if (res.status === 200) {
      a.revoked = true;
      w.observed("revoked");
    }
    expect(w, res.status === 200, 2, `mp-revoke answered ${res.status}`, a.site);
  }
  toString() {
    return `Revoke(${this.i}, ${ridText(this.rid)})`;
  }
}

/**
 * get-mp-config, optionally reporting the current version's token as rejected. Invariant 2: a
 * revoked account's answer is never a token, and 404 while both databases are up. Invariant 9:
 * never a token MercadoPago confirmed dead — to an earlier step, or to this very request.
 */
class GetConfig extends Step {
  readonly name: string;
  constructor(readonly i: number, readonly report: boolean, readonly rid: Rid) {
    super();
    this.name = report ? "get_config_report" : "get_config";
  }
  async act(w: World) {
    const a = w.acc(this.i);
    // A confirmed dead token is refreshed at once when its refresh token was never sent.
    if (this.report) allow(a, 1);
    const before = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const body: Record<string, unknown> = { client_id: a.clientId };
    if (this.report && before) body.rejected_token_version = before.version;
    const id = makeId(w, this.rid);
    const res = await call("get-mp-config", body, { headers: { "x-request-id": id } });
    w.noteAnswer(res);
    checkEcho(id, res, "get-mp-config");
    const token: string | undefined = res.status === 200 ? res.body.access_token : undefined;
    if (token !== undefined && w.deadIds.has(tokenId(token))) {
      throw new Violation(9, `get-mp-config (${res.body.source}) answered a token confirmed dead`);
    }
    if (token !== undefined && this.report) {
      const now = await w.readLedger();
      const killedHere = now.usersMe.some((u) =>
        u.status === 401 && u.delivered && u.access_id === tokenId(token)
      );
      if (killedHere) {
        throw new Violation(
          9,
          `get-mp-config (${res.body.source}) answered the token MercadoPago had just answered 401 for, to this report`,
        );
      }
    }
    if (a.revoked) {
      if (token !== undefined) {
        throw new Violation(
          2,
          `get-mp-config (${res.body.source}) answered a revoked account's token`,
        );
      }
      if (w.allUp && res.status !== 404) {
        throw new Violation(
          2,
          `a revoked account's get-mp-config answered ${res.status}, not 404, both databases up`,
        );
      }
    }
  }
  toString() {
    return `GetConfig(${this.i}${this.report ? ", report" : ""}, ${ridText(this.rid)})`;
  }
}

class Probe extends Step {
  readonly name = "probe";
  constructor(readonly i: number) {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    allow(a, 1); // a dead token with an unsent refresh token is refreshed at once
    const res = await call("mp-probe", { account_id: a.accountId });
    w.noteAnswer(res);
    expect(w, res.status === 200, 9, `mp-probe answered ${res.status}`, a.site);
  }
  toString() {
    return `Probe(${this.i})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Deauthorization webhooks

/** The seller removes the app at the sandbox, which delivers the signed notification itself. */
class DeauthorizeGenuine extends Step {
  readonly name = "webhook_genuine";
  constructor(readonly i: number) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.accounts.some((a) => a.seller !== null);
  }
  async act(w: World) {
    const a = w.acc(this.i);
    if (a.seller === null) return NOOP;
    // Only a stored access token can be verified (a 401 confirms); an account whose token was
    // already cleared as dead (reauth_required) has nothing to confirm with.
    const before = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const res = await sandbox.post("deauthorize", {
      user_id: a.seller,
      notify_url: `${stack.functionsUrl}/mp-webhook${w.apps.multi ? `?app=${a.site}` : ""}`,
    });
    if (res.notified === 200 && w.db.admin === "up") {
      const m = await masterOf(a.accountId);
      if (m && !m.connected) {
        a.revoked = true;
        w.observed("deauthorized");
      }
      if (before?.connected && before.access !== null) {
        expect(
          w,
          !!m && !m.connected,
          2,
          `a confirmed deauthorization left the account connected`,
          a.site,
        );
      }
    }
  }
  toString() {
    return `DeauthorizeGenuine(${this.i})`;
  }
}

/**
 * A notification signed as MercadoPago signs it, sent `times` times with the same
 * x-request-id (the later ones are replays; an id MercadoPago would not send — over 128
 * characters, or not `A-Za-z0-9-` — is refused with 401); `killFirst` removes the app at the
 * sandbox first, otherwise the claim is false and must not revoke anything.
 */
class DeauthorizeSigned extends Step {
  readonly name: string;
  constructor(
    readonly i: number,
    readonly killFirst: boolean,
    readonly times: number,
    readonly rid: Rid,
  ) {
    super();
    this.name = killFirst ? "webhook_replayed" : "webhook_false_claim";
  }
  override check(w: Readonly<World>) {
    return w.accounts.some((a) => a.seller !== null);
  }
  async act(w: World) {
    const a = w.acc(this.i);
    if (a.seller === null) return NOOP;
    if (this.killFirst) await sandbox.post("deauthorize", { user_id: a.seller });
    const before = w.db.admin === "up" ? await masterOf(a.accountId) : null;
    const requestId = makeId(w, this.rid);
    const accepted = mercadoPagoRequestId(requestId);
    const ts = String(Math.floor(Date.now() / 1000));
    const dataId = String(a.seller);
    // Several applications: signed with the account's own application's newest secret (MLB's
    // has two, a rotation underway: any may match).
    const secrets = w.app(a.site).webhookSecrets;
    const v1 = await signManifest(
      w.apps.multi ? secrets[secrets.length - 1] : stack.webhookSecret,
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
        query: `?${w.apps.multi ? `app=${a.site}&` : ""}data.id=${dataId}&type=mp-connect`,
      });
      w.noteAnswer(res);
      if (!accepted) {
        if (res.status !== 401) {
          throw new Violation(
            8,
            `mp-webhook answered ${res.status} to an x-request-id of ${requestId.length} characters MercadoPago would not send`,
          );
        }
        continue;
      }
      if (n === 0) {
        acted = res.status === 200;
        if (acted && w.db.admin === "up") {
          const m = await masterOf(a.accountId);
          versionAfterFirst = m?.version;
          if (m && !m.connected && before?.connected) a.revoked = true;
          // Only a 401 from MercadoPago for the stored token confirms the claim; an account
          // without a stored token had it confirmed dead already (a probe or a report).
          const confirmed = before?.access == null ||
            w.deadIds.has(tokenId(before.access)) ||
            (await w.readLedger(), w.step.delta.usersMe).some((u) =>
              u.status === 401 && u.access_id === tokenId(before!.access!)
            );
          if (before?.connected && m && !m.connected && !confirmed) {
            throw new Violation(
              2,
              `a deauthorization MercadoPago did not confirm (no 401 for the stored token) revoked the account`,
            );
          }
        }
      } else if (acted && w.db.admin === "up") {
        expect(w, res.status === 200, 8, `a replayed delivery answered ${res.status}`, a.site);
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
    return `DeauthorizeSigned(${this.i}, killFirst=${this.killFirst}, times=${this.times}, ${
      ridText(this.rid)
    })`;
  }
}

// ---------------------------------------------------------------------------------------------
// Reconcile and backfill

class Reconcile extends Step {
  readonly name = "reconcile";
  override check() {
    return true;
  }
  async act(w: World) {
    const res = await call("mp-reconcile", {});
    w.noteAnswer(res);
    expect(w, res.status === 200, 1, `mp-reconcile answered ${res.status}`);
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

/**
 * `deno task backfill --account <id>`, as its domain function in-process. With both databases
 * up it must not fail (an error or a failed account fails the step), and it leaves the cache at
 * the master's version.
 */
class Backfill extends Step {
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
      if (summary.failed > 0 || summary.error) {
        expect(
          w,
          false,
          "backfill",
          `the backfill failed with both databases up (${summary.failed} failed${
            summary.error ? `: ${summary.error}` : ""
          })`,
          a.site,
        );
      } else if (calm(w)) await assertInSync(w, "backfill", a);
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

class ForgeEscrow extends Step {
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
    if (!m || m.seller === null) return NOOP;
    // A pair the system escrowed itself is MercadoPago's, waiting to be applied: overwriting
    // it would lose it by the run's own hand.
    const held = await escrowOf(a.accountId);
    if (held?.refresh && w.ledger.pairOfRefresh(held.refresh)) return NOOP;
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
      const { grants: [g] } = await sandbox.post("grants", {
        count: 1,
        user_id: w.newSeller(),
        client_id: w.controlClient(a.site),
      });
      a.forged.add(tokenId(g.access_token));
      a.forged.add(tokenId(g.refresh_token));
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
    allow(a, 1); // the forged row is discarded; the account's own token may then be refreshed
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

/**
 * Three unauthenticated requests of one kind, each with request-controlled text of the rid's
 * shape (the request id; for `unknown_state`, the state): at most one row more, and (the
 * checker) nothing over 128 characters stored.
 */
class Unauthenticated extends Step {
  readonly name = "unauthenticated";
  constructor(readonly kind: "no_key" | "bad_signature" | "unknown_state", readonly rid: Rid) {
    super();
  }
  override check(w: Readonly<World>) {
    return w.allUp;
  }
  async act(w: World) {
    const before = await rowCounts();
    const allowed = this.kind === "unknown_state" ? 1 : 0;
    const id = makeId(w, this.rid, this.kind !== "unknown_state");
    for (let n = 0; n < 3; n++) {
      if (this.kind === "no_key") {
        for (const fn of ["get-mp-config", "mp-refresh", "mp-revoke", "provision-step-7-1"]) {
          const res = await call(fn, { client_id: crypto.randomUUID() }, {
            key: "x".repeat(40),
            headers: { "x-request-id": id },
          });
          w.noteAnswer(res);
          checkEcho(id, res, fn);
          expect(w, res.status === 401, 8, `${fn} without a valid key answered ${res.status}`);
        }
      } else if (this.kind === "bad_signature") {
        const res = await call("mp-webhook", {
          action: "application.deauthorized",
          data: { id: "1" },
        }, {
          key: null,
          headers: { "x-request-id": id, "x-signature": `ts=1,v1=${"0".repeat(64)}` },
          query: `?data.id=1&type=mp-connect`,
        });
        w.noteAnswer(res);
        checkEcho(id, res, "mp-webhook");
        expect(w, res.status === 401, 8, `a badly signed webhook answered ${res.status}`);
      } else {
        const q = new URLSearchParams({ code: "TG-forged", state: id });
        const res = await fetch(`${stack.functionsUrl}/mp-oauth-callback?${q}`, {
          redirect: "manual",
        });
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
    return `Unauthenticated(${this.kind}, ${ridText(this.rid)})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Faults

const SANDBOX_MODES = [
  "error_500",
  "timeout",
  "rate_limited",
  "invalid_grant",
  "lose_answer",
  "error_500_after",
  "malformed_200",
  "other_seller",
] as const;

/**
 * The next sandbox call fails as `mode` (the contract's local stack, MercadoPago sandbox). Counted
 * as a fault only when a call takes it (the sandbox's ledger says so).
 */
class SandboxFault extends Step {
  readonly name = "sandbox_fault";
  /** `site`: the one application the fault is limited to (null: every call, the single app). */
  constructor(readonly mode: typeof SANDBOX_MODES[number], readonly site: string | null) {
    super();
  }
  override check() {
    return true;
  }
  async act(w: World) {
    await w.queueFault(this.mode, this.site);
  }
  toString() {
    return this.site === null
      ? `SandboxFault(${this.mode})`
      : `SandboxFault(${this.mode}, ${this.site})`;
  }
}

/** MercadoPago silently kills the seller's access tokens, or the whole grant. */
class Invalidate extends Step {
  readonly name = "invalidate";
  constructor(readonly i: number, readonly scope: "access" | "grant") {
    super();
  }
  async act(w: World) {
    const a = w.acc(this.i);
    if (a.seller === null) return NOOP;
    const res = await sandbox.invalidate(a.seller, this.scope);
    if (!(res.invalidated > 0)) return NOOP; // nothing live to kill
    w.fault(`invalidate_${this.scope}`, w.apps.multi ? a.site : null);
  }
  toString() {
    return `Invalidate(${this.i}, ${this.scope})`;
  }
}

/**
 * Silent invalidation found by the system (the connection's lifecycle, invariant 9): MercadoPago
 * kills the seller's access tokens (or grant), then mp-probe or a checkout report looks at the
 * account.
 */
class InvalidateThenCheck extends Step {
  readonly name = "invalidate_then_check";
  constructor(
    readonly i: number,
    readonly scope: "access" | "grant",
    readonly via: "probe" | "report",
    readonly rid: Rid,
  ) {
    super();
  }
  async act(w: World) {
    if (w.acc(this.i).seller === null) return NOOP;
    await new Invalidate(this.i, this.scope).act(w);
    if (this.via === "probe") await new Probe(this.i).act(w);
    else await new GetConfig(this.i, true, this.rid).act(w);
  }
  toString() {
    return `InvalidateThenCheck(${this.i}, ${this.scope}, ${this.via}${
      this.via === "report" ? `, ${ridText(this.rid)}` : ""
    })`;
  }
}

/** A database stopped (until `StartDb`). */
class StopDb extends Step {
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

class StartDb extends Step {
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
class HangDb extends Step {
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
    w.step.hung = true;
    allow(a, 1);
    await c.freeze(true);
    try {
      const answers = await Promise.all([
        call("get-mp-config", { client_id: a.clientId }),
        call("mp-refresh", { account_id: a.accountId, force: true }),
      ]);
      answers.forEach((r) => w.noteAnswer(r));
      const token = answers[0].status === 200 ? answers[0].body.access_token : undefined;
      if (token !== undefined && (a.revoked || w.deadIds.has(tokenId(token)))) {
        throw new Violation(
          a.revoked ? 2 : 9,
          `get-mp-config answered a token it must not, ${this.which} hanging`,
        );
      }
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
// Events to the platform (docs/events.md, invariant 10; the receiver and the checks: ./events.ts)

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
class DeliverEvents extends Step {
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
    const receipts = w.platform.receipts.length;
    const ids = w.accounts.map((a) => a.accountId);
    if (this.due && w.db.admin === "up") await makeDue(ids);
    await this.deliverOnce(w);
    if (this.mode === "ok" && this.due && calm(w)) await this.drain(w, ids);
    // The receiver failing counts as a fault only when a delivery met it.
    if (w.platform.receipts.slice(receipts).some((r) => !r.acked)) w.fault(`receiver_${this.mode}`);
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
class PullEvents extends Step {
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
 * `mp.connection.expiring` per token version, in the account's state. Put back within the step:
 * the sandbox, whose ledger judges invariant 3's last resort by the expiry it issued, was not
 * told (an account provisioned with 3 days, `ProvisionNew(3 days)`, is near expiry at both).
 */
class NearExpiry extends Step {
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
    if (!row?.at) return NOOP;
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

/**
 * Every command, weighted by repetition, over the stack's applications (`sites`, in `MP_APPS`'s
 * order). With one (the single app) the commands and their generation are the single-app run's
 * as they were, so its replay lines replay; with several, accounts are created in each site,
 * sandbox faults are limited to one application, and a seller of another site is tried.
 */
export function commandArbitraries(sites: readonly string[]): fc.Arbitrary<Cmd>[] {
  if (sites.length === 0) throw new Error("the chaos run needs at least one application");
  const multi = sites.length > 1;
  /** `arb` with a site: drawn among the sites, or (one) the only one without drawing. */
  const withSite = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<[T, string]> =>
    multi ? fc.tuple(arb, fc.constantFrom(...sites)) : arb.map((v) => [v, sites[0]]);
  const connectNew = multi
    ? fc.constantFrom(...sites).map((s) => new ConnectNew(s, true))
    : fc.constant(new ConnectNew(sites[0], false));
  const i = fc.nat(MAX_ACCOUNTS - 1);
  const db = fc.constantFrom("backend" as const, "admin" as const);
  const deliver = fc.tuple(
    fc.constantFrom<ReceiverMode>("ok", "ok", "error", "never"),
    fc.constantFrom(null, 1, 5, 100),
    fc.boolean(),
  ).map(([m, l, d]) => new DeliverEvents(m, l, d));
  const common: fc.Arbitrary<Cmd>[] = [
    connectNew,
    connectNew,
    multi
      ? fc.constantFrom(...sites).map((s) => new ProvisionNew(30, s, true))
      : fc.constant(new ProvisionNew(30, sites[0], false)),
    withSite(fc.constantFrom(30 as const, 3 as const)).map(([d, s]) =>
      new ProvisionNew(d, s, multi)
    ),
    fc.tuple(i, fc.constantFrom("reconnect" as const, "replace" as const, "mismatch" as const))
      .map(([n, k]) => new Connect(n, k)),
    i.map((n) => new Provision(n)),
    fc.tuple(i, fc.boolean()).map(([n, f]) => new RefreshPair(n, f)),
    fc.tuple(i, fc.boolean()).map(([n, f]) => new RefreshPair(n, f)),
    fc.tuple(
      i,
      fc.constantFrom(
        "error_500" as const,
        "timeout" as const,
        "lose_answer" as const,
        "error_500_after" as const,
      ),
      fc.boolean(),
    ).map(([n, m, f]) => new RefreshUnknownThenAgain(n, m, f)),
    fc.tuple(i, ridArb).map(([n, r]) => new Revoke(n, r)),
    fc.tuple(i, fc.boolean(), ridArb).map(([n, r, id]) => new GetConfig(n, r, id)),
    fc.tuple(i, fc.boolean(), ridArb).map(([n, r, id]) => new GetConfig(n, r, id)),
    i.map((n) => new Probe(n)),
    i.map((n) => new DeauthorizeGenuine(n)),
    fc.tuple(i, fc.boolean(), fc.integer({ min: 1, max: 3 }), ridArb)
      .map(([n, k, t, id]) => new DeauthorizeSigned(n, k, t, id)),
    fc.constant(new Reconcile()),
    i.map((n) => new Backfill(n)),
    fc.tuple(i, fc.constantFrom("garbage" as const, "other_aad" as const, "other_seller" as const))
      .map(([n, k]) => new ForgeEscrow(n, k)),
    fc.tuple(
      fc.constantFrom("no_key" as const, "bad_signature" as const, "unknown_state" as const),
      ridArb,
    ).map(([k, id]) => new Unauthenticated(k, id)),
    multi
      ? fc.tuple(fc.constantFrom(...SANDBOX_MODES), fc.constantFrom(...sites))
        .map(([m, s]) => new SandboxFault(m, s))
      : fc.constantFrom(...SANDBOX_MODES).map((m) => new SandboxFault(m, null)),
    fc.tuple(i, fc.constantFrom("access" as const, "grant" as const))
      .map(([n, s]) => new Invalidate(n, s)),
    fc.tuple(
      i,
      fc.constantFrom("access" as const, "grant" as const),
      fc.constantFrom("probe" as const, "report" as const),
      ridArb,
    ).map(([n, s, v, id]) => new InvalidateThenCheck(n, s, v, id)),
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
  if (multi) common.push(i.map((n) => new ConnectWrongSite(n)));
  return common;
}
