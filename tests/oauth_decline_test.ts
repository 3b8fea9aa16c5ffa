/**
 * Invariant 8 at the OAuth callback's decline (shared/oauth/exchange.ts): the seller's
 * `?error=` is text anyone can put in the callback's URL; with a live state it is audited, but
 * only as MercadoPago's short error code (`[a-z_]{1,64}`) — anything else, however long, is
 * stored as "other", so no request-controlled text longer than 128 characters is kept.
 */
import assert from "node:assert/strict";
import { adminDb, call, closeDbs, newAccount, sandbox, stack } from "./_stack.ts";

/** A live state for a new connected account, from mp-oauth-start's authorization URL. */
async function liveState(): Promise<{ accountId: string; state: string }> {
  const { grants: [grant] } = await sandbox.post("grants", { count: 1 });
  const accountId = await newAccount({ grant });
  const res = await call("mp-oauth-start", { account_id: accountId });
  assert.equal(res.status, 200, res.body?.error?.code);
  return { accountId, state: new URL(res.body.url).searchParams.get("state")! };
}

async function decline(state: string, error: string): Promise<URL> {
  const url = new URL(`${stack.functionsUrl}/mp-oauth-callback`);
  url.searchParams.set("state", state);
  url.searchParams.set("error", error);
  const res = await fetch(url, { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.status, 302);
  return new URL(res.headers.get("location")!);
}

Deno.test("invariant 8: a declined callback audits MercadoPago's error code, a long or odd ?error= only as 'other'", async () => {
  try {
    const cases: [string, string][] = [
      ["access_denied", "access_denied"],
      ["server_error", "server_error"],
      ["a".repeat(64), "a".repeat(64)],
      ["a".repeat(65), "other"],
      ["access_denied" + "x".repeat(3000), "other"],
      ["Access Denied", "other"],
    ];
    for (const [error, stored] of cases) {
      const { accountId, state } = await liveState();
      const back = await decline(state, error);
      assert.equal(back.searchParams.get("mp"), "error");
      const [event] = await adminDb()`select detail, length(detail::text) as n
        from mp_credential_events where account_id = ${accountId} and event = 'declined'`;
      assert.ok(event, `declined audited for ${error.slice(0, 20)}…`);
      assert.equal(event.detail.mp_error, stored, error.slice(0, 20));
      assert.ok(event.n <= 128, `${event.n} characters stored`);
    }
  } finally {
    await closeDbs();
  }
});
