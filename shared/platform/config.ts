/**
 * The functions' configuration (docs/contract.md, common rules), read and validated once from the environment.
 * Nothing else in the project reads environment variables.
 */

/** One key of the `MP_TOKEN_KEYS` ring: its id and 32 raw bytes. */
export interface KeySpec {
  id: string;
  raw: Uint8Array;
}

/** Validated configuration; a field is undefined when its variable is unset or malformed. */
export interface Config {
  backendDbUrl?: string;
  adminDbUrl?: string;
  tokenKeys?: KeySpec[];
  mpClientId?: string;
  mpClientSecret?: string;
  mpRedirectUri?: string;
  mpApiUrl: string;
  mpAuthUrl: string;
  mpOauthPkce: boolean;
  mpWebhookSecret?: string;
  appReturnUrl?: string;
  /** The project's URL (`SUPABASE_URL`, injected by Supabase): where a function reaches the others. */
  supabaseUrl?: string;
  /** Every server key that authenticates a caller (service role key and secret keys). */
  serverKeys?: string[];
  /** Tuning with defaults: refresh window, concurrency, timeouts. */
  refreshWindowDays: number;
  refreshConcurrency: number;
  mpTimeoutMs: number;
  dbTimeoutMs: number;
  /** mp-probe: verify each connected access token once per this many days (`MP_PROBE_INTERVAL_DAYS`). */
  probeIntervalDays: number;
  /** mp-probe: at most this many `/users/me` calls per second toward MercadoPago (`MP_PROBE_RATE`). */
  probeRatePerSecond: number;
  /**
   * The edge runtime's wall clock per isolate (150 s on the free plan, 400 s on paid ones);
   * 0 where nothing ends the process (a self-hosted `deno serve`).
   */
  wallClockMs: number;
  /** Where events are delivered (`PLATFORM_WEBHOOK_URL`); unset: delivery is off (events kept for mp-events). */
  platformWebhookUrl?: string;
  /** Standard Webhooks secrets `whsec_<base64>` (`PLATFORM_WEBHOOK_SECRETS`, space-separated); each one signs. */
  platformWebhookSecrets?: string[];
  /** How long one delivery attempt may take (`PLATFORM_WEBHOOK_TIMEOUT_MS`, default 15 s; tests set it low). */
  platformWebhookTimeoutMs: number;
  /** Variable name → why it is unusable (read after `NAME: `), for every malformed variable. */
  problems: Map<string, string>;
}

/** Names of the configuration fields a function can require. */
export type Need =
  | "backendDbUrl"
  | "adminDbUrl"
  | "tokenKeys"
  | "mpClientId"
  | "mpClientSecret"
  | "mpRedirectUri"
  | "mpWebhookSecret"
  | "appReturnUrl"
  | "serverKeys"
  | "platformWebhook";

/** Needs that may be unset (a feature left off) but never malformed. */
const OPTIONAL_NEEDS: readonly Need[] = ["platformWebhook"];

/** The environment variables behind each field: the first is named when it is missing. */
export const VARIABLES: Record<Need, string[]> = {
  backendDbUrl: ["BACKEND_DB_URL", "SUPABASE_DB_URL", "DB_TIMEOUT_MS"],
  adminDbUrl: ["ADMIN_DB_URL", "DB_TIMEOUT_MS"],
  tokenKeys: ["MP_TOKEN_KEYS"],
  mpClientId: [
    "MP_CLIENT_ID",
    "MP_API_URL",
    "MP_AUTH_URL",
    "MP_OAUTH_PKCE",
    "MP_HTTP_TIMEOUT_MS",
    "MP_REFRESH_WINDOW_DAYS",
    "MP_REFRESH_CONCURRENCY",
    "EDGE_WALL_CLOCK_MS",
    "MP_PROBE_INTERVAL_DAYS",
    "MP_PROBE_RATE",
  ],
  mpClientSecret: ["MP_CLIENT_SECRET"],
  mpRedirectUri: ["MP_REDIRECT_URI"],
  mpWebhookSecret: ["MP_WEBHOOK_SECRET"],
  platformWebhook: [
    "PLATFORM_WEBHOOK_URL",
    "PLATFORM_WEBHOOK_SECRETS",
    "PLATFORM_WEBHOOK_TIMEOUT_MS",
  ],
  appReturnUrl: ["APP_RETURN_URL"],
  serverKeys: ["SUPABASE_SECRET_KEYS", "SUPABASE_SERVICE_ROLE_KEY"],
};

/**
 * Raised when a function needs a variable that is missing or malformed; its message reads
 * `VARIABLE: reason` (e.g. `MP_TOKEN_KEYS: key k2 is not 32 bytes`), never with the value.
 */
export class MisconfiguredError extends Error {
  constructor(readonly variable: string, readonly reason: string) {
    super(`${variable}: ${reason}`);
    this.name = "MisconfiguredError";
  }
}

const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;

/** Parses `id:base64key[,id:base64key…]`; throws a message (never the key) when malformed. */
export function parseKeyRing(text: string): KeySpec[] {
  const ring: KeySpec[] = [];
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf(":");
    const id = part.slice(0, at);
    if (at < 1 || !KEY_ID.test(id)) {
      throw new Error("not a comma-separated list of id:base64key entries");
    }
    if (ring.some((k) => k.id === id)) throw new Error(`repeating key id ${id}`);
    let raw: Uint8Array;
    try {
      raw = Uint8Array.from(atob(part.slice(at + 1)), (c) => c.charCodeAt(0));
    } catch {
      throw new Error(`key ${id} is not base64`);
    }
    if (raw.length !== 32) throw new Error(`key ${id} is not 32 bytes`);
    ring.push({ id, raw });
  }
  if (ring.length === 0) throw new Error("empty");
  return ring;
}

function url(env: Record<string, string | undefined>, name: string, problems: Map<string, string>) {
  const value = env[name]?.trim();
  if (!value) return undefined;
  try {
    new URL(value);
    return value;
  } catch {
    problems.set(name, "not a URL");
    return undefined;
  }
}

function integer(
  env: Record<string, string | undefined>,
  name: string,
  fallback: number,
  min: number,
  max: number,
  problems: Map<string, string>,
): number {
  const value = env[name]?.trim();
  if (!value) return fallback;
  const n = Number(value);
  if (Number.isInteger(n) && n >= min && n <= max) return n;
  problems.set(name, `not an integer from ${min} to ${max}`);
  return fallback;
}

/** Shortest server key (legacy or new) accepted: anything shorter is a misconfiguration. */
export const MIN_KEY_LENGTH = 16;

function serverKeys(env: Record<string, string | undefined>, problems: Map<string, string>) {
  const keys: string[] = [];
  const role = env.SUPABASE_SERVICE_ROLE_KEY?.trim();
  if (role && role.length < MIN_KEY_LENGTH) {
    problems.set("SUPABASE_SERVICE_ROLE_KEY", `shorter than ${MIN_KEY_LENGTH} characters`);
  } else if (role) keys.push(role);
  const secret = env.SUPABASE_SECRET_KEYS?.trim();
  if (secret) {
    try {
      const parsed = JSON.parse(secret);
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw 0;
      for (const v of Object.values(parsed)) {
        if (typeof v !== "string" || v.length < MIN_KEY_LENGTH) throw 0;
        keys.push(v);
      }
    } catch {
      problems.set(
        "SUPABASE_SECRET_KEYS",
        `not a JSON object of names to keys (each key at least ${MIN_KEY_LENGTH} characters)`,
      );
    }
  }
  return keys.length > 0 ? keys : undefined;
}

/** Event delivery's variables (docs/contract.md, "mp-deliver-events"), named when malformed. */
export const WEBHOOK_VARIABLES = [
  "PLATFORM_WEBHOOK_URL",
  "PLATFORM_WEBHOOK_SECRETS",
  "PLATFORM_WEBHOOK_TIMEOUT_MS",
] as const;

/**
 * Parses `PLATFORM_WEBHOOK_SECRETS`: space-separated Standard Webhooks secrets, each `whsec_`
 * and non-empty base64; throws a message (never a secret) when malformed.
 */
export function parseWebhookSecrets(text: string): string[] {
  const secrets = text.split(/\s+/).filter(Boolean);
  if (secrets.length === 0) throw new Error("empty");
  secrets.forEach((s, i) => {
    const body = s.startsWith("whsec_") ? s.slice(6) : "";
    let raw = "";
    try {
      raw = body && /^[A-Za-z0-9+/]+={0,2}$/.test(body) ? atob(body) : "";
    } catch { /* not base64 */ }
    if (raw.length < 16) {
      throw new Error(`secret ${i + 1} is not whsec_ followed by base64 of at least 16 bytes`);
    }
  });
  return secrets;
}

function webhook(env: Record<string, string | undefined>, problems: Map<string, string>) {
  const target = url(env, "PLATFORM_WEBHOOK_URL", problems);
  if (target && !/^https?:$/.test(new URL(target).protocol)) {
    problems.set("PLATFORM_WEBHOOK_URL", "not an http or https URL");
  }
  let secrets: string[] | undefined;
  if (env.PLATFORM_WEBHOOK_SECRETS?.trim()) {
    try {
      secrets = parseWebhookSecrets(env.PLATFORM_WEBHOOK_SECRETS);
    } catch (e) {
      problems.set("PLATFORM_WEBHOOK_SECRETS", (e as Error).message);
    }
  } else if (target) {
    problems.set("PLATFORM_WEBHOOK_SECRETS", "not set, while PLATFORM_WEBHOOK_URL is");
  }
  return { platformWebhookUrl: target, platformWebhookSecrets: secrets };
}

/** Reads and validates the whole configuration from an environment snapshot. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const problems = new Map<string, string>();
  let tokenKeys: KeySpec[] | undefined;
  if (env.MP_TOKEN_KEYS?.trim()) {
    try {
      tokenKeys = parseKeyRing(env.MP_TOKEN_KEYS);
    } catch (e) {
      problems.set("MP_TOKEN_KEYS", (e as Error).message);
    }
  }
  const pkce = env.MP_OAUTH_PKCE?.trim().toLowerCase();
  if (pkce && pkce !== "true" && pkce !== "false") {
    problems.set("MP_OAUTH_PKCE", "neither true nor false");
  }
  const backendDbUrl = url(env, "BACKEND_DB_URL", problems) ??
    url(env, "SUPABASE_DB_URL", problems);
  return {
    backendDbUrl,
    adminDbUrl: url(env, "ADMIN_DB_URL", problems),
    tokenKeys,
    mpClientId: env.MP_CLIENT_ID?.trim() || undefined,
    mpClientSecret: env.MP_CLIENT_SECRET?.trim() || undefined,
    mpRedirectUri: url(env, "MP_REDIRECT_URI", problems),
    mpApiUrl: url(env, "MP_API_URL", problems) ?? "https://api.mercadopago.com",
    mpAuthUrl: url(env, "MP_AUTH_URL", problems) ?? "https://auth.mercadopago.com",
    mpOauthPkce: pkce === "true",
    mpWebhookSecret: env.MP_WEBHOOK_SECRET?.trim() || undefined,
    appReturnUrl: url(env, "APP_RETURN_URL", problems),
    supabaseUrl: url(env, "SUPABASE_URL", problems),
    serverKeys: serverKeys(env, problems),
    refreshWindowDays: integer(env, "MP_REFRESH_WINDOW_DAYS", 60, 1, 179, problems),
    refreshConcurrency: integer(env, "MP_REFRESH_CONCURRENCY", 8, 1, 64, problems),
    mpTimeoutMs: integer(env, "MP_HTTP_TIMEOUT_MS", 10_000, 100, 60_000, problems),
    dbTimeoutMs: integer(env, "DB_TIMEOUT_MS", 5_000, 100, 60_000, problems),
    probeIntervalDays: integer(env, "MP_PROBE_INTERVAL_DAYS", 7, 1, 180, problems),
    probeRatePerSecond: integer(env, "MP_PROBE_RATE", 10, 1, 100, problems),
    wallClockMs: integer(env, "EDGE_WALL_CLOCK_MS", 150_000, 0, 3_600_000, problems),
    ...webhook(env, problems),
    platformWebhookTimeoutMs: integer(
      env,
      "PLATFORM_WEBHOOK_TIMEOUT_MS",
      15_000,
      100,
      15_000,
      problems,
    ),
    problems,
  };
}

/** Throws `MisconfiguredError` naming the first needed variable that is missing or malformed. */
export function requireConfig(config: Config, needs: readonly Need[]): void {
  for (const need of needs) {
    for (const variable of VARIABLES[need]) {
      const reason = config.problems.get(variable);
      if (reason) throw new MisconfiguredError(variable, reason);
    }
    if (OPTIONAL_NEEDS.includes(need)) continue;
    if (config[need as Exclude<Need, "platformWebhook">] === undefined) {
      throw new MisconfiguredError(VARIABLES[need][0], "not set");
    }
  }
}
