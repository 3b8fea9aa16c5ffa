/**
 * The chaos checker's pure judgements over the sandbox's ledger (tests/chaos/ledger.ts), with the
 * contract's values written out: which presentations of a refresh token count as sends, the one
 * last resort within 7 days of expiry, which pair MercadoPago delivered that the system must keep,
 * which request ids a function may use (128 characters at most), and that the sandbox counted no
 * cross-application call (0). Unit tests: tests/chaos_judge_test.ts.
 */
import type { LedgerMirror, NewPresentation, PairRecord, Presentation } from "./ledger.ts";

const DAY_MS = 86_400_000;

/**
 * Answers that tell a refresh token was refused without being processed, so it may be sent
 * again: 429, and a 4xx other than `invalid_grant` (a wrong client, a malformed request).
 * Everything else may have reached MercadoPago and been processed: a pair issued, a 5xx (before
 * or after processing), a lost or unreadable answer, `invalid_grant`, a call abandoned mid-way.
 */
const REFUSED_UNPROCESSED = new Set([
  "rate_limited",
  "invalid_client",
  "invalid_request",
  "unsupported_grant_type",
]);

/** Whether a presentation counts as a send of its refresh token (invariant 3). */
export function countsAsSend(answer: string): boolean {
  return !REFUSED_UNPROCESSED.has(answer);
}

/**
 * Invariant 3's "at most once": a refresh token is sent at most once, or twice when the second
 * send came while the access token issued with it expires within 7 days (the single last
 * resort). `accessExpiresAt`: that access token's expiry (null: not issued by the sandbox).
 * Returns what is wrong, or null.
 */
export function sendsProblem(
  presented: readonly Presentation[],
  accessExpiresAt: number | null,
): string | null {
  const sends = presented.filter((p) => countsAsSend(p.answer));
  if (sends.length <= 1) return null;
  const answers = sends.map((p) => p.answer).join(", ");
  if (sends.length === 2 && accessExpiresAt !== null) {
    const left = accessExpiresAt - sends[1].at;
    if (left <= 7 * DAY_MS) return null;
    return `sent twice (${answers}), the second ${
      (left / DAY_MS).toFixed(1)
    } days before its access token expires (the last resort is for the last 7 days)`;
  }
  return `sent ${sends.length} times (${answers})`;
}

/**
 * Whether the last of `presented` (a refresh token's presentations up to and with this one) is
 * its last-resort send: its second send, while the access token issued with it expires within
 * 7 days. It is invariant 3's one exception, not a second refresh (invariant 4 does not count it).
 */
export function isLastResort(
  presented: readonly Presentation[],
  accessExpiresAt: number | null,
): boolean {
  const last = presented[presented.length - 1];
  if (!last || !countsAsSend(last.answer) || accessExpiresAt === null) return false;
  const sends = presented.filter((p) => countsAsSend(p.answer));
  return sends.length === 2 && accessExpiresAt - last.at <= 7 * DAY_MS;
}

/**
 * Invariant 3's "never lost": a pair MercadoPago issued for the refresh token the master holds
 * (`heldRefreshId`), for the account's own seller, and delivered whole to a caller still there,
 * must be kept — in the master (then it would hold that pair, not its parent) or in the escrow
 * (`escrowRefreshId`: it or a pair refreshed from it). Returns the first pair not kept, or null.
 */
export function unkeptPair(
  ledger: LedgerMirror,
  heldRefreshId: string,
  seller: number,
  escrowRefreshId: string | null,
): PairRecord | null {
  for (const child of ledger.childrenOf(heldRefreshId)) {
    if (child.via !== "refresh" || child.answer !== "delivered" || child.user_id !== seller) {
      continue;
    }
    if (escrowRefreshId !== null && ledger.descends(escrowRefreshId, child.refresh_id)) continue;
    return child;
  }
  return null;
}

/**
 * The sends among new presentations, per account (invariant 4's count; a last-resort send is
 * not a second refresh): `accountOf` names the account a seller's token belongs to (undefined:
 * none of this run's accounts).
 */
export function sendsPerAccount(
  presentations: readonly NewPresentation[],
  accountOf: (userId: number) => string | undefined,
): { perAccount: Map<string, number>; unattributed: NewPresentation[] } {
  const perAccount = new Map<string, number>();
  const unattributed: NewPresentation[] = [];
  for (const np of presentations) {
    if (!countsAsSend(np.p.answer)) continue;
    if (
      np.pair &&
      isLastResort(np.pair.presented.slice(0, np.index + 1), np.pair.access_expires_at)
    ) continue;
    const account = np.pair ? accountOf(np.pair.user_id) : undefined;
    if (account === undefined) unattributed.push(np);
    else perAccount.set(account, (perAccount.get(account) ?? 0) + 1);
  }
  return { perAccount, unattributed };
}

/** Whether a function may use an incoming `x-request-id` (logs, audit, echo): 1 to 128 of `A-Za-z0-9._-`. */
export function usableRequestId(id: string): boolean {
  return /^[A-Za-z0-9._-]{1,128}$/.test(id);
}

/** Whether mp-webhook accepts a MercadoPago `x-request-id`: 1 to 128 of `A-Za-z0-9-`. */
export function mercadoPagoRequestId(id: string): boolean {
  return /^[A-Za-z0-9-]{1,128}$/.test(id);
}

/** The sandbox's cross-application counts (`GET /__sandbox/stats`), as the judgement reads them. */
interface CrossAppStats {
  cross_app_calls: number;
  apps?: Record<string, { site_id: string; cross_app_calls: number }>;
}

/**
 * "No request ever carries one application's credentials for another application's token": the
 * sandbox's `cross_app_calls` must be 0, in all and for every application. Returns what is wrong
 * (the count, and the sites whose application saw such calls), or null.
 */
export function crossAppProblem(stats: CrossAppStats): string | null {
  const sites = Object.values(stats.apps ?? {}).filter((a) => a.cross_app_calls !== 0)
    .map((a) => `${a.site_id} ${a.cross_app_calls}`);
  if (stats.cross_app_calls === 0 && sites.length === 0) return null;
  return `the sandbox counted ${stats.cross_app_calls} cross-application call(s) (a code or refresh token presented with another application's credentials)${
    sites.length > 0 ? `; by application: ${sites.join(", ")}` : ""
  }`;
}

/**
 * Whether a sandbox fault may excuse an unexpected answer for an account of `site`: one queued
 * (`pending`) or taken in the step (`taken`, by site; `*` for a fault of every call) that is of
 * its own application or of every call. Another application's fault never excuses it: failures
 * stay in their country.
 */
export function faultExcuses(
  site: string,
  pending: { site: string | null } | null,
  taken: ReadonlySet<string>,
): boolean {
  if (pending !== null && (pending.site === null || pending.site === site)) return true;
  return taken.has("*") || taken.has(site);
}
