/**
 * The sandbox's own record of what passed through it, for checkers that must only read
 * (`GET /__sandbox/ledger?since=<seq>`): every pair it issued (to which seller and application,
 * how: a code, a refresh token, a seeded grant; and whether its answer reached the caller),
 * every time a refresh token was presented and what it was answered, the tokens it killed
 * (invalidation, deauthorization, reuse of a spent refresh token), every `/users/me` verdict,
 * and every fault that fired. Tokens and codes appear only as ids (a hash, `tokenId`), never
 * as themselves. Each record carries the sequence number of its last change: `since` answers
 * only what changed after it, so a reader after every step reads only the step's records.
 */
import { createHash } from "node:crypto";
import { mpError } from "./wire.ts";

/** The ledger's id of a token or code: the first 24 hex digits of its SHA-256 (not the secret). */
export function tokenId(token: string): string {
  return createHash("sha256").update(token).digest("hex").slice(0, 24);
}

/** How an issued pair's answer went: reached the caller whole, or not (and how). */
type PairAnswer =
  | "delivered"
  | "dropped"
  | "error_500_after"
  | "malformed_200"
  | "abandoned"
  | "seeded";

/** One presentation of a refresh token and what the sandbox answered to it. */
export interface Presentation {
  at: number;
  /**
   * `issued` (a new pair: see its record), `dropped`, `error_500_after`, `malformed_200`,
   * `other_seller` (processed, answered as the fault says), `reused` (spent before: the grant is
   * revoked), `invalid_grant`, `error_500`, `timeout`, `rate_limited` (failed before
   * processing), `abandoned` (the caller went away first), `invalid_client`, `invalid_request`,
   * `cross_app` (presented with another application's credentials: refused unprocessed, the
   * token not spent).
   */
  answer: string;
  /** Refresh id of the pair it issued, if any. */
  issued: string | null;
}

/** One issued pair, keyed by its refresh token's id. */
export interface PairRecord {
  seq: number;
  refresh_id: string;
  access_id: string;
  user_id: number;
  /** The application it was issued to (its grant's). */
  client_id: string;
  /** The grant (chain of rotations) it belongs to. */
  grant: number;
  via: "code" | "refresh" | "seed";
  /** The id of the code or refresh token presented to get it (null when seeded). */
  parent: string | null;
  /** For a code: the seller who authorized (an `other_seller` fault may issue to another). */
  authorized_user_id: number | null;
  issued_at: number;
  access_expires_at: number;
  answer: PairAnswer | "pending";
  presented: Presentation[];
}

/** A refresh token presented that the sandbox never issued (`n`: its place in the list). */
export interface UnknownPresentation extends Presentation {
  seq: number;
  n: number;
  refresh_id: string;
}

/** Tokens the sandbox killed at once. */
export interface KillRecord {
  seq: number;
  at: number;
  cause: "invalidate_access" | "invalidate_grant" | "deauthorize" | "reuse";
  user_id: number;
  access_ids: string[];
  refresh_ids: string[];
}

/** One `/users/me` verdict. */
export interface UsersMeRecord {
  seq: number;
  at: number;
  /** Id of the bearer token (null when there was none). */
  access_id: string | null;
  /** The seller the token was issued to, when the sandbox issued it. */
  user_id: number | null;
  status: number;
  /** The caller was still there when the answer was written. */
  delivered: boolean;
}

/** A fault that fired (was taken by a call). */
export interface FaultRecord {
  seq: number;
  at: number;
  mode: string;
  call: "token" | "users_me";
  grant_type: string | null;
  /** The application the fault was limited to (null: a fault of every call). */
  client_id: string | null;
}

/** What `GET /__sandbox/ledger?since=n` answers: every record changed after `n`. */
export interface LedgerView {
  seq: number;
  pairs: PairRecord[];
  unknown_presented: UnknownPresentation[];
  kills: KillRecord[];
  users_me: UsersMeRecord[];
  faults: FaultRecord[];
}

/** A presentation waiting for its answer, with the record it belongs to. */
export interface Shown {
  p: Presentation;
  owner: { seq: number };
}

/** How a pair came to be issued. */
export interface Origin {
  via: "code" | "refresh" | "seed";
  /** The code or refresh token presented (the secret; only its id is kept). */
  parent?: string;
  authorizedUserId?: number;
  /** The application it is issued to (default: the ledger's). */
  clientId?: string;
}

/** The ledger of one sandbox. */
export class Ledger {
  private seq = 0;
  private readonly pairs = new Map<string, PairRecord>();
  private readonly unknown: UnknownPresentation[] = [];
  private readonly kills: KillRecord[] = [];
  private readonly checks: UsersMeRecord[] = [];
  private readonly fired: FaultRecord[] = [];
  private readonly grantIds = new WeakMap<object, number>();
  private nextGrant = 0;

  constructor(private readonly now: () => number, private readonly clientId: string) {}

  /** The ledger's number of a grant object. */
  grantNo(grant: object): number {
    let n = this.grantIds.get(grant);
    if (n === undefined) this.grantIds.set(grant, n = ++this.nextGrant);
    return n;
  }

  /** Records a pair just issued on `grant`. */
  issued(
    pair: { access_token: string; refresh_token: string; user_id: number },
    grant: object,
    accessExpiresAt: number,
    origin: Origin,
  ): void {
    const id = tokenId(pair.refresh_token);
    this.pairs.set(id, {
      seq: ++this.seq,
      refresh_id: id,
      access_id: tokenId(pair.access_token),
      user_id: pair.user_id,
      client_id: origin.clientId ?? this.clientId,
      grant: this.grantNo(grant),
      via: origin.via,
      parent: origin.parent === undefined ? null : tokenId(origin.parent),
      authorized_user_id: origin.authorizedUserId ?? null,
      issued_at: this.now(),
      access_expires_at: accessExpiresAt,
      answer: origin.via === "seed" ? "seeded" : "pending",
      presented: [],
    });
  }

  /** Records that `refreshToken` was presented; answer it with {@link Ledger.answered}. */
  presented(refreshToken: string): Shown {
    const p: Presentation = { at: this.now(), answer: "pending", issued: null };
    const id = tokenId(refreshToken);
    const pair = this.pairs.get(id);
    if (pair) {
      pair.presented.push(p);
      pair.seq = ++this.seq;
      return { p, owner: pair };
    }
    const unknown = Object.assign(p, { seq: ++this.seq, n: this.unknown.length, refresh_id: id });
    this.unknown.push(unknown);
    return { p, owner: unknown };
  }

  /**
   * Records what a token call answered: to its presentation (if it presented a refresh token)
   * `answer`, and to the pair it issued (if any) how that pair's answer went.
   */
  answered(
    shown: Shown | undefined,
    answer: string,
    issued: { refresh_token: string } | undefined,
    pairAnswer: PairAnswer,
  ): void {
    const seq = ++this.seq;
    if (shown) {
      shown.p.answer = answer;
      if (issued) shown.p.issued = tokenId(issued.refresh_token);
      shown.owner.seq = seq;
    }
    const rec = issued && this.pairs.get(tokenId(issued.refresh_token));
    if (rec) {
      rec.answer = pairAnswer;
      rec.seq = seq;
    }
  }

  /** Records tokens killed together (never empty: nothing is recorded when none died). */
  killed(cause: KillRecord["cause"], userId: number, access: string[], refresh: string[]): void {
    if (access.length + refresh.length === 0) return;
    this.kills.push({
      seq: ++this.seq,
      at: this.now(),
      cause,
      user_id: userId,
      access_ids: access.map(tokenId),
      refresh_ids: refresh.map(tokenId),
    });
  }

  /** Records a `/users/me` verdict. */
  checked(token: string | null, userId: number | null, status: number, delivered: boolean): void {
    this.checks.push({
      seq: ++this.seq,
      at: this.now(),
      access_id: token ? tokenId(token) : null,
      user_id: userId,
      status,
      delivered,
    });
  }

  /** Records a fault taken by a call (`clientId`: the application it was limited to). */
  faultFired(
    mode: string,
    call: "token" | "users_me",
    grantType: string | null,
    clientId: string | null = null,
  ): void {
    this.fired.push({
      seq: ++this.seq,
      at: this.now(),
      mode,
      call,
      grant_type: grantType,
      client_id: clientId,
    });
  }

  /** Every record changed after `since` (copies: the reader cannot change the ledger). */
  view(since: number): LedgerView {
    const after = <T extends { seq: number }>(list: Iterable<T>) =>
      [...list].filter((r) => r.seq > since).map((r) => structuredClone(r));
    return {
      seq: this.seq,
      pairs: after(this.pairs.values()),
      unknown_presented: after(this.unknown),
      kills: after(this.kills),
      users_me: after(this.checks),
      faults: after(this.fired),
    };
  }
}

/** `GET /__sandbox/ledger[?since=n]`: the ledger's records changed after `n` (default 0). */
export function ledgerView(ledger: Ledger, url: URL): Response {
  const since = Number(url.searchParams.get("since") ?? "0");
  if (!Number.isSafeInteger(since) || since < 0) {
    return mpError(400, "invalid_request", "invalid since");
  }
  return Response.json(ledger.view(since));
}
