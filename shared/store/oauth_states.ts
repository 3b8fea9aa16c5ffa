/**
 * Single-use OAuth states (Admin `mp_oauth_states`): a random state bound to one account,
 * stored only as its SHA-256 (`shared/oauth/state_token.ts` makes and hashes it), living 10
 * minutes, consumed by one atomic statement, with the encrypted PKCE verifier that goes with it.
 */
import type { Sql } from "../platform/db.ts";

/** How long a state may wait for its callback. */
const STATE_TTL_MINUTES = 10;

/**
 * Stores a new state for `accountId` (with its encrypted PKCE verifier, if any) expiring in
 * 10 minutes; undefined when the account does not exist. `replaceSeller` lets the connect
 * it starts change the account's seller; `siteId` is the site whose application it goes
 * through. (Expired states are pruned by the retention job.)
 */
export async function createState(
  sql: Sql,
  stateHash: string,
  accountId: string,
  codeVerifierEncrypted: string | null,
  replaceSeller = false,
  siteId: string | null = null,
): Promise<{ expires_at: Date } | undefined> {
  const [row] = await sql<{ expires_at: Date }[]>`
    insert into mp_oauth_states
      (state_hash, account_id, code_verifier_encrypted, replace_seller, site_id, expires_at)
    select ${stateHash}, id, ${codeVerifierEncrypted}, ${replaceSeller}, ${siteId},
           now() + make_interval(mins => ${STATE_TTL_MINUTES})
      from nv_accounts where id = ${accountId}
    returning expires_at`;
  return row;
}

/** A state consumed by the callback: its account, encrypted PKCE verifier and site. */
interface ConsumedState {
  account_id: string;
  code_verifier_encrypted: string | null;
  replace_seller: boolean;
  /** The site whose application the connect goes through (null: started before sites). */
  site_id: string | null;
}

/**
 * Consumes a state in one statement: only an existing, unconsumed, unexpired state yields a
 * row, and only to one caller, however many race for it.
 */
export async function consumeState(
  sql: Sql,
  stateHash: string,
): Promise<ConsumedState | undefined> {
  const [row] = await sql<ConsumedState[]>`
    update mp_oauth_states set consumed_at = now()
     where state_hash = ${stateHash} and consumed_at is null and expires_at > now()
    returning account_id, code_verifier_encrypted, replace_seller, site_id`;
  return row;
}

/** Records how the callback that consumed a state ended, and drops its verifier. */
export async function recordOutcome(sql: Sql, stateHash: string, outcome: string): Promise<void> {
  await sql`
    update mp_oauth_states set outcome = ${outcome}, code_verifier_encrypted = null
     where state_hash = ${stateHash}`;
}

/** What is known of a state that could not be consumed, to tell a replay from a forgery. */
interface StateRecord {
  account_id: string;
  consumed: boolean;
  expired: boolean;
  outcome: string | null;
  account_connected: boolean;
}

/** Reads a state (consumed or not) with its account's connection; undefined when unknown. */
export async function readState(sql: Sql, stateHash: string): Promise<StateRecord | undefined> {
  const [row] = await sql<StateRecord[]>`
    select s.account_id, s.consumed_at is not null as consumed, s.expires_at <= now() as expired,
           s.outcome, coalesce(a.mp_connected, false) as account_connected
      from mp_oauth_states s join nv_accounts a on a.id = s.account_id
     where s.state_hash = ${stateHash}`;
  return row;
}

/**
 * Records that a known state was refused (one statement, on the state's own row): true only
 * the first time, so a replayed state is audited once however often it comes back.
 */
export async function rejectState(sql: Sql, stateHash: string): Promise<boolean> {
  const [row] = await sql<{ first: boolean }[]>`
    select mp_reject_oauth_state(${stateHash}) as first`;
  return row.first;
}
