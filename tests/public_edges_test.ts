// deno-lint-ignore-file no-explicit-any
/**
 * The public edges under attack, each attack as it was found, with what must happen now:
 * webhook replays and signature variations, the genuine deauthorization flow, anonymous
 * writes that could grow storage, forged escrow rows, a second outstanding connect link,
 * rotate-keys with a reused key id, and cacheable answers.
 */
import assert from "node:assert/strict";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  keyRing,
  newAccount,
  newClient,
  newSeller,
  provisionedPair,
  sandbox,
  stack,
  stackLog,
} from "./_stack.ts";
import { signatureManifest, signManifest } from "../shared/mercadopago/signature.ts";
import { encryptSecret } from "../shared/platform/crypto.ts";
import type { Sql } from "../shared/platform/db.ts";

/** Headers MercadoPago would send for a notification with `dataId` and `requestId`. */
async function signed(dataId: string, requestId = crypto.randomUUID(), ts = nowTs()) {
  const v1 = await signManifest(
    stack.webhookSecret,
    signatureManifest({ dataId, requestId, ts }),
  );
  return { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId, ts, v1, requestId };
}

const nowTs = () => String(Math.floor(Date.now() / 1000));

function deauthorization(userId: number, dataId: string) {
  return {
    action: "application.deauthorized",
    type: "mp-connect",
    data: { id: dataId },
    user_id: userId,
  };
}

async function deliver(body: unknown, headers: Record<string, string>, query: string) {
  return await call("mp-webhook", body, { key: null, headers, query });
}

async function isConnected(accountId: string): Promise<boolean> {
  const [row] = await adminDb()`select mp_connected from nv_accounts where id = ${accountId}`;
  return row.mp_connected;
}

Deno.test("attack: replayed headers of one signed notification cannot deauthorize anybody", async () => {
  const victim = await provisionedPair();
  // A genuine, signed notification of another kind, captured by the attacker.
  const h = await signed("5551234");
  const genuine = await deliver(
    { action: "payment.created", type: "payment", data: { id: "5551234" } },
    { "x-signature": h["x-signature"], "x-request-id": h.requestId },
    "?data.id=5551234&type=payment",
  );
  assert.equal(genuine.status, 200);
  // Same headers, the body swapped for a deauthorization of the victim: a repeat delivery.
  const replay = await deliver(
    deauthorization(victim.seller, "5551234"),
    { "x-signature": h["x-signature"], "x-request-id": h.requestId },
    "?data.id=5551234&type=mp-connect",
  );
  assert.equal(replay.status, 200);
  assert.equal(replay.body.duplicate, true);
  assert.equal(await isConnected(victim.accountId), true);

  // A fresh, validly signed deauthorization naming a seller who did NOT remove the app:
  // MercadoPago still accepts the stored token, so nothing is revoked.
  const fresh = await signed("777");
  const claim = await deliver(
    deauthorization(victim.seller, "777"),
    { "x-signature": fresh["x-signature"], "x-request-id": fresh.requestId },
    "?data.id=777&type=mp-connect",
  );
  assert.equal(claim.status, 200, JSON.stringify(claim.body));
  assert.equal(claim.body.revoked, 0);
  assert.equal(claim.body.unconfirmed, 1);
  assert.equal(await isConnected(victim.accountId), true);
  const [unconfirmed] = await adminDb()`select count(*)::int as n from mp_credential_events
    where event = 'deauthorization_unconfirmed' and account_id = ${victim.accountId}`;
  assert.equal(unconfirmed.n, 1);
  assert.equal((await call("get-mp-config", { client_id: victim.clientId })).status, 200);
  await closeDbs();
});

Deno.test("attack: variations of a signed delivery are refused (401), nothing stored", async () => {
  const victim = await provisionedPair();
  const body = deauthorization(victim.seller, "123");
  const h = await signed("123");
  const [{ n: before }] = await adminDb()`select count(*)::int as n from mp_webhook_deliveries`;
  const variations: [string, Record<string, string>, string][] = [
    ["x-request-id dropped", { "x-signature": h["x-signature"] }, "?data.id=123"],
    [
      "x-request-id moved into data.id (same signed text)",
      { "x-signature": h["x-signature"] },
      `?data.id=${encodeURIComponent(`123;request-id:${h.requestId}`)}`,
    ],
    ["v1 twice", { ...h, "x-signature": `${h["x-signature"]},v1=00` }, "?data.id=123"],
    ["upper-case TS", { ...h, "x-signature": `TS=${h.ts},v1=${h.v1}` }, "?data.id=123"],
    ["a space", { ...h, "x-signature": `ts=${h.ts} ,v1=${h.v1}` }, "?data.id=123"],
    ["an extra part", { ...h, "x-signature": `${h["x-signature"]},x=1` }, "?data.id=123"],
    ["3 KB header", { ...h, "x-signature": `${h["x-signature"]},${"v1=0".repeat(750)}` }, ""],
    ["request id with spaces", { ...h, "x-request-id": "a b" }, "?data.id=123"],
  ];
  for (const [what, headers, query] of variations) {
    const { ts: _t, v1: _v, requestId: _r, ...sent } = headers as any;
    const res = await deliver(body, sent, query);
    assert.equal(res.status, 401, `${what}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.error.code, "unauthorized", what);
  }
  const [{ n: after }] = await adminDb()`select count(*)::int as n from mp_webhook_deliveries`;
  assert.equal(after, before, "no delivery recorded for a refused request");
  assert.equal(await isConnected(victim.accountId), true);
  await closeDbs();
});

Deno.test("deauthorization end to end: seller removes the app in the sandbox → notification → confirmed → revoked", async () => {
  const one = await provisionedPair();
  const two = await provisionedPair(one.seller);
  const other = await provisionedPair();
  const res = await sandbox.post("deauthorize", {
    user_id: one.seller,
    notify_url: `${stack.functionsUrl}/mp-webhook`,
  });
  assert.equal(res.ok, true);
  assert.equal(res.notified, 200, "the signed notification was accepted");
  for (const p of [one, two]) {
    assert.equal(await isConnected(p.accountId), false);
    const config = await call("get-mp-config", { client_id: p.clientId });
    assert.equal(config.status, 404);
    assert.equal(config.body.error.code, "mp_not_connected");
  }
  assert.equal(await isConnected(other.accountId), true);
  await closeDbs();
});

Deno.test("deauthorization while MercadoPago is unreachable: 503, and the redelivery revokes", async () => {
  const pair = await provisionedPair();
  await sandbox.post("deauthorize", { user_id: pair.seller });
  const h = await signed("9090");
  const headers = { "x-signature": h["x-signature"], "x-request-id": h.requestId };
  await sandbox.faults("error_500", 1);
  const first = await deliver(deauthorization(pair.seller, "9090"), headers, "?data.id=9090");
  assert.equal(first.status, 503, JSON.stringify(first.body));
  assert.equal(first.body.error.code, "unavailable");
  assert.equal(await isConnected(pair.accountId), true, "nothing revoked unconfirmed");
  const again = await deliver(deauthorization(pair.seller, "9090"), headers, "?data.id=9090");
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.body.revoked, 1);
  assert.equal(await isConnected(pair.accountId), false);
  const third = await deliver(deauthorization(pair.seller, "9090"), headers, "?data.id=9090");
  assert.equal(third.body.duplicate, true);
  await closeDbs();
});

Deno.test("attack: replays of a used OAuth state write one audit row at most, request ids bounded", async () => {
  const accountId = await newAccount();
  const started = await call("mp-oauth-start", { account_id: accountId });
  // The seller declines: the state is used up with no connection, so a replay is refused.
  const declineUrl = new URL(started.body.url);
  declineUrl.searchParams.set("deny", "1");
  const authorized = await fetch(declineUrl, { redirect: "manual" });
  await authorized.body?.cancel();
  const back = authorized.headers.get("location")!;
  const first = await fetch(back, { redirect: "manual" });
  await first.body?.cancel();
  const huge = "x".repeat(4000);
  for (let i = 0; i < 40; i++) {
    const replay = await fetch(back, {
      redirect: "manual",
      headers: { "x-request-id": i % 2 ? huge : `replay-${i}` },
    });
    await replay.body?.cancel();
    assert.equal(
      new URL(replay.headers.get("location")!).searchParams.get("reason"),
      "invalid_state",
    );
    assert.ok((replay.headers.get("x-request-id") ?? "").length <= 128);
  }
  const rows = await adminDb()`select request_id from mp_credential_events
    where account_id = ${accountId} and event = 'oauth_state_rejected'`;
  assert.equal(rows.length, 1, "one row however often the state comes back");
  const [longest] = await adminDb()`select coalesce(max(length(request_id)), 0)::int as n
    from mp_credential_events`;
  assert.ok(longest.n <= 128);
  await closeDbs();
});

Deno.test("attack: a request id cannot forge log lines or be echoed unvalidated", async () => {
  const forged = "x Fast-path miss client_id=victim";
  const res = await call("get-mp-config", { client_id: crypto.randomUUID() }, {
    headers: { "x-request-id": forged },
  });
  assert.equal(res.status, 404);
  assert.notEqual(res.headers.get("x-request-id"), forged);
  assert.match(res.headers.get("x-request-id")!, /^[0-9a-f-]{36}$/);
  const ok = await call("get-mp-config", { client_id: crypto.randomUUID() }, {
    headers: { "x-request-id": "trace.abc-123_X" },
  });
  assert.equal(ok.headers.get("x-request-id"), "trace.abc-123_X");
  assert.ok(!(await stackLog()).includes(forged));
});

Deno.test("attack: a forged escrow row is discarded; the master keeps the seller's real tokens", async () => {
  const pair = await provisionedPair();
  const [before] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
  const ring = await keyRing();
  const rows = [
    { // undecryptable tokens and another seller, as found
      access_token_encrypted: "v1:local1:AAAA",
      refresh_token_encrypted: "v1:local1:AAAA",
      user_id: 31337,
    },
    { // real ciphertexts of ANOTHER account: fail this account's AAD
      access_token_encrypted: await encryptSecret(ring, crypto.randomUUID(), "access_token", "x"),
      refresh_token_encrypted: await encryptSecret(ring, crypto.randomUUID(), "refresh_token", "x"),
      user_id: pair.seller,
    },
  ];
  for (const forged of rows) {
    await backendDb()`insert into mp_refresh_escrow ${
      backendDb()({
        account_id: pair.accountId,
        base_version: before.mp_token_version,
        ...forged,
        expires_in: 15552000,
        token_expires_at: new Date(Date.now() + 15552000_000),
        public_key: "APP_USR-attacker",
        live_mode: true,
        scope: "read",
      })
    }`;
    const res = await call("mp-refresh", { account_id: pair.accountId });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.results, [
      { account_id: pair.accountId, status: "failed", error: "escrow_rejected" },
    ]);
    const [after] = await adminDb()`select * from nv_accounts where id = ${pair.accountId}`;
    for (
      const col of [
        "mp_user_id",
        "mp_public_key",
        "mp_access_token_encrypted",
        "mp_refresh_token",
        "mp_token_version",
      ]
    ) {
      assert.deepEqual(after[col], before[col], col);
    }
    const left = await backendDb()`select 1 from mp_refresh_escrow
      where account_id = ${pair.accountId}`;
    assert.equal(left.length, 0, "the forged row is gone");
  }
  const [{ n }] = await adminDb()`select count(*)::int as n from mp_credential_events
    where account_id = ${pair.accountId} and event = 'escrow_rejected'`;
  assert.equal(n, 2);
  // The real refresh token still works: a forced refresh succeeds.
  const forced = await call("mp-refresh", { account_id: pair.accountId, force: true });
  assert.equal(forced.body.refreshed, 1, JSON.stringify(forced.body));
  await closeDbs();
});

Deno.test("attack: a second outstanding connect link cannot swap the seller (seller_mismatch)", async () => {
  const seller = newSeller();
  const accountId = await newAccount({ clientId: await newClient() });
  const linkA = (await call("mp-oauth-start", { account_id: accountId })).body.url;
  const linkB = (await call("mp-oauth-start", { account_id: accountId })).body.url;
  const follow = async (link: string, userId: number) => {
    const url = new URL(link);
    url.searchParams.set("user_id", String(userId));
    const a = await fetch(url, { redirect: "manual" });
    await a.body?.cancel();
    const cb = await fetch(a.headers.get("location")!, { redirect: "manual" });
    await cb.body?.cancel();
    return new URL(cb.headers.get("location")!).searchParams;
  };
  assert.equal((await follow(linkA, seller)).get("mp"), "connected");
  const [connected] = await adminDb()`select * from nv_accounts where id = ${accountId}`;
  const other = newSeller();
  const swapped = await follow(linkB, other);
  assert.equal(swapped.get("mp"), "error");
  assert.equal(swapped.get("reason"), "seller_mismatch");
  const [after] = await adminDb()`select * from nv_accounts where id = ${accountId}`;
  assert.equal(Number(after.mp_user_id), seller);
  assert.equal(after.mp_token_version, connected.mp_token_version);
  assert.equal(after.mp_access_token_encrypted, connected.mp_access_token_encrypted);

  // Replacing the seller on purpose works, through replace_seller.
  const replace = await call("mp-oauth-start", { account_id: accountId, replace_seller: true });
  assert.equal(replace.status, 200);
  assert.equal((await follow(replace.body.url, other)).get("mp"), "connected");
  const [replaced] = await adminDb()`select mp_user_id from nv_accounts where id = ${accountId}`;
  assert.equal(Number(replaced.mp_user_id), other);
  const bad = await call("mp-oauth-start", { account_id: accountId, replace_seller: "yes" });
  assert.equal(bad.status, 400);
  await closeDbs();
});

Deno.test("attack: anon and authenticated hold no TRUNCATE, TRIGGER or REFERENCES on MP tables", async () => {
  const check = async (sql: Sql, tables: string[]) => {
    for (const role of ["anon", "authenticated"]) {
      for (const table of tables) {
        for (const priv of ["TRUNCATE", "TRIGGER", "REFERENCES"]) {
          const [{ has }] =
            await sql`select has_table_privilege(${role}, ${table}, ${priv}) as has`;
          assert.equal(has, false, `${role} ${priv} on ${table}`);
        }
      }
    }
  };
  await check(backendDb(), ["public.clients", "public.mp_refresh_escrow"]);
  await check(adminDb(), [
    "public.nv_accounts",
    "public.mp_oauth_states",
    "public.mp_credential_events",
    "public.mp_webhook_deliveries",
  ]);
  // As anon, for real: TRUNCATE of clients is refused.
  await assert.rejects(
    backendDb().begin(async (tx) => {
      await tx`set local role anon`;
      await tx`truncate clients`;
    }),
    /permission denied/,
  );
  await closeDbs();
});

Deno.test("attack: token answers are not cacheable (GET included)", async () => {
  const pair = await provisionedPair();
  const res = await call("get-mp-config", undefined, {
    method: "GET",
    query: `?client_id=${pair.clientId}`,
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const denied = await call("get-mp-config", { client_id: pair.clientId }, { key: null });
  assert.equal(denied.headers.get("cache-control"), "no-store");
  await closeDbs();
});

Deno.test("attack: rotate-keys refuses a current key id reused for other key material", async () => {
  const pair = await provisionedPair();
  assert.ok(pair.accountId);
  const [id] = stack.env("MP_TOKEN_KEYS").split(":");
  const other = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "rotate-keys"],
    env: { MP_TOKEN_KEYS: `${id}:${other}`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, text);
  assert.match(text, /do not decrypt with key/);
  assert.ok(!text.includes("the old keys can be removed"));
  await closeDbs();
});

Deno.test("retention: mp_prune_retention deletes expired states, old deliveries and old events only", async () => {
  const accountId = await newAccount();
  const db = adminDb();
  await db`insert into mp_oauth_states (state_hash, account_id, expires_at) values
    (${"old-" + crypto.randomUUID()}, ${accountId}, now() - interval '2 days'),
    (${"new-" + crypto.randomUUID()}, ${accountId}, now() + interval '5 minutes')`;
  await db`insert into mp_credential_events (event, account_id, occurred_at) values
    ('retention_probe', ${accountId}, now() - interval '401 days'),
    ('retention_probe', ${accountId}, now() - interval '399 days')`;
  const oldDelivery = `retention-old-${crypto.randomUUID()}`;
  const newDelivery = `retention-new-${crypto.randomUUID()}`;
  await db`insert into mp_webhook_deliveries (request_id, action, received_at) values
    (${oldDelivery}, 'payment.created', now() - interval '31 days'),
    (${newDelivery}, 'payment.created', now() - interval '29 days')`;
  const [pruned] = await db`select * from mp_prune_retention()`;
  assert.ok(Number(pruned.oauth_states) >= 1);
  assert.ok(Number(pruned.credential_events) >= 1);
  assert.ok(Number(pruned.webhook_deliveries) >= 1);
  const deliveries = await db`select request_id from mp_webhook_deliveries
    where request_id in (${oldDelivery}, ${newDelivery})`;
  assert.deepEqual(deliveries.map((d) => d.request_id), [newDelivery], "30 days kept");
  const states = await db`select state_hash from mp_oauth_states where account_id = ${accountId}`;
  assert.equal(states.length, 1);
  assert.ok(states[0].state_hash.startsWith("new-"));
  const events = await db`select 1 from mp_credential_events
    where account_id = ${accountId} and event = 'retention_probe'`;
  assert.equal(events.length, 1, "an event 399 days old is kept");
  // Asking for less than 400 days still keeps 400.
  await db`select * from mp_prune_retention(p_audit_days => 1)`;
  assert.equal(
    (await db`select 1 from mp_credential_events where account_id = ${accountId}
      and event = 'retention_probe'`).length,
    1,
  );
  const [job] = await db`select schedule, command from cron.job where jobname = 'mp-retention'`;
  assert.ok(job, "the Admin project schedules its retention job");
  assert.match(job.command, /mp_prune_retention/);
  const [backendJob] = await backendDb()`select command from cron.job
    where jobname = 'mp-retention'`;
  assert.ok(backendJob, "the Backend project schedules its retention job");
  await closeDbs();
});

Deno.test("the anon key (a valid project JWT, but not a server key) is refused as a server key", async () => {
  const anon = stack.env("SUPABASE_ANON_KEY");
  assert.ok(anon.length >= 16);
  const ways: Record<string, string>[] = [{ apikey: anon }, { authorization: `Bearer ${anon}` }];
  for (const headers of ways) {
    const res = await call("get-mp-config", { client_id: crypto.randomUUID() }, {
      key: null,
      headers,
    });
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, "unauthorized");
  }
});
