/**
 * The MercadoPago applications of a local stack: one throwaway application per country site for
 * `MP_APPS` (`deno task dev` runs MLA and MLB; `STACK_MP_SITES` picks others), and the
 * applications the sandbox knows, read back from `MP_APPS` or from the single-app variables.
 */
import type { SandboxApp } from "./sandbox.ts";
import { isSite, MP_SITES, type MpSite } from "./sandbox/wire.ts";

export type { MpSite };

/** The sites `deno task dev` configures when `STACK_MP_SITES` is unset. */
const DEV_SITES: readonly MpSite[] = ["MLA", "MLB"];

/** The site whose application `throwawayApps` gives two webhook secrets (a rotation underway). */
const ROTATING_SITE: MpSite = "MLB";

/**
 * The sites a stack runs one application each for, from `STACK_MP_SITES` (comma-separated, e.g.
 * `MLA,MLB,MLM`; `single` or unset in the test profile: the single-app variables, no `MP_APPS`).
 * Unset, the dev profile runs {@link DEV_SITES}. Throws naming the variable on an unknown or
 * repeated site.
 */
export function stackSites(raw: string | undefined, profile: string): MpSite[] {
  const value = (raw ?? (profile === "dev" ? DEV_SITES.join(",") : "single")).trim();
  if (value === "" || value === "single") return [];
  const sites = value.split(",").map((s) => s.trim());
  const bad = sites.find((s) => !isSite(s));
  if (bad !== undefined) {
    throw new Error(`STACK_MP_SITES: ${JSON.stringify(bad)} is not one of ${MP_SITES.join(", ")}`);
  }
  if (new Set(sites).size !== sites.length) throw new Error("STACK_MP_SITES: a site is repeated");
  return sites as MpSite[];
}

/** One `MP_APPS` entry, as the functions read it. */
interface MpAppEntry {
  client_id: string;
  client_secret: string;
  webhook_secrets: string[];
  redirect_uri?: string;
  auth_url?: string;
  pkce?: boolean;
}

/**
 * One throwaway application per site for `MP_APPS` (numeric client ids, random secrets), each
 * with the stack's redirect URI, authorization URL and PKCE on; {@link ROTATING_SITE}'s has two
 * webhook secrets, every other one has one.
 */
export function throwawayApps(
  sites: readonly MpSite[],
  opts: {
    redirectUri: string;
    authUrl: string;
    random: { id: () => string; secret: () => string };
  },
): Record<string, MpAppEntry> {
  const ids = new Set<string>();
  const entries = sites.map((site) => {
    let id = opts.random.id();
    while (ids.has(id)) id = opts.random.id();
    ids.add(id);
    const secrets = site === ROTATING_SITE ? 2 : 1;
    return [site, {
      client_id: id,
      client_secret: opts.random.secret(),
      webhook_secrets: Array.from({ length: secrets }, () => opts.random.secret()),
      redirect_uri: opts.redirectUri,
      auth_url: opts.authUrl,
      pkce: true,
    }] as const;
  });
  return Object.fromEntries(entries);
}

/**
 * The applications the sandbox knows from a stack's environment: every entry of `MP_APPS` (in
 * its order: the first is the default), or else the single app of `MP_CLIENT_ID`,
 * `MP_CLIENT_SECRET` and `MP_WEBHOOK_SECRET` at site `MP_SITE_ID` (default `MLA`). `multi` says
 * the applications came from `MP_APPS`. Throws naming the variable and field, never a value.
 */
export function sandboxApps(
  env: (name: string) => string | undefined,
): { apps: SandboxApp[]; multi: boolean } {
  const raw = env("MP_APPS");
  if (raw === undefined || raw.trim() === "") {
    const clientId = env("MP_CLIENT_ID");
    const clientSecret = env("MP_CLIENT_SECRET");
    if (!clientId || !clientSecret) throw new Error("MP_CLIENT_ID and MP_CLIENT_SECRET are needed");
    const siteId = env("MP_SITE_ID") || "MLA";
    if (!isSite(siteId)) throw new Error("MP_SITE_ID: not a MercadoPago site");
    const secret = env("MP_WEBHOOK_SECRET");
    return {
      apps: [{ siteId, clientId, clientSecret, webhookSecrets: secret ? [secret] : [] }],
      multi: false,
    };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new Error("MP_APPS: not JSON");
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error("MP_APPS: not a JSON object keyed by site");
  }
  const apps = Object.entries(parsed as Record<string, unknown>).map(([site, entry]) => {
    const e = (entry ?? {}) as Record<string, unknown>;
    const where = `MP_APPS.${site}`;
    if (!isSite(site)) throw new Error(`${where}: not a MercadoPago site`);
    if (typeof e.client_id !== "string" || e.client_id === "") {
      throw new Error(`${where}.client_id: missing`);
    }
    if (typeof e.client_secret !== "string" || e.client_secret === "") {
      throw new Error(`${where}.client_secret: missing`);
    }
    const secrets = e.webhook_secrets;
    if (!Array.isArray(secrets) || !secrets.every((s) => typeof s === "string" && s !== "")) {
      throw new Error(`${where}.webhook_secrets: not a list of secrets`);
    }
    return {
      siteId: site,
      clientId: e.client_id,
      clientSecret: e.client_secret,
      webhookSecrets: secrets as string[],
    };
  });
  if (apps.length === 0) throw new Error("MP_APPS: no application");
  if (new Set(apps.map((a) => a.clientId)).size !== apps.length) {
    throw new Error("MP_APPS: two sites share a client_id");
  }
  return { apps, multi: true };
}
