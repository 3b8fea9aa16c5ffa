/**
 * Asking MercadoPago whether a stored access token still works (`GET /users/me` with it): the
 * one check behind checkout's reports, mp-probe and the deauthorization webhook. Only a 401
 * says dead; MercadoPago failing to answer says nothing.
 */
import type { MpApp } from "../platform/config.ts";
import type { Context } from "../platform/context.ts";
import { DecryptError, decryptSecret, logDecryptFailure } from "../platform/crypto.ts";
import type { Logger } from "../platform/log.ts";
import { checkAccessToken, MpError } from "../mercadopago/api.ts";

/**
 * MercadoPago's verdict on a stored token: `alive` (200), `dead` (401), `unknown` (it could not
 * be asked: the error says why), `undecryptable` (logged; nothing was asked).
 */
type TokenVerdict =
  | { verdict: "alive" | "dead" }
  | { verdict: "unknown"; error: MpError }
  | { verdict: "undecryptable" };

/**
 * Decrypts account `accountId`'s stored access token and asks MercadoPago about it, through
 * `app`: the application that issued it (the account's site's).
 */
export async function verifyStoredToken(
  ctx: Context,
  log: Logger,
  app: MpApp,
  accountId: string,
  encrypted: string | null,
): Promise<TokenVerdict> {
  let token: string;
  try {
    if (!encrypted) throw new DecryptError(accountId, "access_token", "missing");
    token = await decryptSecret(await ctx.keys(), accountId, "access_token", encrypted);
  } catch (err) {
    if (!(err instanceof DecryptError)) throw err;
    logDecryptFailure(log, accountId, "access_token");
    return { verdict: "undecryptable" };
  }
  try {
    const check = await checkAccessToken(app, token);
    return { verdict: check.status === "valid" ? "alive" : "dead" };
  } catch (err) {
    if (!(err instanceof MpError)) throw err;
    return { verdict: "unknown", error: err };
  }
}
