import * as v from "valibot";
import { defineFunction, HttpError, json, uuid } from "../../../shared/platform/http.ts";
import { readCache } from "../../../shared/store/clients.ts";
import { readAccountByClient } from "../../../shared/store/accounts.ts";
import { UnavailableError } from "../../../shared/platform/db.ts";
import { cacheContents } from "../../../shared/sync/sync.ts";
import { writeCache } from "../../../shared/store/clients.ts";
import { recordEvent } from "../../../shared/store/audit.ts";

/**
 * get-mp-config: checkout's MercadoPago credentials for a client. Fast path: one primary-key
 * read of the Backend cache. Fallback (logged): the Admin master, then a version-fenced
 * repair of the cache so the next call takes the fast path.
 */
export const handler = defineFunction({
  name: "get-mp-config",
  methods: ["GET", "POST"],
  auth: "server",
  needs: ["backendDbUrl", "adminDbUrl", "tokenKeys"],
  input: v.strictObject({ client_id: uuid }),
  async run({ input: { client_id }, ctx, log, requestId }) {
    let cached: Awaited<ReturnType<typeof readCache>> | null = null;
    let backendUp = true;
    try {
      cached = await ctx.backend((sql) => readCache(sql, client_id));
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      backendUp = false;
      log.warn("Backend DB unavailable; trying the Admin DB", { client_id });
    }
    if (cached?.mp_access_token) {
      return json(200, {
        client_id,
        access_token: cached.mp_access_token,
        public_key: cached.mp_public_key,
        source: "fast_path",
        token_version: cached.mp_token_version,
      });
    }

    const account = await ctx.admin((sql) => readAccountByClient(sql, client_id));
    if (!account && backendUp && !cached) {
      throw new HttpError(404, "client_not_found", "no such client");
    }
    if (!account?.mp_connected || !account.mp_access_token_encrypted) {
      throw new HttpError(404, "mp_not_connected", "the client has no MercadoPago connection");
    }
    const { write } = await cacheContents(ctx, account);
    let answer = { ...write };
    if (backendUp) {
      try {
        const repaired = await ctx.backend((sql) => writeCache(sql, client_id, write));
        // A newer version landed meanwhile (a refresh or a revoke): answer with that instead.
        if (
          repaired.result === "already_current" && (repaired.mp_token_version ?? -1) > write.version
        ) {
          answer = {
            accessToken: repaired.mp_access_token,
            publicKey: repaired.mp_public_key,
            version: repaired.mp_token_version!,
          };
        }
      } catch (err) {
        log.warn("Cache repair failed", { client_id, error: err });
      }
    }
    if (!answer.accessToken) {
      throw new HttpError(404, "mp_not_connected", "the client has no MercadoPago connection");
    }
    log.warn("Fast-path miss: MP credentials served from the Admin DB", {
      client_id,
      account_id: account.id,
      reason: backendUp ? "cache_empty" : "backend_unavailable",
    });
    await recordEvent(ctx, log, {
      event: "fast_path_miss",
      accountId: account.id,
      clientId: client_id,
      detail: { reason: backendUp ? "cache_empty" : "backend_unavailable" },
      requestId,
    });
    return json(200, {
      client_id,
      access_token: answer.accessToken,
      public_key: answer.publicKey,
      source: "fallback",
      token_version: answer.version,
    });
  },
});
