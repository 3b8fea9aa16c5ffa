/**
 * What the MercadoPago sandbox remembers (codes, tokens and their grants, sellers' public keys,
 * faults, latency, the latch, counters) and the small operations every surface shares: a
 * seller, issuing a pair, revoking tokens, waiting and holding a call.
 */
import { digits, hex } from "./wire.ts";
import { type KillRecord, Ledger, type Origin } from "./ledger.ts";

/** A MercadoPago token response (what the sandbox grants; tests and bench share it). */
export interface MpGrant {
  access_token: string;
  refresh_token: string;
  public_key: string;
  user_id: number;
  expires_in: number;
  live_mode: boolean;
  scope: string;
}

/** One MercadoPago application the sandbox knows: its site, credentials and webhook secrets. */
export interface SandboxApp {
  /** The site it was registered in (`MLA`, `MLB`, …): the site of the sellers it creates. */
  siteId: string;
  clientId: string;
  clientSecret: string;
  /** Its webhook secrets; the first signs the notifications of `/__sandbox/deauthorize`. */
  webhookSecrets: string[];
}

/**
 * Options for the sandbox: the one registered application (`clientId`, `clientSecret`, an
 * optional `webhookSecret` and `siteId`, default `MLA`) or several (`apps`, one per site, the
 * first the default: notifications then carry `?app=<site>`), and an optional clock.
 */
export type SandboxOptions =
  & (
    | { clientId: string; clientSecret: string; webhookSecret?: string; siteId?: string }
    | { apps: SandboxApp[] }
  )
  & {
    /** Clock in epoch milliseconds (default `Date.now`): code life and access token expiry. */
    now?: () => number;
  };

/** A seller: its public key, its site, and the application it was created through (its own). */
interface Seller {
  publicKey: string;
  siteId: string;
  clientId: string;
}

/** A fault queued for the next `count` calls. */
interface Fault {
  mode: FaultMode;
  count: number;
}

/** The controls limited to one application (`"client_id"` in the control's body). */
interface AppControls {
  fault: Fault | null;
  latencyMs: number;
  holding: boolean;
}

/** The body of a successful token call. */
export type TokenBody = MpGrant & { token_type: string };

/** Faults that fail a call before it is processed (the old modes, also on `/users/me`). */
export const BEFORE_MODES = ["error_500", "timeout", "rate_limited", "invalid_grant"] as const;
/** Faults that strike a token call after it is processed (`/oauth/token` only). */
export const AFTER_MODES = [
  "lose_answer",
  "error_500_after",
  "malformed_200",
  "other_seller",
] as const;
/** Any fault mode. */
export type FaultMode = typeof BEFORE_MODES[number] | typeof AFTER_MODES[number];
/** Which kind of API call a fault is taken by. */
type Call = "token" | "users_me";

/** A code waiting for its exchange (bound to the application that asked for it). */
interface PendingCode {
  clientId: string;
  redirectUri: string;
  userId: number;
  codeChallenge?: string;
  issuedAt: number;
}

/**
 * One authorization's chain of rotations, bound to the application it was issued to; revoking it
 * kills every token descended from it.
 */
interface Grant {
  userId: number;
  clientId: string;
  revoked: boolean;
}

/** An issued access token. */
export interface AccessEntry {
  grant: Grant;
  revoked: boolean;
  expiresAt: number;
}

/** An issued refresh token. */
export interface RefreshEntry {
  grant: Grant;
  revoked: boolean;
  used: boolean;
}

/** How long a code lives. */
export const CODE_TTL_MS = 10 * 60 * 1000;
const EXPIRES_IN = 15552000;

/** One application's counters in `GET /__sandbox/stats` (`apps`, keyed by client id). */
function newAppStats(app: SandboxApp) {
  return {
    site_id: app.siteId,
    token_calls: 0,
    authorizations: 0,
    refreshes: 0,
    users_me_calls: 0,
    cross_app_calls: 0,
  };
}

/** The counters `GET /__sandbox/stats` answers: totals, and per application (`apps`). */
export function newStats(apps: Iterable<SandboxApp> = []) {
  return {
    token_calls: 0,
    refresh_token_reuse: 0,
    authorizations: 0,
    refreshes: 0,
    users_me_calls: 0,
    cross_app_calls: 0,
    apps: Object.fromEntries([...apps].map((a) => [a.clientId, newAppStats(a)])),
  };
}

/** The controls of an application before any is set. */
function noAppControls(): AppControls {
  return { fault: null, latencyMs: 0, holding: false };
}

/** Whether a fault strikes after its call is processed. */
function isAfterMode(mode: FaultMode): boolean {
  return (AFTER_MODES as readonly string[]).includes(mode);
}

/** The sandbox's state and the operations its surfaces share. */
export class SandboxState {
  readonly now: () => number;
  readonly codes = new Map<string, PendingCode>();
  readonly refreshTokens = new Map<string, RefreshEntry>();
  readonly accessTokens = new Map<string, AccessEntry>();
  /** Seller user_id → its stable public key, site and own application. */
  readonly sellers = new Map<number, Seller>();
  /** The applications, by client id, in the order given (the first is the default). */
  readonly apps = new Map<string, SandboxApp>();
  /** Whether the applications came as a list (`MP_APPS`): notifications name their site. */
  readonly multiApp: boolean;
  /** Controls limited to one application, by client id (`"client_id"` in a control's body). */
  readonly appControls = new Map<string, AppControls>();
  /** The last pair issued, per seller and overall. */
  readonly lastTokens = new Map<number | "any", TokenBody>();
  /** Pending latency/timeout waits, released by close(). */
  readonly waiters = new Set<() => void>();
  /** Every token, code and verifier seen, for leak scans. */
  readonly issued = new Set<string>();
  /** Releases of the token calls held now, each with the application whose latch holds it (null: every call's latch). */
  readonly held = new Map<() => void, string | null>();
  closed = false;
  fault: Fault | null = null;
  latencyMs = 0;
  /** The latch: token calls wait until the test releases them. */
  holding = false;
  stats = newStats();
  /** What passed through the sandbox, for checkers that only read (`sandbox/ledger.ts`). */
  readonly ledger: Ledger;

  constructor(readonly opts: SandboxOptions) {
    this.now = opts.now ?? Date.now;
    const apps = "apps" in opts ? opts.apps : [{
      siteId: opts.siteId ?? "MLA",
      clientId: opts.clientId,
      clientSecret: opts.clientSecret,
      webhookSecrets: opts.webhookSecret ? [opts.webhookSecret] : [],
    }];
    if (apps.length === 0) throw new Error("the sandbox needs at least one application");
    for (const app of apps) {
      if (this.apps.has(app.clientId)) throw new Error("two applications share a client_id");
      this.apps.set(app.clientId, app);
      // The apps' secrets are looked for in every output, as the tokens are.
      this.issued.add(app.clientSecret);
      for (const secret of app.webhookSecrets) this.issued.add(secret);
    }
    this.multiApp = "apps" in opts;
    this.stats = newStats(this.apps.values());
    this.ledger = new Ledger(this.now, apps[0].clientId);
  }

  /** The default application: the single one, or the first of `apps`. */
  get defaultApp(): SandboxApp {
    return this.apps.values().next().value!;
  }

  /** The counters of application `clientId`, if the sandbox knows it. */
  appStats(clientId: string | undefined): ReturnType<typeof newAppStats> | undefined {
    return clientId === undefined ? undefined : this.stats.apps[clientId];
  }

  /** The controls limited to application `clientId` (created unset on first use). */
  controlsOf(clientId: string): AppControls {
    let c = this.appControls.get(clientId);
    if (!c) this.appControls.set(clientId, c = noAppControls());
    return c;
  }

  /**
   * The given seller, or a new one with an unused random user_id, created through `app` in
   * `siteId` (default: the app's site); ensures its public key. An existing seller keeps its site
   * and own application.
   */
  seller(userId?: number, app: SandboxApp = this.defaultApp, siteId = app.siteId): number {
    let id = userId;
    while (id === undefined) {
      const candidate = 100_000_000 + (crypto.getRandomValues(new Uint32Array(1))[0] % 1e9);
      if (!this.sellers.has(candidate)) id = candidate;
    }
    if (!this.sellers.has(id)) {
      this.sellers.set(id, {
        publicKey: `APP_USR-${crypto.randomUUID()}`,
        siteId,
        clientId: app.clientId,
      });
    }
    return id;
  }

  /** A new grant of seller `userId` on application `clientId` (default: the seller's own). */
  newGrant(userId: number, clientId?: string): Grant {
    return {
      userId,
      clientId: clientId ?? this.sellers.get(userId)?.clientId ?? this.defaultApp.clientId,
      revoked: false,
    };
  }

  /**
   * Issues a new access and refresh token on `grant` (a new grant of the seller's own application
   * for a seller id), recorded in the ledger with its origin; the access token lives `expiresIn`
   * seconds.
   */
  issueTokens(
    grant: Grant | number,
    origin: Origin = { via: "seed" },
    expiresIn = EXPIRES_IN,
  ): TokenBody {
    const g = typeof grant === "number" ? this.newGrant(grant) : grant;
    const userId = g.userId;
    const refreshToken = `TG-${hex(12)}-${userId}`;
    this.refreshTokens.set(refreshToken, { grant: g, used: false, revoked: false });
    const appId = /^\d+$/.test(g.clientId) ? g.clientId : digits(16);
    const accessToken = `APP_USR-${appId}-${digits(6)}-${hex(16)}-${userId}`;
    this.issued.add(accessToken).add(refreshToken);
    const expiresAt = this.now() + expiresIn * 1000;
    this.accessTokens.set(accessToken, { grant: g, revoked: false, expiresAt });
    const body = {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: expiresIn,
      scope: "offline_access read write",
      user_id: userId,
      refresh_token: refreshToken,
      public_key: this.sellers.get(userId)!.publicKey,
      live_mode: true,
    };
    this.lastTokens.set(userId, body).set("any", body);
    this.ledger.issued(body, g, expiresAt, { ...origin, clientId: g.clientId });
    return body;
  }

  /** True while a token can be used: neither it nor its grant was revoked. */
  live(entry: AccessEntry | RefreshEntry): boolean {
    return !entry.revoked && !entry.grant.revoked;
  }

  /**
   * Revokes the live tokens of `tokens` that `match`; returns how many. With `cause`, the
   * ledger's kill list records them (per seller).
   */
  revoke<E extends AccessEntry | RefreshEntry>(
    tokens: Map<string, E>,
    match: (entry: E) => boolean,
    cause?: KillRecord["cause"],
  ): number {
    const killed = new Map<number, string[]>();
    for (const [token, entry] of tokens) {
      if (this.live(entry) && match(entry)) {
        entry.revoked = true;
        killed.set(entry.grant.userId, [...(killed.get(entry.grant.userId) ?? []), token]);
      }
    }
    const access = tokens === (this.accessTokens as Map<string, unknown>);
    for (const [userId, list] of killed) {
      if (cause) this.ledger.killed(cause, userId, access ? list : [], access ? [] : list);
    }
    return [...killed.values()].reduce((n, list) => n + list.length, 0);
  }

  /**
   * Revokes a whole grant (every token of it stops working), recorded in the kill list: its
   * live access tokens and its unspent refresh tokens.
   */
  revokeGrant(grant: Grant, cause: KillRecord["cause"]): void {
    const live = <E extends AccessEntry | RefreshEntry>(tokens: Map<string, E>) =>
      [...tokens].filter(([, e]) => e.grant === grant && this.live(e)).map(([t]) => t);
    const access = live(this.accessTokens);
    const refresh = live(this.refreshTokens).filter((t) => !this.refreshTokens.get(t)!.used);
    grant.revoked = true;
    this.ledger.killed(cause, grant.userId, access, refresh);
  }

  /**
   * Takes the fault of the next call (in arrival order), if its mode concerns this call: the
   * fault limited to the call's application `clientId` when one is queued, else the fault of
   * every call.
   */
  takeFault(call: Call, grantType: string | null = null, clientId?: string): FaultMode | undefined {
    const own = clientId === undefined ? undefined : this.appControls.get(clientId);
    const holder = own?.fault ? own : this;
    const fault = holder.fault;
    if (!fault || (call !== "token" && isAfterMode(fault.mode))) return undefined;
    const mode = fault.mode;
    if (--fault.count <= 0) holder.fault = null;
    this.ledger.faultFired(mode, call, grantType, holder === this ? null : clientId!);
    return mode;
  }

  /** The latency of a call of application `clientId`: its own when set, else every call's. */
  latencyFor(clientId?: string): number {
    const own = clientId === undefined ? undefined : this.appControls.get(clientId);
    return own && own.latencyMs > 0 ? own.latencyMs : this.latencyMs;
  }

  /** Whether application `clientId`'s own latch holds its token calls. */
  appHolding(clientId: string | undefined): boolean {
    return clientId !== undefined && this.appControls.get(clientId)?.holding === true;
  }

  /** How many token calls are held: all of them, or those application `clientId`'s latch holds. */
  heldCount(clientId?: string): number {
    if (clientId === undefined) return this.held.size;
    return [...this.held.values()].filter((c) => c === clientId).length;
  }

  /** Resolves true after `ms` (null = never), or false early on client abort or close(). */
  wait(ms: number | null, signal: AbortSignal): Promise<boolean> {
    if (this.closed || signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (elapsed: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.waiters.delete(onAbort);
        resolve(elapsed);
      };
      const onAbort = () => done(false);
      const timer = ms === null ? undefined : setTimeout(() => done(true), ms);
      signal.addEventListener("abort", onAbort);
      this.waiters.add(onAbort);
    });
  }

  /**
   * Holds a token call (before anything of it is processed) until the latch opens (every call's,
   * or application `clientId`'s own): true then, false early on client abort or close().
   */
  hold(signal: AbortSignal, clientId: string | null = null): Promise<boolean> {
    if (this.closed || signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (go: boolean) => {
        signal.removeEventListener("abort", onAbort);
        this.held.delete(release);
        this.waiters.delete(onAbort);
        resolve(go);
      };
      const onAbort = () => done(false);
      const release = () => done(true);
      signal.addEventListener("abort", onAbort);
      this.held.set(release, clientId);
      this.waiters.add(onAbort);
    });
  }

  /**
   * Opens the latch of every call (`clientId` undefined) or application `clientId`'s own: the
   * token calls it held go on, in arrival order.
   */
  releaseHeld(clientId?: string) {
    if (clientId === undefined) this.holding = false;
    else this.controlsOf(clientId).holding = false;
    const by = clientId ?? null;
    for (const [release, latch] of [...this.held]) if (latch === by) release();
  }

  /** Releases every wait and hold (the sandbox is going away). */
  close() {
    this.closed = true;
    for (const release of [...this.waiters]) release();
  }
}
