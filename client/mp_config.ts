/**
 * The checkout client of get-mp-config: one self-contained file to copy into a checkout service
 * as it is — Node ≥ 20 (ESM, `tsc` with `strict` and `module`/`moduleResolution` `NodeNext`) or
 * Deno. It imports nothing and needs nothing but the platform's global `fetch` and `AbortSignal`
 * (their types come with the platform: Deno has them built in; on Node, `@types/node` ≥ 20 or
 * `"lib": ["DOM"]` declares them). It uses only type syntax that erases (no enums, no parameter
 * properties), so Node's own type stripping runs it too.
 *
 * ```ts
 * const mp = createMpConfigClient({ functionsUrl, secretKey }); // or { supabase }
 * const config = await mp.getMpConfig(clientId); // MpConfig, or throws MpConfigError
 * const paid = await mp.withMpConfig(clientId, (config) => charge(config.access_token));
 * ```
 *
 * Every call is one request to get-mp-config, bounded by `timeoutMs` (an `AbortSignal`; default
 * 30 s, since a report may wait on MercadoPago). Every failure is an `MpConfigError` with the
 * contract's `status` and `code` (docs/contract.md, "Errors"); `status` 0 with code
 * `unreachable` when nothing answered (network error, timeout), and code `unexpected_answer`
 * when something answered that is not get-mp-config's JSON. No error message carries the
 * secret key, a token, or the body of an answer.
 */

/** get-mp-config's 200 answer: the credentials checkout charges with. */
export interface MpConfig {
  /** The client (a Backend `clients` id) the credentials are for. */
  client_id: string;
  /** The seller's MercadoPago access token (a secret: never log it). */
  access_token: string;
  /** The seller's MercadoPago public key (for the browser's card form), when known. */
  public_key: string | null;
  /** `fast_path`: from the Backend cache; `fallback`: from the Admin master (logged). */
  source: "fast_path" | "fallback";
  /** The token's version: what `reportRejectedToken` reports (null: a row written before versions). */
  token_version: number | null;
  /** The MercadoPago site (country) of the seller's application: `MLA`, `MLB`, `MLM`, … */
  site_id: string;
}

/**
 * The codes an `MpConfigError` carries: the contract's, plus `unreachable` (nothing answered)
 * and `unexpected_answer` (an answer that is not get-mp-config's). Other strings pass through
 * as the server sent them.
 */
export type MpConfigErrorCode =
  | "invalid_request"
  | "unauthorized"
  | "client_not_found"
  | "mp_not_connected"
  | "mp_reauth_required"
  | "method_not_allowed"
  | "payload_too_large"
  | "misconfigured"
  | "decrypt_failed"
  | "internal"
  | "unavailable"
  | "unreachable"
  | "unexpected_answer"
  | (string & Record<never, never>);

/**
 * get-mp-config did not give credentials: `status` is its HTTP status (0 when nothing
 * answered) and `code` the contract's error code, e.g. 404 `mp_not_connected` (no connection),
 * 404 `mp_reauth_required` (the seller must connect MercadoPago again), 401 `unauthorized`
 * (wrong key), 503 `unavailable`, 0 `unreachable`.
 */
export class MpConfigError extends Error {
  /** The HTTP status of get-mp-config's answer; 0 when nothing answered. */
  readonly status: number;
  /** The contract's error code (`unreachable` when nothing answered). */
  readonly code: MpConfigErrorCode;

  constructor(status: number, code: MpConfigErrorCode, message: string) {
    super(message);
    this.name = "MpConfigError";
    this.status = status;
    this.code = code;
  }
}

/** The `fetch` the client calls; the platform's global `fetch` fits (pass one to instrument it). */
export type MpConfigFetch = (
  url: string,
  init: { method: "POST"; headers: Record<string, string>; body: string; signal: AbortSignal },
) => Promise<{ readonly status: number; text(): Promise<string> }>;

/**
 * What the client needs of a supabase-js client (`createClient(url, secretKey)`, a server
 * key: `sb_secret_…` or service-role): `functions.invoke`. Typed by its shape, so this file
 * imports nothing.
 */
export interface SupabaseFunctionsLike {
  readonly functions: {
    invoke(
      functionName: string,
      options: { body: Record<string, unknown>; signal: AbortSignal },
    ): Promise<{ data: unknown; error: unknown }>;
  };
}

/**
 * How the client reaches get-mp-config: the Edge Functions URL
 * (`https://<ref>.supabase.co/functions/v1`) and a server key, with nothing else; or a
 * supabase-js client made with a server key. `timeoutMs` bounds each call (default 30 000).
 */
export type MpConfigClientOptions =
  | { functionsUrl: string; secretKey: string; fetch?: MpConfigFetch; timeoutMs?: number }
  | { supabase: SupabaseFunctionsLike; timeoutMs?: number };

/** How `withMpConfig` tells that MercadoPago rejected the token (see `withMpConfig`). */
export interface WithMpConfigOptions {
  /**
   * Whether what `fn` returned or threw is MercadoPago's 401 for the token; default
   * `isMercadoPagoRejection`.
   */
  isRejected?: (outcome: unknown) => boolean;
}

/** The checkout client: read a client's credentials, report a rejected token, or both around a charge. */
export interface MpConfigClient {
  /**
   * The client's MercadoPago credentials (the fast path, or the logged fallback); throws
   * `MpConfigError`, e.g. 404 `mp_not_connected` or `mp_reauth_required`.
   */
  getMpConfig(clientId: string): Promise<MpConfig>;
  /**
   * Reports that MercadoPago answered 401 to the token of version `tokenVersion` and returns
   * what to use instead: a newer token, the same one when MercadoPago still accepts it (the
   * report is verified, never trusted), or throws `MpConfigError` 404 `mp_reauth_required`
   * when the seller must connect again.
   */
  reportRejectedToken(clientId: string, tokenVersion: number): Promise<MpConfig>;
  /**
   * Runs `fn` with the client's credentials. When MercadoPago rejected the token — `fn`
   * threw or returned something with `status === 401` (a `fetch` `Response`, the
   * `mercadopago` SDK's error), `statusCode === 401`, or `response.status === 401` (an Axios
   * or Nest `HttpService` error); or whatever `options.isRejected` says — it reports that
   * token once and runs `fn` once more with the answer. What the second run returns or throws
   * is passed on as it is, a second rejection too (the report already told the platform): it
   * never loops. A 401 means MercadoPago did nothing, so the second run does not charge twice
   * (send the same `X-Idempotency-Key` both times all the same). Throws `MpConfigError` when
   * get-mp-config does (e.g. 404 `mp_reauth_required` from the report).
   */
  withMpConfig<T>(
    clientId: string,
    fn: (config: MpConfig) => T | Promise<T>,
    options?: WithMpConfigOptions,
  ): Promise<T>;
}

/** The default timeout of one call to get-mp-config, in milliseconds. */
const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * Whether `outcome` (what a charge returned or threw) is MercadoPago's 401: it has
 * `status === 401`, `statusCode === 401`, or `response.status === 401`. An `MpConfigError`
 * never is (a 401 from get-mp-config is a wrong key, not a dead token).
 */
export function isMercadoPagoRejection(outcome: unknown): boolean {
  if (typeof outcome !== "object" || outcome === null || outcome instanceof MpConfigError) {
    return false;
  }
  const o = outcome as { status?: unknown; statusCode?: unknown; response?: unknown };
  if (o.status === 401 || o.statusCode === 401) return true;
  const res = o.response;
  return typeof res === "object" && res !== null && (res as { status?: unknown }).status === 401;
}

/** A checkout client over `options` (see `MpConfigClientOptions`). */
export function createMpConfigClient(options: MpConfigClientOptions): MpConfigClient {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new TypeError("createMpConfigClient: timeoutMs must be positive");
  const call = "supabase" in options
    ? viaSupabase(options.supabase, timeoutMs)
    : viaFetch(options, timeoutMs);

  async function getMpConfig(clientId: string): Promise<MpConfig> {
    return await call({ client_id: clientId });
  }

  async function reportRejectedToken(clientId: string, tokenVersion: number): Promise<MpConfig> {
    return await call({ client_id: clientId, rejected_token_version: tokenVersion });
  }

  async function withMpConfig<T>(
    clientId: string,
    fn: (config: MpConfig) => T | Promise<T>,
    opts: WithMpConfigOptions = {},
  ): Promise<T> {
    const isRejected = opts.isRejected ?? isMercadoPagoRejection;
    const config = await getMpConfig(clientId);
    let first: { value: T } | { error: unknown };
    try {
      first = { value: await fn(config) };
    } catch (error) {
      first = { error };
    }
    const rejected = "value" in first ? isRejected(first.value) : isRejected(first.error);
    // A token without a version (a row older than versions) cannot be reported.
    if (!rejected || config.token_version === null) {
      if ("value" in first) return first.value;
      throw first.error;
    }
    return await fn(await reportRejectedToken(clientId, config.token_version));
  }

  return { getMpConfig, reportRejectedToken, withMpConfig };
}

/** One call to get-mp-config with `body`: its `MpConfig`, or an `MpConfigError`. */
type Call = (body: Record<string, unknown>) => Promise<MpConfig>;

/** Calls through `fetch` with the secret key in `apikey`. */
function viaFetch(
  options: { functionsUrl: string; secretKey: string; fetch?: MpConfigFetch },
  timeoutMs: number,
): Call {
  if (typeof options.functionsUrl !== "string" || !/^https?:\/\//.test(options.functionsUrl)) {
    throw new TypeError("createMpConfigClient: functionsUrl must be an http(s) URL");
  }
  if (typeof options.secretKey !== "string" || options.secretKey === "") {
    throw new TypeError("createMpConfigClient: secretKey is empty");
  }
  const url = `${options.functionsUrl.replace(/\/+$/, "")}/get-mp-config`;
  const headers = { "content-type": "application/json", apikey: options.secretKey };
  const doFetch: MpConfigFetch = options.fetch ?? ((u, init) => fetch(u, init));
  return async (body) => {
    let status: number;
    let text: string;
    try {
      const res = await doFetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      status = res.status;
      text = await res.text();
    } catch (err) {
      throw unreachable(err, timeoutMs, options.secretKey);
    }
    return decode(status, parseJson(text));
  };
}

/** Calls through supabase-js `functions.invoke` (which sends its key in `apikey`). */
function viaSupabase(supabase: SupabaseFunctionsLike, timeoutMs: number): Call {
  if (typeof supabase?.functions?.invoke !== "function") {
    throw new TypeError("createMpConfigClient: supabase must be a supabase-js client");
  }
  return async (body) => {
    let result: { data: unknown; error: unknown };
    try {
      result = await supabase.functions.invoke("get-mp-config", {
        body,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw unreachable(err, timeoutMs);
    }
    const { data, error } = result;
    if (!error) return decode(200, typeof data === "string" ? parseJson(data) : data);
    // An HTTP answer (FunctionsHttpError, FunctionsRelayError) carries its Response as `context`.
    const res = (error as { context?: unknown }).context;
    if (isResponseLike(res)) {
      let text: string;
      try {
        text = await res.text();
      } catch (err) {
        throw unreachable(err, timeoutMs);
      }
      return decode(res.status, parseJson(text));
    }
    // FunctionsFetchError: nothing answered; its context is the fetch error.
    throw unreachable(res ?? error, timeoutMs);
  };
}

/** Whether `v` looks like a `fetch` Response (a status and a readable body). */
function isResponseLike(v: unknown): v is { status: number; text(): Promise<string> } {
  return typeof v === "object" && v !== null &&
    typeof (v as { status?: unknown }).status === "number" &&
    typeof (v as { text?: unknown }).text === "function";
}

/** The parsed JSON of an answer, or `NOT_JSON`. */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
}
const NOT_JSON: unique symbol = Symbol("not JSON");

/** The checks of a 200 answer, one per field of `MpConfig` (a new field needs its check). */
const FIELD_CHECKS: { [K in keyof MpConfig]-?: (v: unknown) => boolean } = {
  client_id: (v) => typeof v === "string" && v !== "",
  access_token: (v) => typeof v === "string" && v !== "",
  public_key: (v) => v === null || typeof v === "string",
  source: (v) => v === "fast_path" || v === "fallback",
  token_version: (v) => v === null || (typeof v === "number" && Number.isSafeInteger(v)),
  site_id: (v) => typeof v === "string" && /^[A-Z]{3}$/.test(v),
};

/**
 * get-mp-config's answer (`status`, parsed body) as an `MpConfig` or an `MpConfigError`. A 200
 * must hold every field of `MpConfig` (fields added later pass through); an error must be the
 * contract's `{"error":{"code","message"}}`. Anything else is `unexpected_answer`.
 */
function decode(status: number, body: unknown): MpConfig {
  if (status === 200) {
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw unexpected(status, body === NOT_JSON ? "a body that is not JSON" : "not a JSON object");
    }
    const record = body as Record<string, unknown>;
    for (const [field, check] of Object.entries(FIELD_CHECKS)) {
      if (!check(record[field])) {
        throw unexpected(status, `a body whose "${field}" is missing or ill-typed`);
      }
    }
    return body as MpConfig;
  }
  const error = typeof body === "object" && body !== null
    ? (body as { error?: { code?: unknown; message?: unknown } }).error
    : undefined;
  if (typeof error?.code === "string" && error.code !== "") {
    const message = typeof error.message === "string" ? `: ${error.message}` : "";
    throw new MpConfigError(status, error.code, `get-mp-config ${error.code}${message}`);
  }
  throw unexpected(status, body === NOT_JSON ? "a body that is not JSON" : "no error code");
}

/** `unexpected_answer`: get-mp-config (or something in its place) answered `status` with `what`. */
function unexpected(status: number, what: string): MpConfigError {
  return new MpConfigError(
    status,
    "unexpected_answer",
    `get-mp-config answered ${status} with ${what} (not the contract's answer)`,
  );
}

/**
 * `unreachable`: no answer — the timeout, or a network error named by its message and code
 * (`secret` cut out, should a custom `fetch` have put the key in its error).
 */
function unreachable(err: unknown, timeoutMs: number, secret?: string): MpConfigError {
  const e = err as { name?: unknown; message?: unknown; cause?: { code?: unknown } } | null;
  if (e?.name === "TimeoutError" || e?.name === "AbortError") {
    return new MpConfigError(0, "unreachable", `get-mp-config did not answer in ${timeoutMs} ms`);
  }
  const code = typeof e?.cause?.code === "string" ? ` (${e.cause.code})` : "";
  let what = typeof e?.message === "string" ? `: ${e.message}` : "";
  if (secret) what = what.split(secret).join("[secret key]");
  return new MpConfigError(0, "unreachable", `get-mp-config could not be reached${what}${code}`);
}
