/**
 * The checkout client (`client/mp_config.ts`, README "Checkout: reading credentials") under
 * Deno against the test stack, through both of its doors — `{ functionsUrl, secretKey }`
 * (plain `fetch`) and `{ supabase }` (a supabase-js client): credentials, the contract's
 * errors as `MpConfigError`, nothing answering, answers that are not get-mp-config's, and
 * `withMpConfig`'s report-and-retry around a token MercadoPago killed. Its `MpConfig` is the
 * server's answer type, held equal here at compile time.
 */
import assert from "node:assert/strict";
import {
  createMpConfigClient,
  isMercadoPagoRejection,
  type MpConfig,
  type MpConfigClient,
  MpConfigError,
} from "../client/mp_config.ts";
import type { MpConfig as ServerMpConfig } from "../shared/checkout/get_config.ts";
import {
  call,
  newAccount,
  newClient,
  pauseJobsDuringFile,
  provisionedPair,
  sandbox,
  stack,
  supabase,
  testPort,
} from "./_stack.ts";
import { createClient } from "@supabase/supabase-js";

pauseJobsDuringFile();

/** Whether two types are the same (neither wider, no `any`). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;

/** Compile time: the client's `MpConfig` is the server's answer type, both ways. */
const sameType: Equal<MpConfig, ServerMpConfig> = true;
const serverFitsClient = (a: ServerMpConfig): MpConfig => a;
const clientFitsServer = (a: MpConfig): ServerMpConfig => a;

/** Every key of `MpConfig`, once (a key added to the type must be added here). */
const MP_CONFIG_KEYS: Record<keyof MpConfig, true> = {
  client_id: true,
  access_token: true,
  public_key: true,
  source: true,
  token_version: true,
  site_id: true,
};

/** A port nothing listens on (nothing in the tests opens this offset). */
const CLOSED_PORT = () => testPort(60);
/** The port of this file's impostor server (answers that are not get-mp-config's). */
const IMPOSTOR_PORT = () => testPort(61);

/** The two doors, each with the stack's server key, or with `key`, or at `origin`. */
const doors: Record<
  "fetch" | "supabase",
  (opts?: { key?: string; origin?: string; timeoutMs?: number }) => MpConfigClient
> = {
  fetch: (opts = {}) =>
    createMpConfigClient({
      functionsUrl: opts.origin ? `${opts.origin}/functions/v1` : stack.functionsUrl,
      secretKey: opts.key ?? stack.secretKey,
      ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
    }),
  supabase: (opts = {}) =>
    createMpConfigClient({
      supabase: opts.origin
        ? createClient(opts.origin, opts.key ?? stack.secretKey, {
          auth: { persistSession: false, autoRefreshToken: false },
        })
        : supabase(opts.key),
      ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
    }),
};

/** Asserts `promise` rejects with an `MpConfigError` of `status` and `code`; returns it. */
async function rejectsWith(
  promise: Promise<unknown>,
  status: number,
  code: string,
): Promise<MpConfigError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof MpConfigError, `an MpConfigError, got ${String(caught)}`);
  assert.equal(caught.name, "MpConfigError");
  assert.deepEqual({ status: caught.status, code: caught.code }, { status, code });
  return caught;
}

/** MercadoPago's `/users/me` with `token`, as a charge would call MercadoPago: its Response. */
function usersMe(token: string): Promise<Response> {
  return fetch(`${stack.env("MP_API_URL")}/users/me`, {
    headers: { authorization: `Bearer ${token}` },
  });
}

Deno.test("client and server agree on MpConfig: the same type at compile time, a real answer has exactly its keys", async () => {
  assert.equal(sameType, true);
  assert.equal(typeof serverFitsClient, "function");
  assert.equal(typeof clientFitsServer, "function");
  const p = await provisionedPair();
  const raw = await call("get-mp-config", { client_id: p.clientId });
  assert.equal(raw.status, 200);
  assert.deepEqual(Object.keys(raw.body).sort(), Object.keys(MP_CONFIG_KEYS).sort());
  for (const door of ["fetch", "supabase"] as const) {
    const config = await doors[door]().getMpConfig(p.clientId);
    assert.deepEqual(Object.keys(config).sort(), Object.keys(MP_CONFIG_KEYS).sort(), door);
  }
});

Deno.test("the client file is self-contained: no import or export-from, no platform-specific global", async () => {
  const text = await Deno.readTextFile(new URL("../client/mp_config.ts", import.meta.url));
  const lines = text.split("\n");
  assert.deepEqual(lines.filter((l) => /^\s*(import|export)[^;]*from\s+['"]/.test(l)), []);
  assert.deepEqual(lines.filter((l) => /\bimport\s*\(|\brequire\s*\(/.test(l)), []);
  const code = lines.filter((l) => !/^\s*(\/\/|\/\*|\*)/.test(l));
  assert.deepEqual(code.filter((l) => /\b(Deno|process|Buffer)\.\w/.test(l)), []);
});

for (const door of ["fetch", "supabase"] as const) {
  Deno.test(`client (${door}): a provisioned client's credentials from the fast path`, async () => {
    const p = await provisionedPair();
    const config = await doors[door]().getMpConfig(p.clientId);
    assert.equal(config.client_id, p.clientId);
    assert.ok(config.access_token === p.grant.access_token, "the seller's token");
    assert.equal(config.public_key, p.grant.public_key);
    assert.equal(config.source, "fast_path");
    assert.equal(config.token_version, 1);
  });

  Deno.test(`client (${door}): 404 mp_not_connected and client_not_found as MpConfigError`, async () => {
    const clientId = await newClient();
    await newAccount({ clientId });
    const err = await rejectsWith(doors[door]().getMpConfig(clientId), 404, "mp_not_connected");
    assert.ok(err instanceof Error);
    await rejectsWith(doors[door]().getMpConfig(crypto.randomUUID()), 404, "client_not_found");
    await rejectsWith(doors[door]().getMpConfig("not-a-uuid"), 400, "invalid_request");
  });

  Deno.test(`client (${door}): a wrong key is 401 unauthorized, and the key is in no message`, async () => {
    const p = await provisionedPair();
    const wrong = `sb_secret_${crypto.randomUUID().replaceAll("-", "")}`;
    const err = await rejectsWith(
      doors[door]({ key: wrong }).getMpConfig(p.clientId),
      401,
      "unauthorized",
    );
    assert.ok(!err.message.includes(wrong) && !String(err.stack).includes(wrong));
  });

  Deno.test(`client (${door}): nothing listening is status 0, unreachable`, async () => {
    const origin = `http://127.0.0.1:${CLOSED_PORT()}`;
    const err = await rejectsWith(
      doors[door]({ origin }).getMpConfig(crypto.randomUUID()),
      0,
      "unreachable",
    );
    assert.match(err.message, /could not be reached/);
    assert.ok(!err.message.includes(stack.secretKey));
  });

  Deno.test(`client (${door}): a charge MercadoPago answers 401 reports the token once and runs again with the answer`, async () => {
    const p = await provisionedPair();
    await sandbox.invalidate(p.seller, "access");
    const before = await sandbox.stats();
    const tried: (number | null)[] = [];
    // The charge returns MercadoPago's Response: a 401 has `status === 401`.
    const res = await doors[door]().withMpConfig(p.clientId, async (config) => {
      tried.push(config.token_version);
      const answer = await usersMe(config.access_token);
      await answer.body?.cancel();
      return answer;
    });
    assert.equal(res.status, 200, "the second run, with the replacement, is accepted");
    assert.equal(tried.length, 2);
    assert.equal(tried[0], 1);
    assert.ok((tried[1] ?? 0) > 1, "run again with a newer token");
    const after = await sandbox.stats();
    // The charge's two calls, and the server's one check of the reported token.
    assert.equal(after.users_me_calls - before.users_me_calls, 3);
    const served = await doors[door]().getMpConfig(p.clientId);
    assert.equal(served.token_version, tried[1]);
  });

  Deno.test(`client (${door}): a second rejection is thrown as it is (no loop); a report of a dead grant is mp_reauth_required`, async () => {
    // MercadoPago still accepts the token: the report answers it again, the charge throws again.
    const p = await provisionedPair();
    let runs = 0;
    const thrown = { status: 401, message: "unauthorized (the charge's own error)" };
    let caught: unknown;
    try {
      await doors[door]().withMpConfig(p.clientId, () => {
        runs++;
        throw thrown;
      });
    } catch (err) {
      caught = err;
    }
    assert.equal(caught, thrown, "the charge's own error, as it is");
    assert.equal(runs, 2);
    // A charge that fails otherwise is not a rejection: no report, one run.
    const before = await sandbox.stats();
    let other = 0;
    await assert.rejects(
      doors[door]().withMpConfig(p.clientId, () => {
        other++;
        throw new Error("card declined");
      }),
      /card declined/,
    );
    assert.equal(other, 1);
    assert.equal((await sandbox.stats()).users_me_calls, before.users_me_calls, "nothing reported");
    // `isRejected` decides what a rejection is.
    let custom = 0;
    const result = await doors[door]().withMpConfig(
      p.clientId,
      () => ({ ok: ++custom > 1 }),
      { isRejected: (r) => (r as { ok: boolean }).ok === false },
    );
    assert.deepEqual(result, { ok: true });
    assert.equal(custom, 2);
    // The grant is dead: the report's answer is 404 mp_reauth_required, thrown.
    const q = await provisionedPair();
    await sandbox.invalidate(q.seller, "grant");
    let charged = 0;
    await rejectsWith(
      doors[door]().withMpConfig(q.clientId, async (config) => {
        charged++;
        const answer = await usersMe(config.access_token);
        await answer.body?.cancel();
        return answer;
      }),
      404,
      "mp_reauth_required",
    );
    assert.equal(charged, 1);
    await rejectsWith(doors[door]().getMpConfig(q.clientId), 404, "mp_reauth_required");
    await rejectsWith(
      doors[door]().reportRejectedToken(q.clientId, 1),
      404,
      "mp_reauth_required",
    );
  });
}

Deno.test("client: answers that are not get-mp-config's are unexpected_answer, with no body in the message; a silent server is a timeout", async () => {
  const fakeToken = `APP_USR-${crypto.randomUUID()}`;
  let answer: () => Response | Promise<Response> = () => new Response("");
  const hung = new Set<() => void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: IMPOSTOR_PORT(), onListen: () => {} },
    async (req) => {
      await req.body?.cancel();
      return await answer();
    },
  );
  const origin = `http://127.0.0.1:${IMPOSTOR_PORT()}`;
  const cases: [string, () => Response, number][] = [
    [
      "a 200 that is not JSON",
      () => new Response(`<html>${fakeToken}</html>`, { headers: { "content-type": "text/html" } }),
      200,
    ],
    ["a 200 JSON array", () => Response.json([fakeToken]), 200],
    [
      "a 200 without access_token",
      () =>
        Response.json({
          client_id: crypto.randomUUID(),
          public_key: fakeToken,
          source: "fast_path",
          token_version: 1,
          site_id: "MLA",
        }),
      200,
    ],
    [
      "a 200 with an unknown source",
      () =>
        Response.json({
          client_id: crypto.randomUUID(),
          access_token: fakeToken,
          public_key: null,
          source: "cache",
          token_version: 1,
          site_id: "MLA",
        }),
      200,
    ],
    [
      "a 502 page from a proxy",
      () => new Response(`bad gateway ${fakeToken}`, { status: 502 }),
      502,
    ],
    ["a 500 JSON without an error code", () => Response.json({ fakeToken }, { status: 500 }), 500],
  ];
  try {
    for (const door of ["fetch", "supabase"] as const) {
      for (const [what, respond, status] of cases) {
        answer = respond;
        const err = await rejectsWith(
          doors[door]({ origin }).getMpConfig(crypto.randomUUID()),
          status,
          "unexpected_answer",
        );
        assert.ok(!err.message.includes(fakeToken), `${door}, ${what}: no body in the message`);
      }
      // A contract error from anything passes its code through.
      answer = () =>
        Response.json({ error: { code: "unavailable", message: "no database" } }, { status: 503 });
      const err = await rejectsWith(
        doors[door]({ origin }).getMpConfig(crypto.randomUUID()),
        503,
        "unavailable",
      );
      assert.match(err.message, /no database/);
    }
    // A server that never answers: each call is bounded by its timeout.
    answer = () => new Promise((r) => hung.add(() => r(new Response(""))));
    for (const door of ["fetch", "supabase"] as const) {
      const err = await rejectsWith(
        doors[door]({ origin, timeoutMs: 300 }).getMpConfig(crypto.randomUUID()),
        0,
        "unreachable",
      );
      assert.match(err.message, /did not answer in 300 ms/, door);
    }
  } finally {
    for (const release of hung) release();
    await server.shutdown();
  }
});

Deno.test("client: isMercadoPagoRejection knows a 401 by status, statusCode or response.status, never get-mp-config's own", () => {
  assert.equal(isMercadoPagoRejection(new Response(null, { status: 401 })), true);
  assert.equal(isMercadoPagoRejection({ status: 401, message: "invalid access token" }), true);
  assert.equal(isMercadoPagoRejection({ statusCode: 401 }), true);
  assert.equal(isMercadoPagoRejection({ response: { status: 401 } }), true);
  assert.equal(isMercadoPagoRejection(new Response(null, { status: 403 })), false);
  assert.equal(isMercadoPagoRejection({ status: "401" }), false);
  assert.equal(isMercadoPagoRejection({ status: "approved" }), false);
  assert.equal(isMercadoPagoRejection(null), false);
  assert.equal(isMercadoPagoRejection(401), false);
  assert.equal(isMercadoPagoRejection(new MpConfigError(401, "unauthorized", "wrong key")), false);
});

Deno.test("client: options that cannot work are refused at creation, without the key in the message", () => {
  const key = stack.secretKey;
  assert.throws(() => createMpConfigClient({ functionsUrl: "", secretKey: key }), TypeError);
  assert.throws(
    () => createMpConfigClient({ functionsUrl: stack.functionsUrl, secretKey: "" }),
    /secretKey is empty/,
  );
  assert.throws(
    () => createMpConfigClient({ functionsUrl: stack.functionsUrl, secretKey: key, timeoutMs: 0 }),
    /timeoutMs/,
  );
  assert.throws(
    () => createMpConfigClient({ supabase: {} as never }),
    /supabase-js client/,
  );
  assert.throws(
    () => createMpConfigClient({ functionsUrl: "ftp://x", secretKey: key }),
    (err: unknown) => err instanceof TypeError && !err.message.includes(key),
  );
});
