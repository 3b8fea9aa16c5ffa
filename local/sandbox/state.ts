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

/** Options for the sandbox: the one registered application and an optional clock. */
export interface SandboxOptions {
  clientId: string;
  clientSecret: string;
  /** Clock in epoch milliseconds (default `Date.now`): code life and access token expiry. */
  now?: () => number;
  /** The application's webhook secret: `/__sandbox/deauthorize` signs its notification with it. */
  webhookSecret?: string;
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
export type Call = "token" | "users_me";

/** A code waiting for its exchange. */
export interface PendingCode {
  clientId: string;
  redirectUri: string;
  userId: number;
  codeChallenge?: string;
  issuedAt: number;
}

/** One authorization's chain of rotations; revoking it kills every token descended from it. */
export interface Grant {
  userId: number;
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

/** The counters `GET /__sandbox/stats` answers. */
export function newStats() {
  return {
    token_calls: 0,
    refresh_token_reuse: 0,
    authorizations: 0,
    refreshes: 0,
    users_me_calls: 0,
  };
}

/** Whether a fault strikes after its call is processed. */
export function isAfterMode(mode: FaultMode): boolean {
  return (AFTER_MODES as readonly string[]).includes(mode);
}

/** The sandbox's state and the operations its surfaces share. */
export class SandboxState {
  readonly now: () => number;
  readonly codes = new Map<string, PendingCode>();
  readonly refreshTokens = new Map<string, RefreshEntry>();
  readonly accessTokens = new Map<string, AccessEntry>();
  /** Seller user_id → stable public key. */
  readonly publicKeys = new Map<number, string>();
  /** The last pair issued, per seller and overall. */
  readonly lastTokens = new Map<number | "any", TokenBody>();
  /** Pending latency/timeout waits, released by close(). */
  readonly waiters = new Set<() => void>();
  /** Every token, code and verifier seen, for leak scans. */
  readonly issued = new Set<string>();
  /** Releases of the token calls held now. */
  readonly held = new Set<() => void>();
  closed = false;
  fault: { mode: FaultMode; count: number } | null = null;
  latencyMs = 0;
  /** The latch: token calls wait until the test releases them. */
  holding = false;
  stats = newStats();
  /** What passed through the sandbox, for checkers that only read (`sandbox/ledger.ts`). */
  readonly ledger: Ledger;

  constructor(readonly opts: SandboxOptions) {
    this.now = opts.now ?? Date.now;
    this.ledger = new Ledger(this.now, opts.clientId);
  }

  /** The given seller, or a new one with an unused random user_id; ensures its public key. */
  seller(userId?: number): number {
    let id = userId;
    while (id === undefined) {
      const candidate = 100_000_000 + (crypto.getRandomValues(new Uint32Array(1))[0] % 1e9);
      if (!this.publicKeys.has(candidate)) id = candidate;
    }
    if (!this.publicKeys.has(id)) this.publicKeys.set(id, `APP_USR-${crypto.randomUUID()}`);
    return id;
  }

  /**
   * Issues a new access and refresh token on `grant` (a new grant for a seller id), recorded in
   * the ledger with its origin; the access token lives `expiresIn` seconds.
   */
  issueTokens(
    grant: Grant | number,
    origin: Origin = { via: "seed" },
    expiresIn = EXPIRES_IN,
  ): TokenBody {
    const g = typeof grant === "number" ? { userId: grant, revoked: false } : grant;
    const userId = g.userId;
    const refreshToken = `TG-${hex(12)}-${userId}`;
    this.refreshTokens.set(refreshToken, { grant: g, used: false, revoked: false });
    const appId = /^\d+$/.test(this.opts.clientId) ? this.opts.clientId : digits(16);
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
      public_key: this.publicKeys.get(userId)!,
      live_mode: true,
    };
    this.lastTokens.set(userId, body).set("any", body);
    this.ledger.issued(body, g, expiresAt, origin);
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

  /** Takes the fault of the next call (in arrival order), if its mode concerns this call. */
  takeFault(call: Call, grantType: string | null = null): FaultMode | undefined {
    const fault = this.fault;
    if (!fault || (call !== "token" && isAfterMode(fault.mode))) return undefined;
    const mode = fault.mode;
    if (--fault.count <= 0) this.fault = null;
    this.ledger.faultFired(mode, call, grantType);
    return mode;
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
   * Holds a token call (before anything of it is processed) until the latch opens: true then,
   * false early on client abort or close().
   */
  hold(signal: AbortSignal): Promise<boolean> {
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
      this.held.add(release);
      this.waiters.add(onAbort);
    });
  }

  /** Opens the latch: every held token call goes on, in arrival order. */
  releaseHeld() {
    this.holding = false;
    for (const release of [...this.held]) release();
  }

  /** Releases every wait and hold (the sandbox is going away). */
  close() {
    this.closed = true;
    for (const release of [...this.waiters]) release();
  }
}
