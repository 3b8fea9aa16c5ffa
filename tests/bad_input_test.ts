// deno-lint-ignore-file no-explicit-any
/**
 * Bad input (docs/contract.md, errors; docs/invariants.md, invariant 8): a seeded generator of at least 1,000 malformed requests for every
 * function in supabase/config.toml — broken JSON, wrong types, missing and extra fields, huge
 * and deep bodies, non-UUIDs, unicode, SQL-looking strings, wrong methods, keys and content
 * types — sent through the gateway. Each must get its docs/contract.md status and error body (the
 * callback: a 302 with `mp=error`; the webhook: 400/401), never a 5xx, never a token, and
 * both databases must be unchanged afterwards. `BAD_INPUT_SEED` replays another sequence.
 */
import assert from "node:assert/strict";
import { functionEntrypoints } from "../local/gateway.ts";
import { knownSecrets } from "../local/leaks.ts";
import type { Sql } from "../shared/platform/db.ts";
import { signManifest } from "../shared/mercadopago/signature.ts";
import { SCHEDULED_JOBS } from "../shared/schedules/jobs.ts";
import {
  adminDb,
  backendDb,
  call,
  closeDbs,
  newAccount,
  newClient,
  sandbox,
  stack,
} from "./_stack.ts";

/** The test pools close once, after every test of this file. */
Deno.test.afterAll(closeDbs);

const SEED = Number(Deno.env.get("BAD_INPUT_SEED") ?? 20261124);
const PER_FUNCTION = 1100;
const CONCURRENCY = 16;
const MAX_BODY = 64 * 1024;

// ---------------------------------------------------------------- seeded randomness

/** mulberry32: a small seeded PRNG, so a failing case is replayed by the same seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let rand = prng(SEED);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(items: readonly T[]): T => items[int(items.length)];
const chance = (p: number) => rand() < p;
const hex = (n: number) => Array.from({ length: n }, () => "0123456789abcdef"[int(16)]).join("");
const ruuid = () =>
  `${hex(8)}-${hex(4)}-4${hex(3)}-${pick(["8", "9", "a", "b"])}${hex(3)}-${hex(12)}`;

// ---------------------------------------------------------------- malformed values

const UNICODE = [
  "ñandú ☃ 💳",
  "\u202Eevil\u202C",
  "zero\u200Bwidth\u200D",
  "\uD800",
  "\uDFFF\uD800",
  "\u0000",
  "\u0000' or 1=1",
  "Ω≈ç√∫˜µ≤≥÷",
  "𝕮𝖑𝖎𝖊𝖓𝖙",
  "١٢٣٤٥٦٧٨-١٢٣٤-١٢٣٤-١٢٣٤-١٢٣٤٥٦٧٨٩٠١٢",
  "ｃｌｉｅｎｔ",
  "\r\n\t\b\f",
  "\\u0000\\\\",
  "👩‍👩‍👧‍👦".repeat(20),
];
const SQLISH = [
  "' or '1'='1",
  "'; drop table clients; --",
  "1; select pg_sleep(10); --",
  '" or ""="',
  "$$; delete from nv_accounts; $$",
  "00000000-0000-0000-0000-000000000000' union select mp_access_token from clients --",
  "') or true --",
  "%' and 1=0 union select null --",
  "\\x27 or 1=1",
  "current_setting('app.key')",
];
const EXTRA_KEYS = [
  "extra",
  "__proto__",
  "constructor",
  "toString",
  "client_id ",
  "ACCOUNT_ID",
  "mp_access_token",
  "token_version",
  "' or 1=1 --",
  "ñ",
  "",
  "a".repeat(300),
];

function unicodeString(): string {
  return pick(UNICODE) + (chance(0.5) ? ruuid() : "");
}

function sqlString(): string {
  return pick(SQLISH);
}

/** Percent-encodes `s`; a lone surrogate becomes the bytes of one (invalid UTF-8 in a URL). */
function enc(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return `${encodeURIComponent(s.toWellFormed())}%ED%A0%80`;
  }
}

function fullwidth(s: string): string {
  return [...s].map((c) => /[0-9a-f]/.test(c) ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c)
    .join("");
}

/** A string that is not a lowercase-or-uppercase canonical UUID. */
function nonUuid(): string {
  const u = ruuid();
  return pick([
    () => "",
    () => "not-a-uuid",
    () => u.slice(0, -1),
    () => `${u}0`,
    () => u.replaceAll("-", ""),
    () => `{${u}}`,
    () => `urn:uuid:${u}`,
    () => ` ${u}`,
    () => `${u}\n`,
    () => u.replace(/[0-9a-f]/, "g"),
    () => u.replace("-", "_"),
    () => u.replace(/[0-9]/, "٣"),
    () => fullwidth(u),
    () => `${u}'--`,
    () => `${u.slice(0, 35)}\u0000`,
    () => "00000000-0000-0000-0000-00000000000",
    () => "x".repeat(1 + int(400)),
    sqlString,
    unicodeString,
  ])();
}

/** A JSON value of the wrong type for a field of kind `kind` (`nullable`: null counts). */
function wrongValue(kind: FieldKind, nullable: boolean): unknown {
  const common: unknown[] = [[], [ruuid()], {}, { $ne: null }, { id: ruuid() }];
  const byKind: Record<FieldKind, unknown[]> = {
    uuid: [42, -1, 0, 1.5, true, false, 1e21, ...common],
    limit: [0, 501, -1, 1.5, "5", "ten", true, false, 1e21, ...common],
    count: [0, -1, 1.5, 1e21, "5", "ten", true, false, ...common],
    limit1000: [0, 1001, -1, 1.5, "5", "ten", true, false, 1e21, ...common],
    version: [-1, -0.5, 1.5, 1e21, "5", "ten", true, false, ...common],
    bool: ["true", "false", 1, 0, "yes", ...common],
  };
  const values = nullable ? [...byKind[kind], null] : byKind[kind];
  return pick(values);
}

/** A deeply nested JSON text (arrays or objects), within the body limit. */
function deep(): string {
  if (chance(0.5)) {
    const depth = 100 + int(15_000);
    return "[".repeat(depth) + "]".repeat(depth);
  }
  const depth = 100 + int(9_000);
  return '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
}

// ---------------------------------------------------------------- the functions

type FieldKind = "uuid" | "limit" | "count" | "limit1000" | "version" | "bool";

/** What a function accepts, from docs/contract.md; a case is malformed against this. */
interface FnSpec {
  methods: string[];
  kind: "server" | "callback" | "webhook";
  /** Body (or query) fields and whether each is required. */
  fields: Record<string, { kind: FieldKind; required: boolean }>;
  /** Whether a GET request carries the input in the query string. */
  query?: boolean;
  /** Whether the function reads no input: any authenticated GET is valid but extra parameters. */
  noInput?: boolean;
}

const uuidField = { kind: "uuid" as const, required: true };
const SPECS: Record<string, FnSpec> = {
  "get-mp-config": {
    methods: ["GET", "POST"],
    kind: "server",
    fields: { client_id: uuidField, rejected_token_version: { kind: "version", required: false } },
    query: true,
  },
  "provision-step-7-1": {
    methods: ["POST"],
    kind: "server",
    fields: { account_id: uuidField, client_id: uuidField },
  },
  "mp-oauth-start": { methods: ["POST"], kind: "server", fields: { account_id: uuidField } },
  "mp-revoke": { methods: ["POST"], kind: "server", fields: { account_id: uuidField } },
  "mp-refresh": {
    methods: ["POST"],
    kind: "server",
    fields: {
      limit: { kind: "limit", required: false },
      account_id: { kind: "uuid", required: false },
      force: { kind: "bool", required: false },
    },
  },
  "mp-reconcile": {
    methods: ["POST"],
    kind: "server",
    fields: { limit: { kind: "count", required: false } },
  },
  "mp-probe": {
    methods: ["POST"],
    kind: "server",
    fields: {
      limit: { kind: "limit1000", required: false },
      account_id: { kind: "uuid", required: false },
    },
  },
  "mp-health": { methods: ["GET"], kind: "server", fields: {}, noInput: true },
  "mp-deliver-events": {
    methods: ["POST"],
    kind: "server",
    fields: {
      limit: { kind: "limit1000", required: false },
    },
  },
  // Its query (`after`, `limit`) is checked by tests/events_test.ts; here: extra parameters.
  "mp-events": { methods: ["GET"], kind: "server", fields: {}, noInput: true },
  "mp-oauth-callback": { methods: ["GET"], kind: "callback", fields: {} },
  "mp-webhook": { methods: ["POST"], kind: "webhook", fields: {} },
};

/**
 * A scheduled function (shared/schedules/jobs.ts) without an entry of its own above: a server-key
 * POST whose only field, if any, is an optional `limit` (`defineScheduledFunction`'s input).
 */
const SCHEDULED: FnSpec = {
  methods: ["POST"],
  kind: "server",
  fields: { limit: { kind: "count", required: false } },
};

/** What `fn` accepts: its entry, else the scheduled functions' common input when it is one. */
function specOf(fn: string): FnSpec | undefined {
  return SPECS[fn] ?? (SCHEDULED_JOBS.some((job) => job.name === fn) ? SCHEDULED : undefined);
}

// ---------------------------------------------------------------- cases

/** What a case must get back. */
type Expect =
  | { status: number[]; codes: string[] }
  | { redirect: true };

interface Case {
  fn: string;
  label: string;
  method: string;
  query?: string;
  headers: Record<string, string>;
  body?: string | Uint8Array | "stream";
  streamBody?: Uint8Array;
  expect: Expect;
}

const CODES: Record<number, string> = {
  400: "invalid_request",
  401: "unauthorized",
  405: "method_not_allowed",
  413: "payload_too_large",
};
/** The one status (and its code) docs/contract.md requires for a case. */
const expectStatus = (status: number): Expect => ({ status: [status], codes: [CODES[status]] });

/** Real ids seeded before the run, so a request that slipped through would change a row. */
interface Seeded {
  accountId: string;
  clientId: string;
  sellerId: number;
}

function validBody(spec: FnSpec, seeded: Seeded): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(spec.fields)) {
    if (!f.required && chance(0.5)) continue;
    if (f.kind === "uuid") {
      body[name] = name === "client_id" ? seeded.clientId : seeded.accountId;
      if (chance(0.3)) body[name] = ruuid();
    } else if (f.kind === "limit" || f.kind === "count" || f.kind === "limit1000") {
      body[name] = 1 + int(50);
    } else if (f.kind === "version") body[name] = int(5);
    else body[name] = chance(0.5);
  }
  return body;
}

function brokenJson(text: string): string {
  for (;;) {
    const variants = [
      () => text.slice(0, 1 + int(text.length - 1)),
      () => text.replaceAll('"', "'"),
      () => text.replace(/}$/, ",}"),
      () => `${text}}`,
      () => `${text}${text}`,
      () => text.replace(":", ""),
      () => text.replace(/"([a-z_]+)":/, "$1:"),
      () => `// c\n${text}`,
      () => text.replace("{", "{NaN,"),
      () => `{"a":undefined}`,
      () => "{".repeat(1 + int(20)),
      () => "[".repeat(100 + int(5000)),
      () => "   ",
      () => "\u0000",
      () => "nul",
      () => text.replace(/"$|}$/, "\u0000}"),
    ];
    const out = pick(variants)();
    try {
      JSON.parse(out);
    } catch {
      return out;
    }
  }
}

function huge(spec: FnSpec, seeded: Seeded): string {
  const size = MAX_BODY + 1 + int(3 * MAX_BODY);
  const base = validBody(spec, seeded);
  return pick([
    () => JSON.stringify({ ...base, pad: "x".repeat(size) }),
    () => JSON.stringify({ ...base, [Object.keys(spec.fields)[0] ?? "id"]: "9".repeat(size) }),
    () => JSON.stringify(Array.from({ length: size / 2 }, () => 1)),
    () => `{"a":"${"\\u0000".repeat(Math.ceil(size / 6))}"}`,
    () => " ".repeat(size) + JSON.stringify(base),
  ])();
}

/** A malformed body for a function whose method and key are right: [label, body, status]. */
function malformedBody(
  fnName: string,
  spec: FnSpec,
  seeded: Seeded,
): [string, string | Uint8Array, number] {
  const fieldNames = Object.keys(spec.fields);
  const required = fieldNames.filter((n) => spec.fields[n].required);
  const body = validBody(spec, seeded);
  const choices: (() => [string, string | Uint8Array, number])[] = [
    () => ["broken json", brokenJson(JSON.stringify(body)), 400],
    () => [
      "not an object",
      pick(["null", "1", '"x"', "[]", `[${JSON.stringify(body)}]`, "true", `"${ruuid()}"`]),
      400,
    ],
    () => [
      "extra field",
      JSON.stringify({ ...body, [pick(EXTRA_KEYS)]: pick([1, "x", null]) }),
      400,
    ],
    () => ["huge", huge(spec, seeded), 413],
    () => ["deep", chance(0.5) ? deep() : `{"x":${deep()}}`, 400],
    () => {
      const head = new TextEncoder().encode(JSON.stringify(body).slice(0, -1) + ',"x":"');
      const bad = pick([[0xff], [0xfe, 0xff], [0xc3, 0x28], [0xe2, 0x82], [0xed, 0xa0, 0x80]]);
      return ["invalid utf-8", new Uint8Array([...head, ...bad, 0x22, 0x7d]), 400];
    },
    () => [
      "form encoded",
      new URLSearchParams(
        Object.fromEntries(Object.entries(body).map(([k, v]) => [k, String(v)])),
      ).toString() || "a=1",
      400,
    ],
  ];
  if (required.length > 0) {
    choices.push(() => {
      const missing = { ...body };
      delete missing[pick(required)];
      return ["missing field", JSON.stringify(missing), 400];
    });
    choices.push(() => ["empty object", "{}", 400]);
    choices.push(() => ["empty body", "", 400]);
  }
  if (fieldNames.length > 0) {
    const field = () => pick(fieldNames);
    choices.push(() => {
      const name = field();
      const f = spec.fields[name];
      return [
        `wrong type ${name}`,
        JSON.stringify({ ...body, [name]: wrongValue(f.kind, f.required) }),
        400,
      ];
    });
    const uuids = fieldNames.filter((n) => spec.fields[n].kind === "uuid");
    if (uuids.length > 0) {
      choices.push(() => ["non-uuid", JSON.stringify({ ...body, [pick(uuids)]: nonUuid() }), 400]);
      choices.push(() => [
        "unicode",
        JSON.stringify({ ...body, [pick(uuids)]: unicodeString() }),
        400,
      ]);
      choices.push(() => ["sql", JSON.stringify({ ...body, [pick(uuids)]: sqlString() }), 400]);
    }
  } else {
    choices.push(() => ["unknown field", JSON.stringify({ [pick(EXTRA_KEYS)]: sqlString() }), 400]);
  }
  void fnName;
  return pick(choices)();
}

const CONTENT_TYPES = [
  "application/json",
  "application/json",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=xyz",
  "application/json; charset=utf-16",
  "application/xml",
  "",
];

/** Headers with a wrong or missing server key: [label, headers]. */
function badKey(secretKey: string): [string, Record<string, string>] {
  return pick<() => [string, Record<string, string>]>([
    () => ["no key", {}],
    () => ["wrong apikey", { apikey: `sb_secret_${hex(32)}` }],
    () => ["wrong bearer", { authorization: `Bearer sb_secret_${hex(32)}` }],
    () => ["key prefix", { apikey: secretKey.slice(0, -1) }],
    () => ["key suffix", { apikey: `${secretKey}x` }],
    () => ["empty bearer", { authorization: "Bearer" }],
    () => ["basic auth", { authorization: `Basic ${btoa(`service_role:${secretKey}`)}` }],
    () => ["token scheme", { authorization: `Token ${secretKey}` }],
    () => ["wrong header", { "x-api-key": secretKey }],
    () => ["jwt-looking", { authorization: `Bearer eyJhbGciOiJIUzI1NiJ9.${hex(20)}.${hex(20)}` }],
    () => ["sql key", { apikey: "' or 1=1 --" }],
    () => ["case-changed key", { apikey: secretKey.toUpperCase() }],
  ])();
}

function serverCase(fn: string, spec: FnSpec, env: Env, seeded: Seeded): Case {
  const category = int(10);
  const wrongMethods = ["GET", "POST", "PUT", "PATCH", "DELETE"].filter((m) =>
    !spec.methods.includes(m)
  );
  const goodKey = { apikey: env.secretKey };
  // Wrong method: 405 whatever the key and body.
  if (category === 0 || (spec.noInput && category < 4)) {
    const method = pick(wrongMethods);
    const [keyLabel, keyHeaders] = chance(0.5) ? ["good key", goodKey] : badKey(env.secretKey);
    const body = method === "GET" ? undefined : JSON.stringify(validBody(spec, seeded));
    return {
      fn,
      label: `wrong method ${method}, ${keyLabel}`,
      method,
      headers: { ...keyHeaders, "content-type": "application/json" },
      body,
      expect: expectStatus(405),
    };
  }
  // Right method and key, but parameters a function without input does not take: 400.
  if (spec.noInput && category >= 7) {
    const name = enc(pick(EXTRA_KEYS) || "x");
    return {
      fn,
      label: "unexpected query parameter",
      method: "GET",
      query: `?${name}=${enc(pick([sqlString(), unicodeString(), ruuid()]))}`,
      headers: goodKey,
      expect: expectStatus(400),
    };
  }
  // Wrong or missing key: 401 whatever the (well- or malformed) input.
  if (category <= 2 || spec.noInput) {
    const [keyLabel, keyHeaders] = badKey(env.secretKey);
    const method = pick(spec.methods);
    if (method === "GET") {
      const q = spec.query ? `?client_id=${seeded.clientId}` : "";
      return {
        fn,
        label: `${keyLabel} (GET)`,
        method,
        query: q,
        headers: keyHeaders,
        expect: expectStatus(401),
      };
    }
    const body = chance(0.5)
      ? JSON.stringify(validBody(spec, seeded))
      : malformedBody(fn, spec, seeded)[1];
    return {
      fn,
      label: `${keyLabel}`,
      method,
      headers: { ...keyHeaders, "content-type": "application/json" },
      body,
      expect: expectStatus(401),
    };
  }
  // Right method and key, malformed query string (GET).
  if (spec.query && category === 3) {
    const q = pick<() => [string, string]>([
      () => ["no client_id", ""],
      () => ["non-uuid query", `?client_id=${enc(nonUuid())}`],
      () => [
        "extra query",
        `?client_id=${seeded.clientId}&${enc(pick(EXTRA_KEYS) || "x")}=1`,
      ],
      () => ["unicode query", `?client_id=${enc(unicodeString())}`],
      () => ["sql query", `?client_id=${enc(sqlString())}`],
      () => ["long query", `?client_id=${"a".repeat(4000 + int(4000))}`],
      () => ["repeated bad", `?client_id=${enc(nonUuid())}&client_id=not-a-uuid`],
      () => ["other name", `?clientId=${seeded.clientId}`],
    ])();
    return {
      fn,
      label: q[0],
      method: "GET",
      query: q[1] ? q[1] : "",
      headers: goodKey,
      expect: expectStatus(400),
    };
  }
  // Right method and key, malformed body.
  const [label, body, status] = malformedBody(fn, spec, seeded);
  const contentType = status === 400 ? pick(CONTENT_TYPES) : "application/json";
  const headers: Record<string, string> = chance(0.5)
    ? { ...goodKey }
    : { authorization: `Bearer ${env.secretKey}` };
  if (contentType) headers["content-type"] = contentType;
  const stream = status === 413 && chance(0.3);
  return {
    fn,
    label: `${label}${stream ? " (chunked)" : ""}, content-type ${contentType || "none"}`,
    method: "POST",
    headers,
    body: stream ? "stream" : body,
    streamBody: stream
      ? (typeof body === "string" ? new TextEncoder().encode(body) : body)
      : undefined,
    expect: expectStatus(status),
  };
}

function callbackCase(fn: string, env: Env): Case {
  if (chance(0.1)) {
    const method = pick(["POST", "PUT", "PATCH", "DELETE"]);
    return {
      fn,
      label: `wrong method ${method}`,
      method,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: `code=abc&state=${hex(43)}`,
      expect: expectStatus(405),
    };
  }
  const wellFormed = () =>
    Array.from({ length: 22 + int(60) }, () => pick([..."ABCxyz019_-"])).join("");
  const [label, query] = pick<() => [string, string]>([
    () => ["no query", ""],
    () => ["code only", `?code=${hex(20)}`],
    () => ["unknown state", `?code=${hex(20)}&state=${wellFormed()}`],
    () => ["unknown state, no code", `?state=${wellFormed()}`],
    () => ["declined, unknown state", `?error=access_denied&state=${wellFormed()}`],
    () => ["declined, no state", "?error=access_denied"],
    () => ["short state", `?code=abc&state=${hex(1 + int(20))}`],
    () => ["sql state", `?code=abc&state=${enc(sqlString())}`],
    () => ["unicode state", `?code=abc&state=${enc(unicodeString())}`],
    () => ["long state", `?code=abc&state=${"A".repeat(129 + int(4000))}`],
    () => ["sql error", `?error=${enc(sqlString())}&state=${wellFormed()}`],
    () => ["repeated state", `?code=abc&state=${wellFormed()}&state=${wellFormed()}`],
    () => ["unicode code", `?code=${enc(unicodeString())}&state=${wellFormed()}`],
    () => ["empty values", "?code=&state=&error="],
  ])();
  const headers: Record<string, string> = chance(0.3) ? badKey(env.secretKey)[1] : {};
  return { fn, label, method: "GET", query, headers, expect: { redirect: true } };
}

/** Webhook cases are built with their signature asynchronously. */
async function webhookCase(fn: string, env: Env, seeded: Seeded): Promise<Case> {
  if (chance(0.08)) {
    const method = pick(["GET", "PUT", "PATCH", "DELETE"]);
    return {
      fn,
      label: `wrong method ${method}`,
      method,
      headers: {},
      body: method === "GET" ? undefined : "{}",
      expect: expectStatus(405),
    };
  }
  const dataId = String(1 + int(1e9));
  const requestId = ruuid();
  const query = `?data.id=${dataId}&type=mp-connect`;
  const deauth = {
    action: "application.deauthorized",
    type: "mp-connect",
    user_id: seeded.sellerId,
    data: { id: dataId },
    date_created: new Date().toISOString(),
  };
  const nowSec = Math.floor(Date.now() / 1000);
  const manifest = (ts: number, id = dataId, rid = requestId) =>
    `id:${id};request-id:${rid};ts:${ts};`;
  const signed = async (ts = nowSec) =>
    `ts=${ts},v1=${await signManifest(env.webhookSecret, manifest(ts))}`;
  if (chance(0.35)) {
    // Properly signed, but the body is malformed: 400.
    const [label, body] = pick<() => [string, string | Uint8Array]>([
      () => ["signed broken json", brokenJson(JSON.stringify(deauth))],
      () => ["signed array", JSON.stringify([deauth])],
      () => ["signed null", "null"],
      () => ["signed no user_id", JSON.stringify({ ...deauth, user_id: undefined })],
      () => [
        "signed bad user_id",
        JSON.stringify({
          ...deauth,
          user_id: pick(["abc", -1, 0, 1.5, true, [], {}, sqlString()]),
        }),
      ],
      () => [
        "signed invalid utf-8",
        new Uint8Array([...new TextEncoder().encode('{"action":"'), 0xff, 0x22, 0x7d]),
      ],
    ])();
    return {
      fn,
      label,
      method: "POST",
      query,
      headers: {
        "content-type": "application/json",
        "x-signature": await signed(),
        "x-request-id": requestId,
      },
      body,
      expect: expectStatus(400),
    };
  }
  // Missing, malformed, forged or stale signatures: 401 (413 when the body is over the limit).
  const [label, signature] = await pick<() => Promise<[string, string | undefined]>>([
    () => Promise.resolve(["no signature", undefined]),
    () =>
      Promise.resolve(["garbage signature", pick(["garbage", "ts=,v1=", "v1=abc", sqlString()])]),
    () => Promise.resolve(["wrong mac", `ts=${nowSec},v1=${hex(64)}`]),
    async () => [
      "wrong secret",
      `ts=${nowSec},v1=${await signManifest(`${env.webhookSecret}x`, manifest(nowSec))}`,
    ],
    async () => [
      "stale",
      `ts=${nowSec - 3600},v1=${await signManifest(env.webhookSecret, manifest(nowSec - 3600))}`,
    ],
    async () => [
      "future",
      `ts=${nowSec + 3600},v1=${await signManifest(env.webhookSecret, manifest(nowSec + 3600))}`,
    ],
    async () => [
      "other data.id",
      `ts=${nowSec},v1=${await signManifest(env.webhookSecret, manifest(nowSec, `${dataId}1`))}`,
    ],
    async () => [
      "other request id",
      `ts=${nowSec},v1=${await signManifest(env.webhookSecret, manifest(nowSec, dataId, ruuid()))}`,
    ],
    // A valid signature dressed up: every variation must be refused, never read as new.
    async () => [
      "signature with an extra part",
      `${await signed()}${pick([",v1=00", ",x=1", " ,", ",", ",ts=1"])}`,
    ],
    async () => ["signature with upper-case keys", (await signed()).replace("ts=", "TS=")],
    async () => ["signature with spaces", (await signed()).replace(",", " , ")],
    async () => ["signature in reverse order, twice", `${await signed()},${await signed()}`],
    async () => ["3 KB signature", `${await signed()},${"v1=0".repeat(750)}`],
  ])();
  const [bodyLabel, body, bodyStatus] = chance(0.5)
    ? ["deauthorization", JSON.stringify(deauth), 400] as const
    : malformedBody(fn, specOf(fn)!, seeded);
  const headers: Record<string, string> = {
    "content-type": pick(CONTENT_TYPES) || "application/json",
    "x-request-id": requestId,
  };
  if (signature !== undefined) headers["x-signature"] = signature;
  // The request id and data.id must have their shapes too (a valid MAC over a bad shape).
  let finalQuery = query;
  const shape = int(100);
  if (shape < 15) {
    const bad = pick(["a b", "x".repeat(129), "id;ts:1", "ümlaut", ""]);
    headers["x-request-id"] = bad;
    headers["x-signature"] = `ts=${nowSec},v1=${await signManifest(
      env.webhookSecret,
      manifest(nowSec, dataId, bad),
    )}`;
    if (bad === "") delete headers["x-request-id"];
  } else if (shape < 30) {
    const bad = pick([`${dataId};request-id:${requestId}`, "1-2", "a.b", "%00"]);
    finalQuery = `?data.id=${encodeURIComponent(bad)}&type=mp-connect`;
    headers["x-signature"] = `ts=${nowSec},v1=${await signManifest(
      env.webhookSecret,
      manifest(nowSec, bad.toLowerCase()),
    )}`;
  }
  return {
    fn,
    label: `${label}, ${bodyLabel}`,
    method: "POST",
    query: finalQuery,
    headers,
    body,
    // docs/contract.md, errors: mp-webhook reads the body (bounded) before the signature, which
    // may sign the body's data.id, so an oversized body is a 413 whatever the signature.
    expect: expectStatus(bodyStatus === 413 ? 413 : 401),
  };
}

// ---------------------------------------------------------------- running and checking

interface Env {
  secretKey: string;
  webhookSecret: string;
  appReturnUrl: string;
}

interface Answer {
  status: number;
  text: string;
  headers: Headers;
}

async function send(c: Case): Promise<Answer> {
  const init: RequestInit = { method: c.method, headers: c.headers, redirect: "manual" };
  if (c.body === "stream") {
    const bytes = c.streamBody!;
    init.body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += 16384) {
          controller.enqueue(bytes.slice(at, at + 16384));
        }
        controller.close();
      },
    });
  } else if (c.body !== undefined) {
    init.body = c.body as BodyInit;
  }
  const res = await fetch(`${stack.functionsUrl}/${c.fn}${c.query ?? ""}`, init);
  return { status: res.status, text: await res.text(), headers: res.headers };
}

const TOKENISH = [
  /APP_USR-[A-Za-z0-9-]{8,}/,
  /TG-[A-Za-z0-9-]{8,}/,
  /v1:[A-Za-z0-9_-]{1,32}:[A-Za-z0-9+/=]{16,}/,
];

/** Why an answer is wrong for its case, or undefined when it is right. */
function check(
  c: Case,
  a: Answer,
  secrets: string[],
  env: Env,
): string | undefined {
  const location = a.headers.get("location") ?? "";
  const everything = `${a.text}\n${location}`;
  if (secrets.some((s) => everything.includes(s))) return "a secret appears in the answer";
  if (TOKENISH.some((re) => re.test(everything))) return "a token-like value appears in the answer";
  let body: any;
  const jsonError = () => {
    if (!(a.headers.get("content-type") ?? "").startsWith("application/json")) {
      return `content-type ${a.headers.get("content-type")}`;
    }
    try {
      body = JSON.parse(a.text);
    } catch {
      return "the body is not JSON";
    }
    if (
      body === null || typeof body !== "object" || Object.keys(body).join() !== "error" ||
      typeof body.error?.code !== "string" || typeof body.error?.message !== "string"
    ) {
      return `not the contract's error body: ${a.text.slice(0, 120)}`;
    }
  };
  if (a.headers.get("cache-control") !== "no-store") return "an answer without no-store";
  if (a.status >= 500) return `status ${a.status} ${a.text.slice(0, 160)}`;
  if ("redirect" in c.expect) {
    if (a.status !== 302) return `status ${a.status}, expected a 302`;
    if (!location.startsWith(env.appReturnUrl)) return "the redirect leaves APP_RETURN_URL";
    const params = new URL(location).searchParams;
    if (params.get("mp") !== "error" || !params.get("reason")) {
      return `redirect without mp=error&reason: ${new URL(location).search}`;
    }
    return undefined;
  }
  const { status, codes } = c.expect;
  if (!status.includes(a.status)) {
    return `status ${a.status}, expected ${status.join("/")}: ${a.text.slice(0, 160)}`;
  }
  const problem = jsonError();
  if (problem) return problem;
  if (body.error.code !== codes[status.indexOf(a.status)]) return `code ${body.error.code}`;
  if (a.status === 405 && !a.headers.get("allow")) return "a 405 without an Allow header";
}

/** Checksums of the MP columns of the kept tables and the contents of the MP tables. */
async function fingerprint(sql: Sql): Promise<Record<string, string>> {
  const tables = await sql<{ name: string }[]>`
    select table_name as name from information_schema.tables
     where table_schema = 'public' and table_type = 'BASE TABLE'
       and (table_name in ('clients', 'nv_accounts') or table_name ~ '^mp_|escrow')
     order by table_name`;
  const out: Record<string, string> = {};
  for (const { name } of tables) {
    const q = (s: string) => `"${s.replaceAll('"', '""')}"`;
    let query: string;
    if (name === "clients" || name === "nv_accounts") {
      const cols = await sql<{ c: string }[]>`
        select column_name as c from information_schema.columns
         where table_schema = 'public' and table_name = ${name}
           and (column_name like 'mp\\_%' or column_name = 'backend_client_id')
         order by column_name`;
      const row = ["id", ...cols.map((c) => c.c)].map(q).join(", ");
      query =
        `select count(*)::text as n, md5(coalesce(string_agg(row(${row})::text, ',' order by id), '')) as sum
                 from public.${q(name)}`;
    } else {
      query =
        `select count(*)::text as n, md5(coalesce(string_agg(t::text, ',' order by t::text), '')) as sum
                 from public.${q(name)} t`;
    }
    const [r] = await sql.unsafe(query);
    out[name] = `${r.n} rows ${r.sum}`;
  }
  return out;
}

async function snapshot() {
  return { backend: await fingerprint(backendDb()), admin: await fingerprint(adminDb()) };
}

/** Pauses every pg_cron job (a scheduled refresh would change rows); returns the restorer. */
async function pauseCron(): Promise<() => Promise<void>> {
  const jobs = await backendDb()<{ jobid: number }[]>`
    select jobid from cron.job where active`.catch(() => []);
  for (const j of jobs) await backendDb()`select cron.alter_job(${j.jobid}, active := false)`;
  return async () => {
    for (const j of jobs) await backendDb()`select cron.alter_job(${j.jobid}, active := true)`;
  };
}

/** A snapshot taken when nothing in flight is still writing (two equal reads in a row). */
async function settledSnapshot() {
  let last = JSON.stringify(await snapshot());
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 500));
    const now = JSON.stringify(await snapshot());
    if (now === last) return JSON.parse(now);
    last = now;
  }
  throw new Error("the databases never settled");
}

Deno.test("bad input: ≥1,000 malformed requests per function → docs/contract.md answers, no 5xx, no token, databases unchanged", async () => {
  const env: Env = {
    secretKey: stack.secretKey,
    webhookSecret: stack.webhookSecret,
    appReturnUrl: stack.appReturnUrl,
  };
  const functions = [...(await functionEntrypoints()).keys()];
  const unknown = functions.filter((f) => !specOf(f));
  assert.deepEqual(unknown, [], "every function in config.toml has a bad-input spec here");

  // Real rows the malformed requests name, so one that slipped through would change them.
  const [grant] = await sandbox.grants(1);
  const clientId = await newClient();
  const accountId = await newAccount({ grant, clientId });
  const prov = await call("provision-step-7-1", { account_id: accountId, client_id: clientId });
  assert.equal(prov.status, 200);
  const seeded: Seeded = { accountId, clientId, sellerId: grant.user_id };

  rand = prng(SEED);
  const cases: Case[] = [];
  for (const fn of functions) {
    const spec = specOf(fn)!;
    for (let i = 0; i < PER_FUNCTION; i++) {
      if (spec.kind === "callback") cases.push(callbackCase(fn, env));
      else if (spec.kind === "webhook") cases.push(await webhookCase(fn, env, seeded));
      else cases.push(serverCase(fn, spec, env, seeded));
    }
  }

  const resume = await pauseCron();
  const failures: string[] = [];
  const counts = new Map<string, number>();
  const statuses = new Map<number, number>();
  let before: unknown;
  try {
    before = await settledSnapshot();
    const secrets = [...(await knownSecrets(Deno.env.toObject())), grant.access_token];
    let next = 0;
    const worker = async () => {
      while (next < cases.length) {
        const index = next++;
        const c = cases[index];
        let problem: string | undefined;
        try {
          const answer = await send(c);
          statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
          problem = check(c, answer, secrets, env);
        } catch (err) {
          problem = `no answer: ${(err as Error).message}`;
        }
        counts.set(c.fn, (counts.get(c.fn) ?? 0) + 1);
        if (problem) failures.push(`#${index} ${c.fn} ${c.method} [${c.label}]: ${problem}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  } finally {
    await resume();
  }
  const byStatus = [...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(" ");
  console.log(`bad input: seed ${SEED}, ${cases.length} requests, answers ${byStatus}`);
  for (const fn of functions) assert.ok((counts.get(fn) ?? 0) >= 1000, `${fn}: ≥ 1,000 requests`);
  assert.equal(
    failures.length,
    0,
    `seed ${SEED}: ${failures.length} of ${cases.length} wrong answers:\n${
      failures.slice(0, 15).join("\n")
    }`,
  );
  const after = await snapshot();
  assert.deepEqual(after, before, "both databases are unchanged");
  const [row] = await backendDb()`select mp_access_token from clients where id = ${clientId}`;
  assert.equal(
    row.mp_access_token === grant.access_token,
    true,
    "the seeded client still has its token",
  );
});
