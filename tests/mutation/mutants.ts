/**
 * The mutants `deno task mutants` puts into the invariant-critical code, one at a time: each a
 * small, realistic bug (a condition inverted, a fence loosened, a check dropped, a statement
 * moved, a constant off by one), never syntax breakage. Each names the invariants
 * it breaks; `from` must occur exactly once in `file` (the harness checks it and reports the
 * mutant `invalid` otherwise). Chosen from the invariants and the code that enforces them
 * (docs/invariants.md), before any run — not from the tests.
 */
import type { Mutant } from "./lib.ts";

const CONN_STATE = "admin/supabase/migrations/20261206000100_mp_connection_state.sql";
/**
 * Where the refresh's fenced steps (mp_begin_refresh_call, mp_save_refreshed, the recorders) and
 * the dead-token clear live since the dead-token fence (they replace CONN_STATE's).
 */
const DEAD_FENCE = "admin/supabase/migrations/20261216000100_mp_dead_token_fence.sql";
const PUBLIC_EDGES = "admin/supabase/migrations/20261130000200_mp_public_edges.sql";
const OUTBOX = "admin/supabase/migrations/20261206000200_mp_event_outbox.sql";
const REFRESH_SQL = "admin/supabase/migrations/20261124000300_mp_refresh.sql";
const RETENTION_CRON = "admin/supabase/migrations/20261130000300_mp_retention_cron.sql";
/** Each application's circuit breaker across runs: its open, half-open trial and its end. */
const APP_BREAKERS = "admin/supabase/migrations/20261217000100_mp_app_breakers.sql";
/** Where mp_save_connection and the event writers live since sites (they replace the older ones). */
const SITES = "admin/supabase/migrations/20261215000100_mp_sites.sql";

/**
 * Files docs/invariants.md names only through a folder (`shared/oauth/`) that hold no decision a
 * bug could get wrong, each with the reason it has no mutant (tests/mutation_harness_test.ts
 * requires a mutant in every other file the "Enforced" paragraphs name).
 */
export const WITHOUT_MUTANT: Record<string, string> = {
  "shared/oauth/result.ts":
    "the callback's result type and the constructor of an error result: no condition, bound or verdict",
};

export const MUTANTS: Mutant[] = [
  // ---- Invariant 1: monotonic cache ----
  {
    name: "writeCache fence loosened (< to <=): a duplicate sync rewrites the cache",
    invariants: [1],
    file: "shared/store/clients.ts",
    from: "where id = ${clientId} and coalesce(mp_token_version, -1) < ${write.version}",
    to: "where id = ${clientId} and coalesce(mp_token_version, -1) <= ${write.version}",
  },
  {
    name: "writeCache without its version fence",
    invariants: [1, 2],
    file: "shared/store/clients.ts",
    from: "where id = ${clientId} and coalesce(mp_token_version, -1) < ${write.version}",
    to: "where id = ${clientId}",
  },
  {
    name: "writeCacheBatch fence loosened (< to <=)",
    invariants: [1],
    file: "shared/store/clients.ts",
    from: "and coalesce(c.mp_token_version, -1) < v.version",
    to: "and coalesce(c.mp_token_version, -1) <= v.version",
  },
  {
    name: "writeCacheBatch without its version fence",
    invariants: [1, 2],
    file: "shared/store/clients.ts",
    from: "         and coalesce(c.mp_token_version, -1) < v.version\n",
    to: "",
  },
  {
    name: "clearOrphanedCache clears whatever version the cache holds now",
    invariants: [1],
    file: "shared/store/clients.ts",
    from: "       and c.mp_token_version is not distinct from x.version\n",
    to: "",
  },
  {
    name: "mp_save_refreshed keeps the version (no bump on a new pair)",
    invariants: [1, 4],
    file: DEAD_FENCE,
    from: "         mp_token_version = nv_accounts.mp_token_version + 1,",
    to: "         mp_token_version = nv_accounts.mp_token_version,",
  },

  // ---- Invariant 2: revoke is final ----
  {
    name: "revoke clears the cache only when the master row changed",
    invariants: [2],
    file: "shared/connection/connection.ts",
    from: "  if (clientId) {",
    to: "  if (clientId && revoked.changed) {",
  },
  {
    name: "revoke answers before the cache is cleared (clear not awaited)",
    invariants: [2],
    file: "shared/connection/connection.ts",
    from: "    await clearClientCache(ctx, clientId, revoked.mp_token_version);",
    to: "    void clearClientCache(ctx, clientId, revoked.mp_token_version).catch(() => {});",
  },
  {
    name: "read-repair ignores a newer (revoked) cache row",
    invariants: [2],
    file: "shared/checkout/get_config.ts",
    from: "(repaired.mp_token_version ?? -1) > write.version",
    to: "(repaired.mp_token_version ?? -1) > write.version + 1",
  },
  {
    name: "mp_revoke_account keeps the version (the cache clear is fenced out)",
    invariants: [2, 1],
    file: CONN_STATE,
    from: "mp_token_expires_at = null, mp_token_version = mp_token_version + 1,",
    to: "mp_token_expires_at = null, mp_token_version = mp_token_version,",
  },

  // ---- Invariant 3: no lost refresh token, none sent twice ----
  {
    name: "a 5xx classified as retry (refresh token sent again)",
    invariants: [3],
    file: "shared/refresh/outcome.ts",
    from:
      '    case "rejected":\n      return "retry";\n    case "invalid_grant":\n      return "reauth";\n' +
      '    case "timeout":\n    case "lost":\n    case "server_error":\n',
    to: '    case "rejected":\n    case "server_error":\n      return "retry";\n' +
      '    case "invalid_grant":\n      return "reauth";\n    case "timeout":\n    case "lost":\n',
  },
  {
    name: "a timeout classified as retry",
    invariants: [3],
    file: "shared/refresh/outcome.ts",
    from:
      '    case "rejected":\n      return "retry";\n    case "invalid_grant":\n      return "reauth";\n' +
      '    case "timeout":\n',
    to: '    case "rejected":\n    case "timeout":\n      return "retry";\n' +
      '    case "invalid_grant":\n      return "reauth";\n',
  },
  {
    name: "an unreadable 2xx classified as retry",
    invariants: [3],
    file: "shared/refresh/outcome.ts",
    from: '    case "server_error":\n    case "bad_response":\n      return "unknown";',
    to:
      '    case "server_error":\n      return "unknown";\n    case "bad_response":\n      return "retry";',
  },
  {
    name: "a lost connection taken for never sent (neverSent matches any client error)",
    invariants: [3],
    file: "shared/mercadopago/api.ts",
    from: "return /client error \\(Connect\\)|Requests to port \\d+ are blocked/.test(text);",
    to: "return /client error|Requests to port \\d+ are blocked/.test(text);",
  },
  {
    name: "mp_begin_refresh_call allows a second send whatever the expiry",
    invariants: [3],
    file: DEAD_FENCE,
    from: "       and (mp_refresh_sends = 0\n            or (mp_refresh_sends = 1 and",
    to: "       and (mp_refresh_sends <= 1\n            or (mp_refresh_sends = 1 and",
  },
  {
    name: "mp_claim_due_accounts claims a sent-once token whatever the expiry",
    invariants: [3],
    file: CONN_STATE,
    from: "         and (n.id = any (p_escrowed) or n.mp_refresh_sends = 0\n",
    to: "         and (n.id = any (p_escrowed) or n.mp_refresh_sends <= 1\n",
  },
  {
    name: "the last-resort window off by a week (14 days) in mp_begin_refresh_call",
    invariants: [3],
    file: DEAD_FENCE,
    from:
      "            or (mp_refresh_sends = 1 and mp_token_expires_at <= now() + interval '7 days'))",
    to:
      "            or (mp_refresh_sends = 1 and mp_token_expires_at <= now() + interval '14 days'))",
  },
  {
    name: "the refresher ignores mp_begin_refresh_call's refusal",
    invariants: [3],
    file: "shared/refresh/account.ts",
    from:
      "      beginRefreshCall(sql, account.id, run.owner, account.mp_token_version)\n    ))\n  ) {",
    to:
      "      beginRefreshCall(sql, account.id, run.owner, account.mp_token_version)\n    )) && false\n  ) {",
  },
  {
    name: "circuit breaker limit off by one (4 unknown outcomes)",
    invariants: [3],
    file: "shared/refresh/outcome.ts",
    from: "const BREAKER_LIMIT = 3;",
    to: "const BREAKER_LIMIT = 4;",
  },
  {
    name: "the save's failure is not escrowed: the new pair is dropped",
    invariants: [3],
    file: "shared/refresh/save.ts",
    from: "  return await escrowWithRetries(run, account, pair, saved.saveError);",
    to: '  void escrowWithRetries;\n  return { kind: "token_lost" };',
  },
  {
    name: "the save does not check whether a lost-answer attempt committed",
    invariants: [3],
    file: "shared/refresh/save.ts",
    from: "      if (!saved && saveError !== undefined) {",
    to: "      if (!saved && saveError === undefined && false) {",
  },
  {
    name: "an account whose escrow cannot be read is refreshed anyway",
    invariants: [3],
    file: "shared/refresh/account.ts",
    from:
      '  if (!escrows) return skipped("escrow_unavailable");\n  const escrow = escrows.get(account.id);',
    to: "  const escrow = escrows?.get(account.id);",
  },

  // ---- Invariant 4: exactly one refresher ----
  {
    name: "mp_claim_due_accounts without FOR UPDATE SKIP LOCKED",
    invariants: [4],
    file: CONN_STATE,
    from:
      "       order by n.id = any (p_escrowed) desc, n.mp_token_expires_at nulls first, n.id\n" +
      "       limit greatest(p_limit, 0)\n       for update skip locked\n",
    to: "       order by n.id = any (p_escrowed) desc, n.mp_token_expires_at nulls first, n.id\n" +
      "       limit greatest(p_limit, 0)\n",
  },
  {
    name: "mp_claim_due_accounts takes over a live lease",
    invariants: [4],
    file: CONN_STATE,
    from: "and (n.mp_refresh_lease_expires_at is null or n.mp_refresh_lease_expires_at <= now())",
    to:
      "and (n.mp_refresh_lease_expires_at is null or n.mp_refresh_lease_expires_at <= now() + p_lease)",
  },
  {
    name: "mp_save_refreshed without the lease-owner compare-and-swap",
    invariants: [4],
    file: DEAD_FENCE,
    from: "     and nv_accounts.mp_refresh_lease_owner = p_owner\n",
    to: "",
  },
  {
    name: "mp_save_refreshed without the version compare-and-swap",
    invariants: [4, 1],
    file: DEAD_FENCE,
    from: "     and mp_refresh_base_version(nv_accounts.mp_token_version, " +
      "nv_accounts.mp_token_dead_version,\n" +
      "                                 nv_accounts.mp_access_token_encrypted) = p_base_version\n",
    to: "",
  },
  {
    name: "mp_begin_refresh_call does not check the lease is live",
    invariants: [4, 3],
    file: DEAD_FENCE,
    from: "       and mp_refresh_lease_expires_at > now()\n",
    to: "",
  },

  // ---- Invariant 5: no secret in logs ----
  {
    name: "the log scrubber loses its APP_USR- pattern",
    invariants: [5],
    file: "shared/platform/log.ts",
    from: "/APP_USR-[A-Za-z0-9-]+/g,",
    to: "/APP_USR-NEVER-[A-Za-z0-9-]+/g,",
  },
  {
    name: "the log scrubber loses the access_token field name",
    invariants: [5],
    file: "shared/platform/log.ts",
    from: "/^(mp_)?(access_token|refresh_token|",
    to: "/^(mp_)?(refresh_token|",
  },
  {
    name: "the log scrubber loses its TG- (refresh token) pattern",
    invariants: [5],
    file: "shared/platform/log.ts",
    from: "  /TG-[A-Za-z0-9-]+/g,\n",
    to: "",
  },
  {
    name: "secret field names are no longer redacted (values only pattern-scrubbed)",
    invariants: [5],
    file: "shared/platform/log.ts",
    from: 'out[k] = SECRET_FIELD.test(k) ? "[redacted]" : clean(v, depth + 1);',
    to: "out[k] = clean(v, depth + 1);",
  },
  {
    name: "error messages logged unscrubbed",
    invariants: [5],
    file: "shared/platform/log.ts",
    from: "{ name: err.name, message: scrub(err.message) }",
    to: "{ name: err.name, message: err.message }",
  },
  {
    name: "the log line's msg unscrubbed",
    invariants: [5],
    file: "shared/platform/log.ts",
    from: "      msg: scrub(msg),",
    to: "      msg,",
  },

  // ---- Invariant 6: no silent seller change ----
  {
    name: "mp_save_connection's seller check inverted (is not null → is null)",
    invariants: [6],
    file: SITES,
    from:
      "if current_seller is not null and current_seller <> p_user_id and not p_replace_seller then",
    to: "if current_seller is null and current_seller <> p_user_id and not p_replace_seller then",
  },
  {
    name: "mp_save_connection ignores replace_seller's absence",
    invariants: [6],
    file: SITES,
    from:
      "if current_seller is not null and current_seller <> p_user_id and not p_replace_seller then",
    to: "if current_seller is not null and current_seller <> p_user_id and p_replace_seller then",
  },
  {
    name: "mp_save_refreshed without its seller fence",
    invariants: [6],
    file: DEAD_FENCE,
    from: "     and (p_user_id is null or nv_accounts.mp_user_id is null\n" +
      "          or nv_accounts.mp_user_id = p_user_id)\n",
    to: "",
  },
  {
    name: "the refresher's seller guard inverted (fires only for an account without a seller)",
    invariants: [6],
    file: "shared/refresh/account.ts",
    from: "        account.mp_user_id !== null && outcome.tokens.user_id !== undefined &&",
    to: "        account.mp_user_id === null && outcome.tokens.user_id !== undefined &&",
  },
  {
    name: "verifyEscrow accepts another seller's pair",
    invariants: [6, 7],
    file: "shared/refresh/save.ts",
    from: '    if (seller !== storedSeller) return "seller_mismatch";',
    to: '    if (seller !== storedSeller && seller === null) return "seller_mismatch";',
  },

  // ---- Invariant 7: the master takes only verified data ----
  {
    name: "verifyEscrow does not decrypt the escrowed refresh token",
    invariants: [7],
    file: "shared/refresh/save.ts",
    from:
      '    await decryptSecret(keys, account.id, "refresh_token", escrow.refreshTokenEncrypted);\n',
    to: "",
  },
  {
    name: "verifyEscrow takes a decrypt failure for a pass",
    invariants: [7],
    file: "shared/refresh/save.ts",
    from: '    if (err instanceof DecryptError) return "decrypt_failed";',
    to: "    if (err instanceof DecryptError) return undefined;",
  },
  {
    name: "verifyEscrow without the expiry's upper bound",
    invariants: [7],
    file: "shared/refresh/save.ts",
    from: "!(escrow.expiresIn > 0 && escrow.expiresIn <= MAX_ESCROW_EXPIRES_IN_S) ||",
    to: "!(escrow.expiresIn > 0) ||",
  },
  {
    name: "applyEscrow applies the escrow's unverified seller, key, mode and scope",
    invariants: [7, 6],
    file: "shared/refresh/save.ts",
    from:
      "  const pair = { ...escrow, userId: null, publicKey: null, liveMode: null, scope: null };",
    to: "  const pair = { ...escrow };",
  },
  {
    name: "applyEscrow applies a pair rejected for anything but a decrypt failure",
    invariants: [7],
    file: "shared/refresh/save.ts",
    from: "  if (rejected) {",
    to: '  if (rejected === "decrypt_failed") {',
  },

  // ---- Invariant 8: unauthenticated requests cannot grow storage ----
  {
    name: "request id bound off by one (129 characters)",
    invariants: [8],
    file: "shared/platform/http.ts",
    from: "const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;",
    to: "const REQUEST_ID = /^[A-Za-z0-9._-]{1,129}$/;",
  },
  {
    name: "request id pattern without its end anchor (any length after 1 good character)",
    invariants: [8],
    file: "shared/platform/http.ts",
    from: "const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;",
    to: "const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}/;",
  },
  {
    name: "mp_claim_webhook_delivery re-claims a handled delivery (replays acted on)",
    invariants: [8],
    file: PUBLIC_EDGES,
    from: "      where d.status = 'failed'\n",
    to: "      where d.status in ('failed', 'done')\n",
  },
  {
    name: "mp_claim_webhook_delivery re-claims one being handled at once",
    invariants: [8],
    file: PUBLIC_EDGES,
    from: "(d.status = 'processing' and d.claimed_at < now() - interval '2 minutes')",
    to: "(d.status = 'processing' and d.claimed_at < now() + interval '2 minutes')",
  },
  {
    name: "consumeState without consumed_at is null (a state used twice)",
    invariants: [8],
    file: "shared/store/oauth_states.ts",
    from: "where state_hash = ${stateHash} and consumed_at is null and expires_at > now()",
    to: "where state_hash = ${stateHash} and expires_at > now()",
  },
  {
    name: "consumeState accepts an expired state",
    invariants: [8],
    file: "shared/store/oauth_states.ts",
    from: "where state_hash = ${stateHash} and consumed_at is null and expires_at > now()",
    to: "where state_hash = ${stateHash} and consumed_at is null",
  },
  {
    name: "mp_reject_oauth_state records every rejection (one audit event per replay)",
    invariants: [8],
    file: PUBLIC_EDGES,
    from: "     where state_hash = p_state_hash and rejected_at is null\n",
    to: "     where state_hash = p_state_hash\n",
  },

  // ---- Invariant 9: no dead token served knowingly ----
  {
    name: "the fallback answers mp_not_connected for a dead token (no mp_reauth_required)",
    invariants: [9],
    file: "shared/checkout/get_config.ts",
    from: "  if (account?.mp_connected && !account.mp_access_token_encrypted) {",
    to: "  if (account?.mp_connected && !account.mp_access_token_encrypted && !opts.backendUp) {",
  },
  {
    name: "a dead token is not cleared from the cache",
    invariants: [9],
    file: "shared/connection/dead_token.ts",
    from: "      await clearClientCache(ctx, clientId, version + 1);",
    to: "      void clearClientCache;",
  },
  {
    name: "mp_clear_dead_token keeps the version (the cache clear is fenced out)",
    invariants: [9, 1],
    file: DEAD_FENCE,
    from: "         mp_token_version = a.mp_token_version + 1,\n         mp_token_dead_version",
    to: "         mp_token_version = a.mp_token_version,\n         mp_token_dead_version",
  },
  {
    name: "mp_clear_dead_token keeps the dead token in the master",
    invariants: [9],
    file: DEAD_FENCE,
    from:
      "     set mp_access_token_encrypted = null,\n         mp_token_version = a.mp_token_version + 1,",
    to: "     set mp_token_version = a.mp_token_version + 1,",
  },
  {
    name: "a dead token is left in place while a refresh holds the account (busy: nothing done)",
    invariants: [9],
    file: "shared/connection/dead_token.ts",
    from: "  const clientId = leased\n    ? leased.backend_client_id\n",
    to:
      '  if (!leased) return "busy";\n  const clientId = leased\n    ? leased.backend_client_id\n',
  },
  {
    name: "the refresh base forgets a dead-clear (a refresh in flight then loses its pair)",
    invariants: [3],
    file: DEAD_FENCE,
    from:
      "  select case when p_dead_version = p_version - 1 and p_access_token_encrypted is null\n" +
      "              then p_dead_version else p_version end\n",
    to: "  select p_version\n",
  },
  {
    name: "the claim reports the token version, not the refresh base (an escrowed pair from " +
      "before a dead-clear is discarded)",
    invariants: [3],
    file: "shared/store/refresh_leases.ts",
    from: "                then mp_refresh_base_version(a.mp_token_version, " +
      "a.mp_token_dead_version,\n" +
      "                                             a.mp_access_token_encrypted)\n",
    to: "                then a.mp_token_version\n",
  },
  {
    name: "a dead token with a sent-once refresh token is refreshed at once",
    invariants: [9, 3],
    file: "shared/connection/dead_token.ts",
    from: "  if (dead.mp_refresh_sends !== 0 || !leased.mp_refresh_token) {",
    to: "  if (dead.mp_refresh_sends > 1 || !leased.mp_refresh_token) {",
  },
  // ---- Invariant 10: the event outbox ----
  {
    name: "mp_claim_events without the per-account order (a later event overtakes an earlier)",
    invariants: [10],
    file: OUTBOX,
    from: `         and not exists (
           select 1 from public.mp_event_outbox p
            where p.account_id = c.account_id and p.status = 'pending'
              and (p.seq, p.pos) < (c.seq, c.pos))
`,
    to: "",
  },
  {
    name: "the state-change trigger ignores a seller change (no seller_replaced event)",
    invariants: [10],
    file: OUTBOX,
    from:
      "  when (old.mp_state is distinct from new.mp_state or old.mp_user_id is distinct from new.mp_user_id)",
    to: "  when (old.mp_state is distinct from new.mp_state)",
  },
  {
    name: "mp_event_type: reauth_required → connected reported as connected, not recovered",
    invariants: [10],
    file: OUTBOX,
    from: "    when p_new_state = 'connected' and p_old_state in ('at_risk', 'reauth_required')",
    to: "    when p_new_state = 'connected' and p_old_state in ('at_risk')",
  },
  {
    name: "mp_flag_expiring_events forgets once per token version (expiring on every run)",
    invariants: [10],
    file: SITES,
    from: "       and a.mp_expiring_version is distinct from a.mp_token_version\n",
    to: "",
  },
  {
    name: "mp_finish_events without its lease-owner fence (a lost lease still records)",
    invariants: [10],
    file: OUTBOX,
    from: "     where e.id = x.id and e.lease_owner = p_owner and e.status = 'pending'",
    to: "     where e.id = x.id and e.status = 'pending'",
  },
  {
    name: "a redirect taken for an acknowledgement (3xx marks the event delivered)",
    invariants: [10],
    file: "shared/events/deliver.ts",
    from: "status < 300",
    to: "status < 400",
  },
  {
    name: "deliveries signed with the first secret only (a rotated secret fails)",
    invariants: [10],
    file: "shared/events/sign.ts",
    from: 'webhooks.map((w) => w.sign(id, at, body)).join(" ")',
    to: "webhooks[0].sign(id, at, body)",
  },
  // ---- Mutants in every file docs/invariants.md names under "Enforced" (issue 28, item 3) ----
  // Invariant 1: the one writer of the cache (shared/sync/).
  {
    name: "the single sync writes the cache one version ahead of the master",
    invariants: [1],
    file: "shared/sync/sync.ts",
    from: "      version: account.mp_token_version,\n    },\n  };",
    to: "      version: account.mp_token_version + 1,\n    },\n  };",
  },
  {
    name: "clearClientCache clears at the version before the one given (revoke's clear fenced out)",
    invariants: [2, 9],
    file: "shared/sync/sync.ts",
    from: "{ accessToken: null, publicKey: null, version });",
    to: "{ accessToken: null, publicKey: null, version: version - 1 });",
  },
  {
    name: "the batched sync writes the cache one version ahead of the master",
    invariants: [1],
    file: "shared/sync/sync_batch.ts",
    from: "        version: a.mp_token_version,\n      });",
    to: "        version: a.mp_token_version + 1,\n      });",
  },
  {
    name:
      "the batched sync's prediction takes a cache at the same version for behind (reported synced)",
    invariants: [1],
    file: "shared/sync/sync_batch.ts",
    from: ": (s.mp_token_version ?? -1) < w.version",
    to: ": (s.mp_token_version ?? -1) <= w.version",
  },
  // Invariant 6: storeConnection (shared/store/connections.ts) and the OAuth flow (shared/oauth/).
  {
    name: "storeConnection lets every connect replace the seller",
    invariants: [6],
    file: "shared/store/connections.ts",
    from: "${write.scope}::text, ${write.replaceSeller}::boolean, ${write.siteId}::text)",
    to: "${write.scope}::text, true, ${write.siteId}::text)",
  },
  {
    name: "the OAuth callback saves with replace_seller whatever its state said",
    invariants: [6],
    file: "shared/oauth/exchange.ts",
    from: "    requestId,\n    replaceSeller,\n    siteId: app.site,\n  });",
    to: "    requestId,\n    replaceSeller: true,\n    siteId: app.site,\n  });",
  },
  {
    name: "mp-oauth-start records every state as replacing the seller",
    invariants: [6],
    file: "shared/oauth/start.ts",
    from: "createState(sql, stateHash, accountId, verifierEncrypted, replaceSeller, app.site)",
    to: "createState(sql, stateHash, accountId, verifierEncrypted, true, app.site)",
  },
  // Invariant 8: the OAuth flow's unauthenticated inputs.
  {
    name: "every unusable state is audited (a replayed state writes a row per replay)",
    invariants: [8],
    file: "shared/oauth/callback.ts",
    from: "    if (await ctx.admin((sql) => rejectState(sql, stateHash))) {",
    to: "    if ((await ctx.admin((sql) => rejectState(sql, stateHash))) || true) {",
  },
  {
    name: "the seller's ?error= text is audited unbounded (end anchor dropped)",
    invariants: [8],
    file: "shared/oauth/exchange.ts",
    from: "/^[a-z_]{1,64}$/.test(error)",
    to: "/^[a-z_]{1,64}/.test(error)",
  },
  {
    name: "OAuth states and PKCE verifiers of 128 random bits instead of 256",
    invariants: [8],
    file: "shared/oauth/state_token.ts",
    from: "crypto.getRandomValues(new Uint8Array(32))",
    to: "crypto.getRandomValues(new Uint8Array(16))",
  },
  // Invariant 8: MercadoPago's webhook signature (shared/mercadopago/signature.ts).
  {
    name: "a webhook signed in the future is accepted at any distance (age checked one way)",
    invariants: [8],
    file: "shared/mercadopago/signature.ts",
    from: "if (Math.abs(now - at) > MAX_SIGNATURE_AGE_MS)",
    to: "if (now - at > MAX_SIGNATURE_AGE_MS)",
  },
  {
    name: "the webhook HMAC's last byte is not compared (off by one)",
    invariants: [8],
    file: "shared/mercadopago/signature.ts",
    from: "for (let i = 0; i < expected.length; i++) diff |=",
    to: "for (let i = 0; i < expected.length - 1; i++) diff |=",
  },
  {
    name: "a webhook without x-request-id is accepted (signed without it)",
    invariants: [8],
    file: "shared/mercadopago/signature.ts",
    from: "if (request.requestId === null || !MP_REQUEST_ID.test(request.requestId)) {",
    to: "if (request.requestId !== null && !MP_REQUEST_ID.test(request.requestId)) {",
  },
  {
    name: "the retention job runs monthly, not daily",
    invariants: [8],
    file: RETENTION_CRON,
    from: "\n    '17 3 * * *',\n",
    to: "\n    '17 3 1 * *',\n",
  },
  // Invariants 3 and 4: the refresh's time bounds and its SQL calls.
  {
    name: "a MercadoPago call may start with lease enough for the call alone (not its save)",
    invariants: [3, 4],
    file: "shared/refresh/may_start_call.ts",
    from: "if (at.leaseEnd - at.now < leaseNeededMs(config)) return",
    to: "if (at.leaseEnd - at.now < config.mpTimeoutMs) return",
  },
  {
    name: "a MercadoPago call starts after beforeunload",
    invariants: [3],
    file: "shared/refresh/may_start_call.ts",
    from: '  if (at.unload) return "shutting_down";\n',
    to: "",
  },
  {
    name: "the time a call needs to be over forgets the escrow attempts",
    invariants: [3],
    file: "shared/refresh/may_start_call.ts",
    from: "const attempts = SAVE_RETRY_MS.length + 1 + ESCROW_RETRY_MS.length + 1;",
    to: "const attempts = SAVE_RETRY_MS.length + 1;",
  },
  {
    name: "a failure that provably never reached MercadoPago stays counted (unsent inverted)",
    invariants: [3],
    file: "shared/store/refresh_leases.ts",
    from: "${failure.unsent}::boolean)",
    to: "${!failure.unsent}::boolean)",
  },
  {
    name:
      "readIfHolds finds the account whatever refresh token it holds (a lost save taken for saved)",
    invariants: [3],
    file: "shared/store/refresh_leases.ts",
    from:
      "from nv_accounts where id = ${accountId} and mp_refresh_token = ${refreshTokenEncrypted}",
    to: "from nv_accounts where id = ${accountId}",
  },
  {
    name: "mp_release_refresh_leases releases a lease another run holds",
    invariants: [4],
    file: REFRESH_SQL,
    from: "     where id = any (p_ids) and mp_refresh_lease_owner = p_owner\n",
    to: "     where id = any (p_ids)\n",
  },
  // Invariant 5: the audit trail (shared/store/audit.ts).
  {
    name: "a failed audit write logs the events' details, not only their names",
    invariants: [5],
    file: "shared/store/audit.ts",
    from: "{ events: events.map((e) => e.event), error: err }",
    to: "{ events, error: err }",
  },
  // Invariant 9: checkout's report and mp-probe.
  {
    name: "a dead token reported while the Backend DB is down is answered as stored (no 503)",
    invariants: [9],
    file: "shared/checkout/report.ts",
    from: '      if (outcome === "unavailable") {\n' +
      '        throw new DomainError("unavailable", "the Backend DB could not be reached; retry");\n' +
      "      }\n",
    to: "",
  },
  {
    name: "a dead token reported during a refresh of the account is answered as stored (no 503)",
    invariants: [9],
    file: "shared/checkout/report.ts",
    from: '      if (outcome === "busy") {\n' +
      '        throw new DomainError("unavailable", "a refresh of this account is in progress; retry");\n' +
      "      }\n",
    to: "",
  },
  {
    name: "mp-probe takes a 401 for no verdict (a dead token is never handled)",
    invariants: [9],
    file: "shared/probe/probe.ts",
    from:
      'return result.verdict === "alive" || result.verdict === "dead" ? result.verdict : "error";',
    to: 'return result.verdict === "alive" ? "alive" : "error";',
  },
  {
    name: "mp-probe takes MercadoPago's silence for alive (recorded verified)",
    invariants: [9],
    file: "shared/probe/probe.ts",
    from:
      'return result.verdict === "alive" || result.verdict === "dead" ? result.verdict : "error";',
    to: 'return result.verdict === "dead" ? "dead" : "alive";',
  },
  // Invariant 10: lanes, the pull cursor and mp_read_events.
  {
    name: "a delivery lane continues itself however many others deliver",
    invariants: [10],
    file: "shared/events/lanes.ts",
    from: "if (p.chain > 0) return p.active < lanes ? 1 : 0;",
    to: "if (p.chain > 0) return 1;",
  },
  {
    name: "a root run opens a lane only per full limit of backlog (floor, not ceiling)",
    invariants: [10],
    file: "shared/events/lanes.ts",
    from: "Math.ceil(p.due / Math.max(1, p.limit))",
    to: "Math.floor(p.due / Math.max(1, p.limit))",
  },
  {
    name: "the pull cursor encodes the row position before the transaction id",
    invariants: [10],
    file: "shared/events/cursor.ts",
    from: "btoa(`${PREFIX}${p.xid}.${p.pos}`)",
    to: "btoa(`${PREFIX}${p.pos}.${p.xid}`)",
  },
  {
    name: "mp_read_events reads events of transactions still in flight (no xmin fence)",
    invariants: [10],
    file: OUTBOX,
    from: "   where e.xid < pg_snapshot_xmin(pg_current_snapshot())\n     and (p_xid is null",
    to: "   where (p_xid is null",
  },
  {
    name: "mp_read_events repeats the event its cursor names (>= instead of >)",
    invariants: [10],
    file: OUTBOX,
    from: "(e.xid, e.pos) > (p_xid, coalesce(p_pos, 0))",
    to: "(e.xid, e.pos) >= (p_xid, coalesce(p_pos, 0))",
  },
  // ---- Routing (issue 30): each account through its own site's application ----
  {
    name: "routing: the refresher calls the default site's application for every account",
    invariants: [3],
    file: "shared/refresh/account.ts",
    from: "const app = appOfSite(run.ctx.config, account.mp_site_id);",
    to: "const app = appOfSite(run.ctx.config, null);",
  },
  {
    name: "routing: mp-probe checks every token through the default site's application",
    invariants: [9],
    file: "shared/probe/probe.ts",
    from: "const app = claim.site_read ? appOfSite(config, claim.mp_site_id) : undefined;",
    to: "const app = claim.site_read ? appOfSite(config, null) : undefined;",
  },
  {
    name: "routing: checkout's report checks the token through the default site's application",
    invariants: [9],
    file: "shared/checkout/report.ts",
    from: "const app = appOfSite(ctx.config, account.mp_site_id);",
    to: "const app = appOfSite(ctx.config, null);",
    equivalent:
      "GET /users/me carries only the access token, and every application has the same apiUrl and timeoutMs: no MercadoPago (nor the sandbox) can tell which application asked",
  },
  {
    name: "routing: mp-webhook verifies with the default application's secrets whatever ?app names",
    invariants: [8],
    file: "shared/connection/webhook.ts",
    from: "verifySignatureWithAny(app.webhookSecrets, {",
    to:
      "verifySignatureWithAny((ctx.config.mpApps.get(ctx.config.mpDefaultSite!) ?? app).webhookSecrets, {",
  },
  {
    name: "routing: only an application's first webhook secret is tried (rotation broken)",
    invariants: [8],
    file: "shared/mercadopago/signature.ts",
    from: "await Promise.all(secrets.map((s) => verifySignature(s, request, now)));",
    to: "await Promise.all(secrets.slice(0, 1).map((s) => verifySignature(s, request, now)));",
  },
  {
    name: "routing: one refresh circuit breaker for all applications (one site's outage stops all)",
    invariants: [3],
    file: "shared/refresh/account.ts",
    from: "const breaker = breakerOf(run, app.site);",
    to: 'const breaker = breakerOf(run, "");',
  },
  {
    name:
      "persisted breaker: the half-open trial claimed without its compare-and-set (every run trials, even while open)",
    invariants: [3],
    file: APP_BREAKERS,
    from: "     where site_id = p_site and open_until <= now()\n",
    to: "     where site_id = p_site\n",
  },
  {
    name: "persisted breaker: the backoff grows by 10 minutes an open instead of doubling",
    invariants: [3],
    file: "shared/refresh/app_breaker.ts",
    from: "FIRST_BACKOFF_MS * 2 ** (Math.max(n, 1) - 1)",
    to: "FIRST_BACKOFF_MS * Math.max(n, 1)",
  },
  {
    name: "routing: one application's 429 pauses every application's refreshes",
    invariants: [3],
    file: "shared/refresh/rate_limit_pause.ts",
    from: "return pausedUntil.get(site) ?? 0;",
    to: "return Math.max(0, ...pausedUntil.values());",
  },
];
