/**
 * The chaos run's copy of the sandbox's ledger (`GET /__sandbox/ledger?since=n`,
 * local/sandbox/ledger.ts): what MercadoPago issued, was shown, answered and killed, read
 * incrementally (only what changed since the last read) and kept for lookups by token id. Reading
 * it changes nothing at the sandbox. Tokens are looked up by their id (`tokenId`), never shown.
 */
import {
  type FaultRecord,
  type KillRecord,
  type LedgerView,
  type PairRecord,
  type Presentation,
  tokenId,
  type UnknownPresentation,
  type UsersMeRecord,
} from "../../local/sandbox/ledger.ts";

export { tokenId };
export type { LedgerView, PairRecord, Presentation };

/** A presentation new since the last read, with the pair it belongs to (if the sandbox issued it). */
export interface NewPresentation {
  refreshId: string;
  pair: PairRecord | undefined;
  p: Presentation;
  /** Its place among its refresh token's presentations (for a token the sandbox issued). */
  index: number;
}

/** What one or more reads brought: the records that changed, and the presentations that are new. */
export interface LedgerDelta {
  pairs: PairRecord[];
  presentations: NewPresentation[];
  kills: KillRecord[];
  usersMe: UsersMeRecord[];
  faults: FaultRecord[];
}

/** An empty delta. */
export function emptyDelta(): LedgerDelta {
  return { pairs: [], presentations: [], kills: [], usersMe: [], faults: [] };
}

/** The reader's copy of the ledger. */
export class LedgerMirror {
  seq = 0;
  /** `sandboxUrl`: where the sandbox serves its controls (the stack's). */
  constructor(private readonly sandboxUrl: string) {}

  readonly pairs = new Map<string, PairRecord>();
  readonly byAccess = new Map<string, PairRecord>();
  /** Refresh ids of the pairs issued for a code or refresh token, by its id. */
  readonly children = new Map<string, Set<string>>();
  /** Presentations of refresh tokens the sandbox never issued, by their place in its list. */
  readonly unknown = new Map<number, UnknownPresentation>();
  readonly kills: KillRecord[] = [];

  /** Starts from the ledger's present: what happened before is not the run's. */
  async start(): Promise<void> {
    this.seq = (await this.fetch(Number.MAX_SAFE_INTEGER)).seq;
  }

  private async fetch(since: number): Promise<LedgerView> {
    const res = await fetch(`${this.sandboxUrl}/__sandbox/ledger?since=${since}`);
    if (!res.ok) throw new Error(`the sandbox's ledger answered ${res.status}`);
    return await res.json();
  }

  /** Reads what changed since the last read into the copy; returns it. */
  async read(): Promise<LedgerDelta> {
    return this.apply(await this.fetch(this.seq));
  }

  /** Takes a ledger view (what changed after `this.seq`) into the copy; returns what it brought. */
  apply(view: LedgerView): LedgerDelta {
    const delta = emptyDelta();
    for (const rec of view.pairs) {
      const old = this.pairs.get(rec.refresh_id);
      // Presentations are only ever appended; an earlier one may have got its answer since.
      const from = old?.presented.length ?? 0;
      rec.presented.slice(from).forEach((p, k) => {
        delta.presentations.push({ refreshId: rec.refresh_id, pair: rec, p, index: from + k });
      });
      this.pairs.set(rec.refresh_id, rec);
      this.byAccess.set(rec.access_id, rec);
      if (rec.parent !== null) {
        this.children.set(
          rec.parent,
          (this.children.get(rec.parent) ?? new Set()).add(rec.refresh_id),
        );
      }
      delta.pairs.push(rec);
    }
    for (const u of view.unknown_presented) {
      if (!this.unknown.has(u.n)) {
        delta.presentations.push({ refreshId: u.refresh_id, pair: undefined, p: u, index: 0 });
      }
      this.unknown.set(u.n, u);
    }
    this.kills.push(...view.kills);
    delta.kills.push(...view.kills);
    delta.usersMe.push(...view.users_me);
    delta.faults.push(...view.faults);
    this.seq = view.seq;
    return delta;
  }

  /** The pairs issued for the code or refresh token of id `parent`. */
  childrenOf(parent: string): PairRecord[] {
    return [...(this.children.get(parent) ?? [])].map((id) => this.pairs.get(id)!);
  }

  /** Every presentation of the refresh token of id `refreshId` (issued or not). */
  presentationsOf(refreshId: string): Presentation[] {
    const pair = this.pairs.get(refreshId);
    if (pair) return pair.presented;
    return [...this.unknown.values()].filter((u) => u.refresh_id === refreshId);
  }

  /** The pair an access token belongs to (undefined when the sandbox did not issue it). */
  pairOfAccess(token: string): PairRecord | undefined {
    return this.byAccess.get(tokenId(token));
  }

  /** The pair a refresh token belongs to (undefined when the sandbox did not issue it). */
  pairOfRefresh(token: string): PairRecord | undefined {
    return this.pairs.get(tokenId(token));
  }

  /** Whether the pair `descendant` is `ancestor` or was issued, refresh after refresh, from it. */
  descends(descendant: string, ancestor: string): boolean {
    let id: string | null = descendant;
    for (let n = 0; id !== null && n < 100_000; n++) {
      if (id === ancestor) return true;
      const rec = this.pairs.get(id);
      id = rec?.via === "refresh" ? rec.parent : null;
    }
    return false;
  }
}

/** Appends `more` to `into`. */
export function addDelta(into: LedgerDelta, more: LedgerDelta): void {
  into.pairs.push(...more.pairs);
  into.presentations.push(...more.presentations);
  into.kills.push(...more.kills);
  into.usersMe.push(...more.usersMe);
  into.faults.push(...more.faults);
}
