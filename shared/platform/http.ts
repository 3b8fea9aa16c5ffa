/**
 * The HTTP layer every function shares: methods, server-key authentication, the 64 KiB
 * body limit, input validation, the error body of docs/contract.md, request ids, one log line per
 * failure, the background work a function's changes call for after each answer (`changes`), and
 * a scheduled function's run record (`defineScheduledFunction`).
 */
import * as v from "valibot";
import { type Need, requireConfig } from "./config.ts";
import { type Context, getContext } from "./context.ts";
import { DomainError, type FailureCode, failureOf } from "./errors.ts";
import { validate } from "./input.ts";
import { createLogger, type Logger } from "./log.ts";

/** Largest accepted request body (docs/contract.md, common rules). */
const MAX_BODY_BYTES = 64 * 1024;

/** A refusal of the edge's own (a body too large, no server key), with its status; edge only. */
class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = "HttpError";
  }
}

/** What an incoming `x-request-id` must look like to be used (logs, audit, echo). */
const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** The request's `x-request-id` when it is well-formed, else a fresh UUID. */
export function requestIdOf(req: Request): string {
  const given = req.headers.get("x-request-id");
  return given !== null && REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

/** Sets what every answer carries: its request id and `cache-control: no-store`. */
function finish(res: Response, requestId: string): Response {
  res.headers.set("x-request-id", requestId);
  res.headers.set("cache-control", "no-store");
  return res;
}

/** A JSON answer. */
export function json(status: number, body: unknown, headers?: HeadersInit): Response {
  return Response.json(body, { status, headers });
}

/** An error answer (docs/contract.md, errors): `{"error":{"code","message"}}`. */
function errorBody(status: number, code: string, message: string): Response {
  return json(status, { error: { code, message } });
}

/** A lowercase canonical UUID (input in any case is accepted and lowercased). */
export const uuid = v.pipe(
  v.string("must be a string"),
  v.regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, "must be a UUID"),
  v.toLowerCase(),
);

/**
 * An optional `limit`: a whole number from 1 to `max`, anything else answered in one wording
 * (`limit: must be from 1 to <max>`, as mp-events' query says it).
 */
export function optionalLimit(max: number) {
  const range = `must be from 1 to ${max}`;
  return v.optional(
    v.pipe(v.number(range), v.integer(range), v.minValue(1, range), v.maxValue(max, range)),
  );
}

/**
 * Compares a presented key with a secret in constant time: the loop runs over the presented
 * value only and never exits early, so its timing tells nothing about the secret.
 */
function safeEqual(presented: string, secret: string): boolean {
  let diff = presented.length ^ secret.length;
  for (let i = 0; i < presented.length; i++) {
    diff |= presented.charCodeAt(i) ^ (secret.charCodeAt(i) | 0);
  }
  return diff === 0;
}

function matchesAny(presented: string | null | undefined, keys: string[]): boolean {
  if (!presented) return false;
  let ok = false;
  for (const key of keys) ok = safeEqual(presented, key) || ok;
  return ok;
}

/** True when the request carries one of `keys` as `apikey` or `Authorization: Bearer`. */
function hasServerKey(req: Request, keys: string[]): boolean {
  if (matchesAny(req.headers.get("apikey"), keys)) return true;
  const auth = req.headers.get("authorization");
  return !!auth && /^bearer /i.test(auth) && matchesAny(auth.slice(7).trim(), keys);
}

async function readBody(req: Request): Promise<string> {
  const length = req.headers.get("content-length");
  if (Number(length) > MAX_BODY_BYTES) {
    throw new HttpError(413, "payload_too_large", "body over 64 KiB");
  }
  if (length !== null && /^\d+$/.test(length)) return decodeUtf8(await req.arrayBuffer());
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, "payload_too_large", "body over 64 KiB");
    chunks.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) all.set(c, (at += c.length) - c.length);
  return decodeUtf8(all);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8(bytes: ArrayBuffer | Uint8Array): string {
  if (bytes.byteLength > MAX_BODY_BYTES) {
    throw new HttpError(413, "payload_too_large", "body over 64 KiB");
  }
  try {
    return utf8.decode(bytes);
  } catch {
    throw new DomainError("invalid_request", "body is not UTF-8");
  }
}

/**
 * Reads a JSON object body, or the query string for GET; 400 when it is not one. With
 * `emptyIsObject`, an empty body (none at all, or zero bytes however framed) reads as `{}`.
 */
export async function readInput(
  req: Request,
  opts: { emptyIsObject?: boolean } = {},
): Promise<Record<string, unknown>> {
  if (req.method === "GET" || req.method === "HEAD") {
    return Object.fromEntries(new URL(req.url).searchParams);
  }
  const text = await readBody(req);
  if (opts.emptyIsObject && text === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new DomainError("invalid_request", "body is not valid JSON");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new DomainError("invalid_request", "body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

/** What a function's body receives for one request. */
interface Call<I> {
  req: Request;
  input: I;
  ctx: Context;
  log: Logger;
  requestId: string;
}

/**
 * Work that a function's changes call for after each request, in the background of its answer
 * (`FunctionSpec.changes`): e.g. delivering the events a change of connection state wrote.
 */
export interface ChangeFollowUp<I = unknown> {
  /** What the function changes (named in the work's log lines), e.g. "connection". */
  name: string;
  /** The work; it must not reject (it logs its own errors). */
  run(ctx: Context, log: Logger): Promise<void>;
  /**
   * Only after requests whose input (and answer) say they may have changed it (default: after
   * every request not refused).
   */
  when?(input: I, answer: Response): boolean;
}

/** Answers to requests refused before anything could change: no follow-up after them. */
const REFUSED = new Set([400, 401, 405, 413]);

/**
 * Runs `work` past the answer: the edge runtime keeps the isolate alive for it through
 * `EdgeRuntime.waitUntil`; elsewhere (`deno serve`) the process simply lives on.
 */
function inBackground(work: Promise<void>, log: Logger): void {
  const held = work.catch((err) => log.warn("Background work failed", { error: err }));
  const runtime = (globalThis as { EdgeRuntime?: { waitUntil?(p: Promise<unknown>): void } })
    .EdgeRuntime;
  runtime?.waitUntil?.(held);
}

/** How a function is declared: name, methods, caller check, configuration needs, input. */
interface FunctionSpec<S extends v.GenericSchema> {
  name: string;
  methods: string[];
  /** `server`: a project secret key is required; `public`: the function checks its caller. */
  auth: "server" | "public";
  needs: Need[];
  /** Schema of the JSON body (or query string for GET); omit to read the request yourself. */
  input?: S;
  /** An empty body (none at all, or zero bytes) reads as `{}`: the input's defaults. */
  emptyBodyIsObject?: boolean;
  /**
   * What the function changes, when it changes state others are told about: after every
   * request that reached `run` (whatever it answered, errors included, except a refused
   * request: 400, 401, 405, 413) and that `changes.when` accepts, `changes.run` starts in the
   * background of the answer.
   */
  changes?: ChangeFollowUp<v.InferOutput<S>>;
  run(call: Call<v.InferOutput<S>>): Promise<Response>;
}

/** The HTTP status of each error code (docs/contract.md, "Errors"): chosen here, once. */
const STATUS: Record<FailureCode, number> = {
  invalid_request: 400,
  unauthorized: 401,
  account_not_found: 404,
  client_not_found: 404,
  mp_not_connected: 404,
  mp_reauth_required: 404,
  account_linked_elsewhere: 409,
  misconfigured: 500,
  decrypt_failed: 500,
  internal: 500,
  unavailable: 503,
};

/** A thrown error as the caller is told it: status, code and message. */
interface ErrorAnswer {
  status: number;
  code: string;
  message: string;
}

/**
 * What a thrown error means for the caller (docs/contract.md, "Errors"): the edge's own refusals
 * as they are, every other error in the contract's words (`failureOf`, which logs it) with the
 * status of its code.
 */
function describeError(err: unknown, log: Logger): ErrorAnswer {
  if (err instanceof HttpError) {
    log.info("Request refused", { code: err.code, status: err.status, reason: err.message });
    return { status: err.status, code: err.code, message: err.message };
  }
  const { code, message } = failureOf(err, log);
  return { status: STATUS[code], code, message };
}

/** Answers a thrown error with its status and code (docs/contract.md, errors). */
function errorResponse(err: unknown, log: Logger): Response {
  const { status, code, message } = describeError(err, log);
  return errorBody(status, code, message);
}

/** Turns a function declaration into a plain `(Request) => Promise<Response>` handler. */
export function defineFunction<S extends v.GenericSchema>(
  spec: FunctionSpec<S>,
): (req: Request) => Promise<Response> {
  const needs: Need[] = spec.auth === "server" ? ["serverKeys", ...spec.needs] : spec.needs;
  let checked: Context | undefined; // the context whose configuration passed `needs`
  return async (req) => {
    const requestId = requestIdOf(req);
    const log = createLogger({ function: spec.name, request_id: requestId });
    let reached: { ctx: Context; input: v.InferOutput<S> } | undefined;
    /** The answer, after which the declared follow-up starts (never before the change). */
    const answer = (res: Response): Response => {
      const changes = spec.changes;
      if (
        changes && reached && !REFUSED.has(res.status) &&
        (changes.when?.(reached.input, res) ?? true)
      ) {
        const bg = log.child({ background: changes.name });
        inBackground(changes.run(reached.ctx, bg), bg);
      }
      return finish(res, requestId);
    };
    try {
      if (!spec.methods.includes(req.method)) {
        const res = errorBody(405, "method_not_allowed", `use ${spec.methods.join(" or ")}`);
        res.headers.set("allow", spec.methods.join(", "));
        return finish(res, requestId);
      }
      const ctx = getContext();
      if (checked !== ctx) {
        requireConfig(ctx.config, needs);
        checked = ctx;
      }
      if (spec.auth === "server" && !hasServerKey(req, ctx.config.serverKeys!)) {
        throw new HttpError(401, "unauthorized", "a valid server key is required");
      }
      const body = spec.input && await readInput(req, { emptyIsObject: spec.emptyBodyIsObject });
      const input = (spec.input ? validate(spec.input, body) : undefined) as v.InferOutput<S>;
      reached = { ctx, input };
      return answer(await spec.run({ req, input, ctx, log, requestId }));
    } catch (err) {
      return answer(errorResponse(err, log));
    }
  };
}

/**
 * A scheduled function's declared job as the edge needs it (`runRecordOf` in
 * `shared/schedules/runs.ts`): the function's name and the record it keeps of each run.
 */
export interface ScheduledRuns {
  name: string;
  /** Keeps the record of a completed run: when it started and what it did; never rejects. */
  record(
    ctx: Context,
    log: Logger,
    startedAt: Date,
    summary: Record<string, unknown>,
  ): Promise<void>;
}

/** What a scheduled function's run did: its answer (200, JSON) and what its record keeps. */
interface RunReport {
  /** The answer's body. */
  answer: object;
  /** What the run's record keeps (default: the answer without its per-account `results`). */
  summary?: Record<string, unknown>;
  /** Headers of the answer. */
  headers?: Record<string, string>;
}

/** How a scheduled function is declared: its job, configuration needs, input and run. */
interface ScheduledFunctionSpec<S extends v.GenericSchema>
  extends Omit<FunctionSpec<S>, "name" | "methods" | "auth" | "input" | "run"> {
  /** Its declared job (`runRecordOf("<name>")`): the function's name and its run record. */
  job: ScheduledRuns;
  input: S;
  /** Whether a run is one of the schedule's, recorded (default: every run; not one account's). */
  recorded?(input: v.InferOutput<S>): boolean;
  run(call: Call<v.InferOutput<S>>): Promise<RunReport>;
}

/**
 * Turns a scheduled function's declaration into a handler, every one alike: `POST` with a server
 * key (pg_cron's call), an empty body read as `{}` (the defaults), the Admin DB needed (the run
 * record lives there); the run's start taken, its report answered 200 and, when `recorded`
 * accepts the input, recorded once it is done (a failure to record never fails the run).
 */
export function defineScheduledFunction<S extends v.GenericSchema>(
  spec: ScheduledFunctionSpec<S>,
): (req: Request) => Promise<Response> {
  const { job, recorded, run, needs, ...rest } = spec;
  return defineFunction<S>({
    ...rest,
    name: job.name,
    methods: ["POST"],
    auth: "server",
    needs: needs.includes("adminDbUrl") ? needs : ["adminDbUrl", ...needs],
    emptyBodyIsObject: true,
    async run(call) {
      const startedAt = new Date();
      const { answer, summary, headers } = await run(call);
      if (recorded?.(call.input) ?? true) {
        const { results: _, ...counts } = answer as Record<string, unknown>;
        await job.record(call.ctx, call.log, startedAt, summary ?? counts);
      }
      return json(200, answer, headers);
    },
  });
}
