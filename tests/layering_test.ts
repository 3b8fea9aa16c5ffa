/**
 * The architecture's written rules, checked on the tree (README, "Who may import whom";
 * docs/invariants.md, invariant 1): `shared/sync/` is the only writer of the cache, so no other
 * production module may import a cache-writing function of `shared/store/clients.ts`.
 */
import assert from "node:assert/strict";
import { SCHEDULED_JOBS } from "../shared/schedules/jobs.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const CACHE_WRITERS = ["writeCache", "writeCacheBatch", "clearOrphanedCache"];
const PRODUCTION = ["shared", "supabase/functions", "client", "scripts", "local", "tooling"];

/** Every .ts file under `dir` (relative to the repository root). */
async function* sources(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(`${ROOT}${dir}`)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* sources(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

/** The names a module imports from `shared/store/clients.ts`. */
function namesImportedFromClientsStore(text: string): string[] {
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

// ---------------------------------------------------------------- deployed code and tooling

/** The room of the CLI tooling `scripts/`, `local/` and the tests use (never deployed). */
const TOOLING = "tooling/";

/** The repository paths `path`'s relative imports name (bare and npm: specifiers aside). */
async function relativeImports(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const { from } of importStatements(await Deno.readTextFile(`${ROOT}${path}`))) {
    if (from.startsWith(".")) out.push(new URL(from, `file:///${path}`).pathname.slice(1));
  }
  return out;
}

Deno.test("deployed code never reaches the tooling room, nor runs a subprocess; shared/ and the functions import no tooling", async () => {
  const deployed = await deployedModules();
  assert.ok(deployed.has("shared/operations/health.ts"), "the walk saw the functions");
  const reached = [...deployed].filter((path) => path.startsWith(TOOLING));
  assert.deepEqual(reached, [], "tooling modules reachable from supabase/functions/*/index.ts");
  const spawning: string[] = [];
  for (const path of deployed) {
    if (/\bDeno\.Command\b/.test(withoutComments(await Deno.readTextFile(`${ROOT}${path}`)))) {
      spawning.push(path);
    }
  }
  assert.deepEqual(spawning, [], "deployed modules that run a subprocess (that is tooling)");
  const offenders: string[] = [];
  let scanned = 0;
  for (const top of ["shared", "supabase/functions"]) {
    for await (const path of sources(top)) {
      scanned++;
      for (const to of await relativeImports(path)) {
        if (to.startsWith(TOOLING)) offenders.push(`${path}: ${to}`);
      }
    }
  }
  assert.ok(scanned > 50, "the scan saw the tree");
  assert.deepEqual(offenders, [], "shared/ and function modules that import the tooling room");
});

Deno.test("the tooling room imports only shared/ and itself (so scripts/ that use it never reach local/)", async () => {
  const offenders: string[] = [];
  let scanned = 0;
  for await (const path of sources("tooling")) {
    scanned++;
    for (const to of await relativeImports(path)) {
      if (!to.startsWith(TOOLING) && !to.startsWith("shared/")) offenders.push(`${path}: ${to}`);
    }
  }
  assert.ok(scanned >= 3, "the scan saw the tooling room");
  assert.deepEqual(offenders, []);
});

// ---------------------------------------------------------------- handlers alike

Deno.test("handlers alike: no handler imports the store, queries a database, validates or records by hand; exactly the declared jobs are defineScheduledFunction(runRecordOf(their own name))", async () => {
  const declared = new Set(SCHEDULED_JOBS.map((job) => job.name));
  const offenders: string[] = [];
  const scheduled: string[] = [];
  for await (const entry of Deno.readDir(`${ROOT}supabase/functions`)) {
    if (!entry.isDirectory) continue;
    const path = `supabase/functions/${entry.name}/handler.ts`;
    const text = await Deno.readTextFile(`${ROOT}${path}`);
    const code = withoutComments(text);
    for (const { from, typeOnly } of importStatements(text)) {
      if (/(^|\/)shared\/store\//.test(from) && !typeOnly) offenders.push(`${path}: ${from}`);
    }
    if (/\bctx\.(admin|backend)\b|\bsql`/.test(code)) offenders.push(`${path}: queries a database`);
    if (/\b(validate|recordRun)\s*\(/.test(code)) {
      offenders.push(`${path}: checks or records by hand`);
    }
    if (/\bdefineScheduledFunction\(/.test(code)) {
      scheduled.push(entry.name);
      const job = /\bjob:\s*runRecordOf\("([^"]+)"\)/.exec(code)?.[1];
      if (job !== entry.name) offenders.push(`${path}: records its runs as ${job}`);
    }
  }
  assert.ok(scheduled.length >= 4, "the scan saw the scheduled handlers");
  assert.deepEqual(offenders, []);
  assert.deepEqual(scheduled.sort(), [...declared].sort(), "scheduled handlers vs declared jobs");
});

// ---------------------------------------------------------------- one error vocabulary

/** The HTTP edge: the one module that turns an error's code into a status. */
const EDGE = "shared/platform/http.ts";
/** A function's entry may import the edge (to declare itself with `defineFunction`). */
const ENTRY = /^supabase\/functions\/[^/]+\/handler\.ts$/;
/** Where the failures are defined: the platform, and the MercadoPago adapter (`MpError`). */
const FAILURE_ROOMS = ["shared/platform/", "shared/mercadopago/"];
/**
 * Thrown in domain code besides the vocabulary: the MercadoPago adapter's failure, which every
 * flow turns into a result, an audited state or a `DomainError` (docs/contract.md, "mp-refresh").
 */
const ADAPTER_FAILURES = ["MpError"];

/** One import or re-export of a module: what it names and whether it brings in types only. */
interface ImportStatement {
  from: string;
  typeOnly: boolean;
}

/** Every import and re-export of a module (static, dynamic, side-effect), comments aside. */
function importStatements(text: string): ImportStatement[] {
  const code = withoutComments(text);
  const found: ImportStatement[] = [];
  const re =
    /\b(?:import|export)\s+(type\s+)?([\w$\s{},*]*?)\s*from\s*["']([^"']+)["']|\bimport\s*\(\s*["']([^"']+)["']|\bimport\s+["']([^"']+)["']/g;
  for (const m of code.matchAll(re)) {
    if (m[3] !== undefined) {
      const braces = /^\{([^}]*)\}$/.exec(m[2].trim());
      const names = braces ? braces[1].split(",").map((n) => n.trim()).filter(Boolean) : [];
      const typeOnly = !!m[1] || (names.length > 0 && names.every((n) => /^type\s/.test(n)));
      found.push({ from: m[3], typeOnly });
    } else found.push({ from: (m[4] ?? m[5])!, typeOnly: false });
  }
  return found;
}

/** The text without its comments (so a comment naming a class or a module is not code). */
function withoutComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`\\])\/\/[^\n]*/g, "$1");
}

/** What a module throws: each `throw new X(…)` as `X`, each thrown literal as `literal`. */
function thrownKinds(text: string): string[] {
  const code = withoutComments(text);
  const kinds: string[] = [];
  for (
    const m of code.matchAll(/\bthrow\s+(?:new\s+([\w$.]+)|(["'`\d[{]|true\b|false\b|null\b))/g)
  ) {
    kinds.push(m[1] ?? "literal");
  }
  return kinds;
}

/** The classes a module declares without exporting them (errors it throws and catches itself). */
function privateClasses(text: string): string[] {
  return [...withoutComments(text).matchAll(/^class\s+([\w$]+)/gm)].map((m) => m[1]);
}

/** The modules the deployed functions run: every file reachable from supabase/functions/*\/index.ts. */
async function deployedModules(): Promise<Set<string>> {
  const seen = new Set<string>();
  const queue: string[] = [];
  for await (const entry of Deno.readDir(`${ROOT}supabase/functions`)) {
    if (entry.isDirectory) queue.push(`supabase/functions/${entry.name}/index.ts`);
  }
  while (queue.length > 0) {
    const path = queue.pop()!;
    if (seen.has(path)) continue;
    seen.add(path);
    for (const { from } of importStatements(await Deno.readTextFile(`${ROOT}${path}`))) {
      if (!from.startsWith(".")) continue;
      queue.push(new URL(from, `file:///${path}`).pathname.slice(1));
    }
  }
  return seen;
}

/** The classes the vocabulary's one reading of an error (`failureOf` in shared/platform/errors.ts) knows. */
async function vocabulary(): Promise<string[]> {
  const text = await Deno.readTextFile(`${ROOT}shared/platform/errors.ts`);
  const body = text.slice(text.indexOf("export function failureOf"));
  return [...body.matchAll(/instanceof\s+([\w$]+)/g)].map((m) => m[1]);
}

Deno.test("the scans see imports of every form and what is thrown, not comments", () => {
  const text = [
    `import { type Call, json as j,\n  uuid } from "../platform/http.ts";`,
    `import type { Logger } from "./log.ts";`,
    `import { type A, type B } from "./types.ts";`,
    `export { validate } from "./input.ts";`,
    `const m = await import("./lazy.ts");`,
    `import "./side.ts";`,
    `// import { x } from "./commented.ts"; throw new Hidden("no")`,
    `/** throw new AlsoHidden() */`,
    `if (a) throw new DomainError("invalid_request", "x"); else throw err;`,
    `throw 0; throw "text"; throw new MpError("bad_response", "y");`,
    `class Private extends Error {}`,
    `export class Public extends Error {}`,
  ].join("\n");
  assert.deepEqual(importStatements(text), [
    { from: "../platform/http.ts", typeOnly: false },
    { from: "./log.ts", typeOnly: true },
    { from: "./types.ts", typeOnly: true },
    { from: "./input.ts", typeOnly: false },
    { from: "./lazy.ts", typeOnly: false },
    { from: "./side.ts", typeOnly: false },
  ]);
  assert.deepEqual(thrownKinds(text), ["DomainError", "literal", "literal", "MpError"]);
  assert.deepEqual(privateClasses(text), ["Private"]);
});

Deno.test("one error vocabulary: nothing outside the HTTP edge and the function entries imports shared/platform/http.ts (types aside) or names HttpError", async () => {
  const offenders: string[] = [];
  let scanned = 0;
  for (const top of PRODUCTION) {
    for await (const path of sources(top)) {
      scanned++;
      if (path === EDGE) continue;
      const text = await Deno.readTextFile(`${ROOT}${path}`);
      if (/\bHttpError\b/.test(withoutComments(text))) offenders.push(`${path}: HttpError`);
      if (ENTRY.test(path)) continue;
      for (const { from, typeOnly } of importStatements(text)) {
        if (/(^|\/)platform\/http\.ts$/.test(from) && !typeOnly) offenders.push(`${path}: ${from}`);
      }
    }
  }
  assert.ok(scanned > 50, "the scan saw the tree");
  assert.deepEqual(offenders, [], "modules that reach for the edge's errors or statuses");
});

Deno.test("one error vocabulary: deployed domain code throws only DomainError and the failures the edge knows", async () => {
  const known = await vocabulary();
  assert.ok(known.includes("DomainError"), `failureOf knows ${known.join(", ")}`);
  const deployed = await deployedModules();
  assert.ok(
    deployed.has("shared/events/pull.ts") && deployed.size > 40,
    "the walk saw the functions",
  );
  const offenders: string[] = [];
  for (const path of deployed) {
    if (path === EDGE || FAILURE_ROOMS.some((room) => path.startsWith(room))) continue;
    const text = await Deno.readTextFile(`${ROOT}${path}`);
    const allowed = [...known, ...ADAPTER_FAILURES, ...privateClasses(text)];
    for (const kind of thrownKinds(text)) {
      if (!allowed.includes(kind)) offenders.push(`${path}: throws ${kind}`);
    }
  }
  assert.deepEqual(offenders, [], "throws outside the vocabulary");
});

// ---------------------------------------------------------------- citations of the docs

/** Where the tree cites its docs: every source, SQL and Markdown file (tooling state aside). */
const CITING = [".ts", ".mjs", ".sql", ".md"];
const NOT_SCANNED = new Set([".git", ".local", "node_modules"]);

/** Every file of the repository with one of `CITING`'s endings. */
async function* citingFiles(dir = ""): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(`${ROOT}${dir}`)) {
    if (NOT_SCANNED.has(entry.name)) continue;
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory) yield* citingFiles(path);
    else if (CITING.some((end) => entry.name.endsWith(end))) yield path;
  }
}

/**
 * Each `docs/<file>.md, "<heading>"` a text cites, comment markers between its lines aside (a
 * citation may wrap): the doc's file name and the heading as cited.
 */
function citedHeadings(text: string): { doc: string; heading: string }[] {
  const flat = text.replace(/\s*\n\s*(?:\*(?!\/)|\/\/|--|#)?\s*/g, " ");
  return [...flat.matchAll(/\bdocs\/([\w-]+\.md), "([^"]+)"/g)].map((m) => ({
    doc: m[1],
    heading: m[2],
  }));
}

/**
 * The names a Markdown document's headings may be cited by: each heading without its section
 * number (`## 7. Events to the platform` → "Events to the platform"), and its short title, the part
 * before a colon or a parenthesis (`## Bursts: a run …` → "Bursts"). Code blocks are not headings.
 */
function headingNames(markdown: string): Set<string> {
  const names = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.+?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const title = m[1].replace(/^\d+(?:\.\d+)*\.?\s+/, "");
    names.add(title);
    const cut = title.search(/:\s|\s\(/);
    if (cut > 0) names.add(title.slice(0, cut));
  }
  return names;
}

Deno.test("the citation scan reads wrapped citations and headings by number, short title and fences", () => {
  const docs = "docs/"; // not written out here, so that this file cites nothing itself
  const code = [
    `/** The answer (${docs}contract.md, "mp-events"; ${docs}events.md, "Pull"). */`,
    ` * Events (${docs}contract.md, "Events to the`,
    ` * platform"), and ${docs}contract.md,`,
    ` * "Errors" once more; ${docs}contract.md, errors is no citation.`,
  ].join("\n");
  assert.deepEqual(citedHeadings(code), [
    { doc: "contract.md", heading: "mp-events" },
    { doc: "events.md", heading: "Pull" },
    { doc: "contract.md", heading: "Events to the platform" },
    { doc: "contract.md", heading: "Errors" },
  ]);
  const doc = [
    "# Title",
    "## 7. Events to the platform",
    "### 7.2 mp-events",
    "## Bursts: a run continues itself (`lanes.ts`)",
    "## The outbox (Admin DB)",
    "```sh",
    "# not a heading",
    "```",
  ].join("\n");
  assert.deepEqual([...headingNames(doc)].sort(), [
    "Bursts",
    "Bursts: a run continues itself (`lanes.ts`)",
    "Events to the platform",
    "The outbox",
    "The outbox (Admin DB)",
    "Title",
    "mp-events",
  ]);
});

Deno.test('every docs/<file>.md, "<heading>" cited in the tree names a heading of that file; nothing cites the SPEC outside the repository', async () => {
  const spec = ["SPEC", "§"].join(" "); // so that this file does not cite it
  const headings = new Map<string, Set<string>>();
  for await (const entry of Deno.readDir(`${ROOT}docs`)) {
    if (entry.name.endsWith(".md")) {
      headings.set(entry.name, headingNames(await Deno.readTextFile(`${ROOT}docs/${entry.name}`)));
    }
  }
  assert.ok(headings.get("contract.md")?.has("Events to the platform"), "the contract was read");
  const broken: string[] = [];
  const outside: string[] = [];
  let cited = 0;
  let citedInSql = 0;
  for await (const path of citingFiles()) {
    const text = await Deno.readTextFile(`${ROOT}${path}`);
    for (const { doc, heading } of citedHeadings(text)) {
      cited++;
      if (path.endsWith(".sql")) citedInSql++;
      const names = headings.get(doc);
      if (!names) broken.push(`${path}: docs/${doc} does not exist`);
      else if (!names.has(heading)) broken.push(`${path}: docs/${doc} has no heading "${heading}"`);
    }
    // Migrations too: a changed comment of an applied one is set again by a newer migration.
    if (text.includes(spec)) outside.push(path);
  }
  assert.ok(cited > 30, `the scan saw the citations (${cited})`);
  assert.ok(citedInSql >= 3, `the scan saw the migrations' citations (${citedInSql})`);
  assert.deepEqual(broken, [], "citations of headings that do not exist");
  assert.deepEqual(outside, [], "citations of SPEC, a document outside the repository");
});
