/**
 * The functions' configuration (docs/contract.md, common rules), read and validated once from the environment.
 * Nothing else in the project reads environment variables.
 */

/** One key of the `MP_TOKEN_KEYS` ring: its id and 32 raw bytes. */
export interface KeySpec {
  id: string;
  raw: Uint8Array;
}

/** MercadoPago's sites, one per country (docs/contract.md, "Applications and sites"). */
export const MP_SITES = ["MLA", "MLB", "MLM", "MLC", "MCO", "MLU", "MPE"] as const;

/** One MercadoPago site (country): `MLA` Argentina, `MLB` Brazil, `MLM` Mexico, … */
type MpSite = (typeof MP_SITES)[number];

/** Whether `value` is one of MercadoPago's sites. */
export function isMpSite(value: unknown): value is MpSite {
  return typeof value === "string" && (MP_SITES as readonly string[]).includes(value);
}

/**
 * One MercadoPago application: the site it serves, its credentials and webhook secrets (any of
 * them verifies a notification), where its sellers authorize it, and how MercadoPago is reached
 * (`apiUrl` and `timeoutMs` are the same for every application). `clientSecret` and
 * `redirectUri` are undefined only in the single-app configuration when their variable is unset
 * (a function that needs them is then misconfigured).
 */
export interface MpApp {
  site: MpSite;
  clientId: string;
  clientSecret?: string;
  webhookSecrets: string[];
  redirectUri?: string;
  authUrl: string;
  pkce: boolean;
  apiUrl: string;
  timeoutMs: number;
}

/** Validated configuration; a field is undefined when its variable is unset or malformed. */
export interface Config {
  backendDbUrl?: string;
  adminDbUrl?: string;
  tokenKeys?: KeySpec[];
  /**
   * The MercadoPago applications by site: `MP_APPS`, or the single app of `MP_CLIENT_ID`…
   * serving `MP_SITE_ID` (empty when `MP_CLIENT_ID` is unset or `MP_APPS` is malformed).
   */
  mpApps: ReadonlyMap<MpSite, MpApp>;
  /**
   * The single/default application's site: where an account without a site of its own is
   * served, and the app of `mp-webhook` without `?app` (undefined when it cannot be told).
   */
  mpDefaultSite?: MpSite;
  /** Whether the applications come from `MP_APPS` (errors then name it and the site). */
  mpAppsVariable: boolean;
  mpApiUrl: string;
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

/**
 * Needs met by every MercadoPago application rather than by one field: `mpClientId` (there is an
 * application), `mpClientSecret`, `mpRedirectUri`, `mpWebhookSecret` (each application has one).
 */
const APP_NEEDS: readonly Need[] = [
  "mpClientId",
  "mpClientSecret",
  "mpRedirectUri",
  "mpWebhookSecret",
];

/** The environment variables behind each field: the first is named when it is missing. */
const VARIABLES: Record<Need, string[]> = {
  backendDbUrl: ["BACKEND_DB_URL", "SUPABASE_DB_URL", "DB_TIMEOUT_MS"],
  adminDbUrl: ["ADMIN_DB_URL", "DB_TIMEOUT_MS"],
  tokenKeys: ["MP_TOKEN_KEYS"],
  mpClientId: [
    "MP_CLIENT_ID",
    "MP_APPS",
    "MP_SITE_ID",
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

function boolean(
  env: Record<string, string | undefined>,
  name: string,
  problems: Map<string, string>,
): boolean {
  const value = env[name]?.trim().toLowerCase();
  if (value && value !== "true" && value !== "false") problems.set(name, "neither true nor false");
  return value === "true";
}

/** The fields an `MP_APPS` entry may have. */
const APP_ENTRY_FIELDS = [
  "client_id",
  "client_secret",
  "webhook_secrets",
  "redirect_uri",
  "auth_url",
  "pkce",
];

/** Whether `value` parses as an absolute URL. */
function isUrl(value: unknown): value is string {
  if (typeof value !== "string") return false;
  try {
    new URL(value);
    return true;
  } catch {
    return false;
  }
}

const nonEmpty = (value: unknown): value is string =>
  typeof value === "string" && value.trim() !== "";

/**
 * Parses `MP_APPS`: a JSON object keyed by site, each entry `{"client_id", "client_secret",
 * "webhook_secrets": [...], "redirect_uri"?, "auth_url"?, "pkce"?}`; the optional fields default
 * to `MP_REDIRECT_URI`, `MP_AUTH_URL` and `MP_OAUTH_PKCE`. Throws a message naming the site and
 * field (e.g. `MLB.client_secret is not a non-empty string`), never a value.
 */
function parseMpApps(
  text: string,
  defaults: Pick<MpApp, "authUrl" | "pkce" | "apiUrl" | "timeoutMs"> & { redirectUri?: string },
): Map<MpSite, MpApp> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error("not a JSON object keyed by site");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error("not a JSON object keyed by site");
  }
  const apps = new Map<MpSite, MpApp>();
  const owners = new Map<string, MpSite>();
  for (const [site, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (!isMpSite(site)) {
      throw new Error(`${site.slice(0, 8)} is not a site (${MP_SITES.join(", ")})`);
    }
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      throw new Error(`${site} is not an object`);
    }
    const e = entry as Record<string, unknown>;
    const unknown = Object.keys(e).find((k) => !APP_ENTRY_FIELDS.includes(k));
    if (unknown !== undefined) {
      throw new Error(`${site} has an unknown field ${unknown.slice(0, 32)}`);
    }
    if (!nonEmpty(e.client_id)) throw new Error(`${site}.client_id is not a non-empty string`);
    if (!nonEmpty(e.client_secret)) {
      throw new Error(`${site}.client_secret is not a non-empty string`);
    }
    const secrets = e.webhook_secrets;
    if (!Array.isArray(secrets) || secrets.length === 0 || !secrets.every(nonEmpty)) {
      throw new Error(`${site}.webhook_secrets is not a non-empty array of non-empty strings`);
    }
    for (const field of ["redirect_uri", "auth_url"]) {
      if (e[field] !== undefined && !isUrl(e[field])) {
        throw new Error(`${site}.${field} is not a URL`);
      }
    }
    if (e.pkce !== undefined && typeof e.pkce !== "boolean") {
      throw new Error(`${site}.pkce is not true or false`);
    }
    const clientId = e.client_id.trim();
    const other = owners.get(clientId);
    if (other) throw new Error(`${site}.client_id is also ${other}'s`);
    owners.set(clientId, site);
    apps.set(site, {
      site,
      clientId,
      clientSecret: e.client_secret.trim(),
      webhookSecrets: secrets.map((w: string) => w.trim()),
      redirectUri: (e.redirect_uri as string | undefined) ?? defaults.redirectUri,
      authUrl: (e.auth_url as string | undefined) ?? defaults.authUrl,
      pkce: (e.pkce as boolean | undefined) ?? defaults.pkce,
      apiUrl: defaults.apiUrl,
      timeoutMs: defaults.timeoutMs,
    });
  }
  if (apps.size === 0) throw new Error("has no application");
  return apps;
}

/**
 * The applications and the default site: `MP_APPS` when set, else the single app of
 * `MP_CLIENT_ID`/`MP_CLIENT_SECRET`/`MP_WEBHOOK_SECRET` serving `MP_SITE_ID` (default `MLA`).
 * With `MP_APPS`, the default site is `MP_SITE_ID` (which must have an application there), else
 * `MLA` when it has one (`MP_SITE_ID`'s default: the single app's site before `MP_APPS`), else
 * its first entry.
 */
function mpApplications(
  env: Record<string, string | undefined>,
  problems: Map<string, string>,
  apiUrl: string,
  timeoutMs: number,
): Pick<Config, "mpApps" | "mpDefaultSite" | "mpAppsVariable"> {
  const defaults = {
    redirectUri: url(env, "MP_REDIRECT_URI", problems),
    authUrl: url(env, "MP_AUTH_URL", problems) ?? "https://auth.mercadopago.com",
    pkce: boolean(env, "MP_OAUTH_PKCE", problems),
    apiUrl,
    timeoutMs,
  };
  const siteText = env.MP_SITE_ID?.trim();
  let site: MpSite | undefined = "MLA";
  if (siteText && !isMpSite(siteText)) {
    problems.set("MP_SITE_ID", `not one of ${MP_SITES.join(", ")}`);
    site = undefined;
  } else if (siteText) site = siteText as MpSite;
  const appsText = env.MP_APPS?.trim();
  if (!appsText) {
    const clientId = env.MP_CLIENT_ID?.trim();
    const apps = new Map<MpSite, MpApp>();
    if (clientId && site) {
      const secret = env.MP_WEBHOOK_SECRET?.trim();
      apps.set(site, {
        site,
        clientId,
        clientSecret: env.MP_CLIENT_SECRET?.trim() || undefined,
        webhookSecrets: secret ? [secret] : [],
        ...defaults,
      });
    }
    return { mpApps: apps, mpDefaultSite: site, mpAppsVariable: false };
  }
  let apps: Map<MpSite, MpApp>;
  try {
    apps = parseMpApps(appsText, defaults);
  } catch (e) {
    problems.set("MP_APPS", (e as Error).message);
    return { mpApps: new Map(), mpDefaultSite: siteText ? site : undefined, mpAppsVariable: true };
  }
  if (siteText) {
    if (site && !apps.has(site)) {
      problems.set("MP_SITE_ID", `${site} has no application in MP_APPS`);
    }
    return { mpApps: apps, mpDefaultSite: site, mpAppsVariable: true };
  }
  const first = apps.has("MLA") ? "MLA" : [...apps.keys()][0];
  return { mpApps: apps, mpDefaultSite: first, mpAppsVariable: true };
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
  const backendDbUrl = url(env, "BACKEND_DB_URL", problems) ??
    url(env, "SUPABASE_DB_URL", problems);
  const mpApiUrl = url(env, "MP_API_URL", problems) ?? "https://api.mercadopago.com";
  const mpTimeoutMs = integer(env, "MP_HTTP_TIMEOUT_MS", 10_000, 100, 60_000, problems);
  return {
    backendDbUrl,
    adminDbUrl: url(env, "ADMIN_DB_URL", problems),
    tokenKeys,
    ...mpApplications(env, problems, mpApiUrl, mpTimeoutMs),
    mpApiUrl,
    appReturnUrl: url(env, "APP_RETURN_URL", problems),
    supabaseUrl: url(env, "SUPABASE_URL", problems),
    serverKeys: serverKeys(env, problems),
    refreshWindowDays: integer(env, "MP_REFRESH_WINDOW_DAYS", 60, 1, 179, problems),
    refreshConcurrency: integer(env, "MP_REFRESH_CONCURRENCY", 8, 1, 64, problems),
    mpTimeoutMs,
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
    if (APP_NEEDS.includes(need)) {
      requireApps(config, need);
      continue;
    }
    if (
      config[
        need as "backendDbUrl" | "adminDbUrl" | "tokenKeys" | "appReturnUrl" | "serverKeys"
      ] === undefined
    ) {
      throw new MisconfiguredError(VARIABLES[need][0], "not set");
    }
  }
}

/** The single-app variable behind each per-application need, and `MP_APPS`'s field for it. */
const APP_FIELDS: Record<string, { variable: string; field: string; has: (a: MpApp) => boolean }> =
  {
    mpClientSecret: {
      variable: "MP_CLIENT_SECRET",
      field: "client_secret",
      has: (a) => !!a.clientSecret,
    },
    mpRedirectUri: {
      variable: "MP_REDIRECT_URI",
      field: "redirect_uri",
      has: (a) => !!a.redirectUri,
    },
    mpWebhookSecret: {
      variable: "MP_WEBHOOK_SECRET",
      field: "webhook_secrets",
      has: (a) => a.webhookSecrets.length > 0,
    },
  };

/** A per-application need: an application exists, and each one has the field the need names. */
function requireApps(config: Config, need: Need): void {
  for (const variable of ["MP_APPS", "MP_SITE_ID"]) {
    const reason = config.problems.get(variable);
    if (reason) throw new MisconfiguredError(variable, reason);
  }
  if (config.mpApps.size === 0) {
    throw new MisconfiguredError(config.mpAppsVariable ? "MP_APPS" : "MP_CLIENT_ID", "not set");
  }
  const spec = APP_FIELDS[need];
  if (!spec) return;
  for (const app of config.mpApps.values()) {
    if (spec.has(app)) continue;
    throw config.mpAppsVariable
      ? new MisconfiguredError(
        "MP_APPS",
        `${app.site}.${spec.field} is not set (nor ${spec.variable})`,
      )
      : new MisconfiguredError(spec.variable, "not set");
  }
}

/**
 * The application that serves an account of `site` (its `mp_site_id`; null: an account connected
 * before sites were stored, served by the default site's application); undefined when that site
 * has no application in this configuration.
 */
export function appOfSite(config: Config, site: string | null): MpApp | undefined {
  const wanted = site ?? config.mpDefaultSite;
  return isMpSite(wanted) ? config.mpApps.get(wanted) : undefined;
}

/**
 * The site an account is served in: its own, or (null: an account connected before sites were
 * stored) the default site; throws `MisconfiguredError` when the default cannot be told.
 */
export function siteOf(config: Config, site: string | null): MpSite {
  if (isMpSite(site)) return site;
  for (const variable of ["MP_SITE_ID", "MP_APPS"]) {
    const reason = config.problems.get(variable);
    if (reason) throw new MisconfiguredError(variable, reason);
  }
  if (config.mpDefaultSite === undefined) {
    throw new MisconfiguredError("MP_SITE_ID", "the default site cannot be told");
  }
  return config.mpDefaultSite;
}
