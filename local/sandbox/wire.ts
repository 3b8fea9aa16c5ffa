/** MercadoPago's wire details the sandbox shares: error shape, request bodies, token formats. */

/** MercadoPago's sites, one per country: Argentina, Brazil, Mexico, Chile, Colombia, Uruguay, Peru. */
export const MP_SITES = ["MLA", "MLB", "MLM", "MLC", "MCO", "MLU", "MPE"] as const;

/** A MercadoPago site id. */
export type MpSite = typeof MP_SITES[number];

/** True for one of MercadoPago's seven site ids. */
export function isSite(value: unknown): value is MpSite {
  return (MP_SITES as readonly unknown[]).includes(value);
}

/** Token request parameters (string values only). */
export type Params = Record<string, string | undefined>;

/** MercadoPago error body: `{"message","error","status","cause":[]}` with that HTTP status. */
export function mpError(
  status: number,
  error: string,
  message: string,
  headers?: Record<string, string>,
): Response {
  return Response.json({ message, error, status, cause: [] }, { status, headers });
}

/** Token request parameters from a JSON or form body; null when malformed. */
export async function readParams(req: Request): Promise<Params | null> {
  const text = await req.text().catch(() => null);
  if (text === null) return null;
  if ((req.headers.get("content-type") ?? "").includes("application/x-www-form-urlencoded")) {
    return Object.fromEntries(new URLSearchParams(text));
  }
  const json = parseObject(text);
  if (!json) return null;
  const out: Params = {};
  for (const [k, v] of Object.entries(json)) out[k] = typeof v === "string" ? v : undefined;
  return out;
}

/** A JSON object parsed from text; null when malformed or not an object. */
export function parseObject(text: string): Record<string, unknown> | null {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/** True for a safe integer within [min, max]. */
export function isInt(v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): boolean {
  return Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
}

/** The PKCE S256 challenge of a verifier (base64url of its SHA-256). */
export async function s256(verifier: string): Promise<string> {
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)),
  );
  return btoa(String.fromCharCode(...hash)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** `bytes` random bytes as lowercase hex. */
export function hex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** `n` random decimal digits. */
export function digits(n: number): string {
  return [...crypto.getRandomValues(new Uint8Array(n))].map((b) => String(b % 10)).join("");
}
