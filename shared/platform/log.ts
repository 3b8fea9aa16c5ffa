/**
 * One-JSON-object-per-line logging, the shape Supabase's log explorer parses.
 * Every line has `level`, `msg` and the ids passed as fields; secrets are scrubbed.
 */

/** Severity of a log line. */
export type Level = "debug" | "info" | "warn" | "error";

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

const SECRET_FIELD =
  /^(access_token|refresh_token|token|code|code_verifier|client_secret|secret|key|apikey|authorization|password)$/i;
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
  if (value instanceof Error) return { name: value.name, message: scrub(value.message) };
  if (depth > 4 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => clean(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_FIELD.test(k) ? "[redacted]" : clean(v, depth + 1);
  }
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
