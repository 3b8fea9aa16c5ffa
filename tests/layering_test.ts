/**
 * The architecture's written rules, checked on the tree (README, "Who may import whom";
 * docs/invariants.md, invariant 1): `shared/sync/` is the only writer of the cache, so no other
 * production module may import a cache-writing function of `shared/store/clients.ts`.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const CACHE_WRITERS = ["writeCache", "writeCacheBatch", "clearOrphanedCache"];
const PRODUCTION = ["shared", "supabase/functions", "client", "scripts", "local"];

/** Every .ts file under `dir` (relative to the repository root). */
async function* sources(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(`${ROOT}${dir}`)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* sources(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

/** The names a module imports from `shared/store/clients.ts`. */
export function namesImportedFromClientsStore(text: string): string[] {
  const names: string[] = [];
  const re = /import\s*(?:type\s*)?\{([^}]*)\}\s*from\s*"[^"]*store\/clients\.ts"/g;
  for (const m of text.matchAll(re)) {
    for (const part of m[1].split(",")) {
      const name = part.trim().replace(/^type\s+/, "").split(/\s+as\s+/)[0];
      if (name) names.push(name);
    }
  }
  return names;
}

Deno.test("the import scan sees named, typed and renamed imports of the clients store", () => {
  const text =
    `import { type CacheWrite, writeCache as w,\n  readCache } from "../store/clients.ts";`;
  assert.deepEqual(namesImportedFromClientsStore(text), ["CacheWrite", "writeCache", "readCache"]);
});

Deno.test("invariant 1: only shared/sync/ imports a cache-writing function of the clients store", async () => {
  const offenders: string[] = [];
  let scanned = 0;
  for (const top of PRODUCTION) {
    for await (const path of sources(top)) {
      scanned++;
      if (path.startsWith("shared/sync/") || path === "shared/store/clients.ts") continue;
      const names = namesImportedFromClientsStore(await Deno.readTextFile(`${ROOT}${path}`));
      const writers = names.filter((n) => CACHE_WRITERS.includes(n));
      if (writers.length > 0) offenders.push(`${path}: ${writers.join(", ")}`);
    }
  }
  assert.ok(scanned > 50, "the scan saw the tree");
  assert.deepEqual(offenders, [], "modules outside shared/sync/ that write the cache");
});

Deno.test("operator commands in scripts/ import nothing from local/ (the stand-ins for hosted Supabase and MercadoPago)", async () => {
  const offenders: string[] = [];
  for await (const path of sources("scripts")) {
    const text = await Deno.readTextFile(`${ROOT}${path}`);
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)) {
      if (/(^|\/)local\//.test(m[1])) offenders.push(`${path}: ${m[1]}`);
    }
  }
  assert.deepEqual(offenders, []);
});
