/**
 * One-JSON-object-per-line logging, the shape Supabase's log explorer parses.
 * Every line has `level`, `msg` and the ids passed as fields; secrets are scrubbed.
 */

/** Severity of a log line. */
type Level = "debug" | "info" | "warn" | "error";

/** Fields attached to a log line: ids, counts, codes — never secrets. */
export type Fields = Record<string, unknown>;

/** A logger bound to a set of fields (function name, request id…). */
export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: Fields): Logger;
}

/**
 * Field names that hold secrets whatever their value: tokens, the OAuth code and verifier, keys
 * and passwords, by name. Ordinary codes (`code: "invalid_grant"`, an SQLSTATE) are kept; a
 * secret value under any other name is caught by its pattern ({@link scrub}).
 */
const SECRET_FIELD =
  /^(mp_)?(access_token|refresh_token|token|tokens|code_verifier|authorization_code|oauth_code|client_secret|secret|secrets|secret_key|secret_keys|webhook_secret|service_role_key|api_key|apikey|authorization|password|token_keys|keys)$/i;
/** An SQLSTATE (postgres.js puts it in `code`): five digits or capitals. */
const SQLSTATE = /^[0-9A-Z]{5}$/;
const SECRET_TEXT = [
  /APP_USR-[A-Za-z0-9-]+/g,
  /TEST-[A-Za-z0-9-]{12,}/g,
  /TG-[A-Za-z0-9-]+/g,
  /sb_secret_[A-Za-z0-9_-]+/g,
  /v1:[A-Za-z0-9_-]{1,32}:[A-Za-z0-9+/=]{16,}/g,
  /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/g,
  /postgres(?:ql)?:\/\/[^\s"']*/g,
];

/** Replaces anything that looks like a token, key, ciphertext or database URL in `text`. */
export function scrub(text: string): string {
  return SECRET_TEXT.reduce((s, re) => s.replace(re, "[redacted]"), text);
}

function clean(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return scrub(value);
  if (value instanceof Error) return cleanError(value, depth);
  if (depth > 4 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => clean(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_FIELD.test(k) ? "[redacted]" : clean(v, depth + 1);
  }
  return out;
}

/** An error as a log field: name, scrubbed message, SQLSTATE when it has one, and its cause. */
function cleanError(err: Error, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: scrub(err.message) };
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && SQLSTATE.test(code)) out.sqlstate = code;
  if (err.cause !== undefined && depth < 4) out.cause = clean(err.cause, depth + 1);
  return out;
}

class JsonLogger implements Logger {
  constructor(private readonly base: Fields) {}
  private write(level: Level, msg: string, fields?: Fields) {
    const line = JSON.stringify({
      level,
      msg: scrub(msg),
      time: new Date().toISOString(),
      ...(clean({ ...this.base, ...fields }) as Fields),
    });
    if (level === "error" || level === "warn") console.error(line);
    else console.log(line);
  }
  debug(msg: string, fields?: Fields) {
    this.write("debug", msg, fields);
  }
  info(msg: string, fields?: Fields) {
    this.write("info", msg, fields);
  }
  warn(msg: string, fields?: Fields) {
    this.write("warn", msg, fields);
  }
  error(msg: string, fields?: Fields) {
    this.write("error", msg, fields);
  }
  child(fields: Fields): Logger {
    return new JsonLogger({ ...this.base, ...fields });
  }
}

/** Creates a logger writing JSON lines to stdout (info, debug) and stderr (warn, error). */
export function createLogger(base: Fields = {}): Logger {
  return new JsonLogger(base);
}
