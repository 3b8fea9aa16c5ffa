/**
 * The local stand-in for `supabase functions serve`: reads the functions from
 * supabase/config.toml, imports each entrypoint's default-exported `fetch`, and routes
 * `/functions/v1/<name>` to it.
 */
import { parse } from "smol-toml";

/** A function's `fetch`, as its index.ts default-exports it. */
export type Fetch = (req: Request) => Response | Promise<Response>;

const SUPABASE_DIR = new URL("../supabase/", import.meta.url);

/** Reads the `[functions.*]` blocks of supabase/config.toml: name → entrypoint URL. */
export async function functionEntrypoints(): Promise<Map<string, URL>> {
  const toml = parse(await Deno.readTextFile(new URL("config.toml", SUPABASE_DIR))) as {
    functions?: Record<string, { entrypoint?: string; enabled?: boolean }>;
  };
  const out = new Map<string, URL>();
  for (const [name, fn] of Object.entries(toml.functions ?? {})) {
    if (fn.enabled === false) continue;
    out.set(name, new URL(fn.entrypoint ?? `./functions/${name}/index.ts`, SUPABASE_DIR));
  }
  return out;
}

/** Imports every function and returns the gateway's handler; `extra` maps path prefixes. */
export async function createGateway(extra: Record<string, Fetch> = {}): Promise<Fetch> {
  const functions = new Map<string, Fetch>();
  for (const [name, url] of await functionEntrypoints()) {
    const mod = await import(url.href);
    functions.set(name, mod.default.fetch);
  }
  return async (req) => {
    const path = new URL(req.url).pathname;
    const match = path.match(/^\/functions\/v1\/([a-z0-9-]+)(?:\/|$)/);
    if (match) {
      const fn = functions.get(match[1]);
      if (fn) return await fn(req);
      return Response.json({ error: { code: "not_found", message: "no such function" } }, {
        status: 404,
      });
    }
    for (const [prefix, fn] of Object.entries(extra)) {
      if (path === prefix || path.startsWith(`${prefix}/`)) return await fn(req);
    }
    if (path === "/health") return Response.json({ ok: true });
    return new Response("not found", { status: 404 });
  };
}
