/**
 * README.md and docs/*.md true to the tree: every repository path they name exists, every `deno
 * task` they run is a task of deno.json, every Edge Function they name is a folder of
 * supabase/functions/, every code or SQL name they quote (`defineFunction`, `mp_save_refreshed`)
 * occurs in the code, and the function tables of README ("Functions") and docs/contract.md ("The
 * functions") list every function there is.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
/** Folders that are no part of the tree the docs describe: git, tooling state, packages. */
const NOT_SCANNED = new Set([".git", ".local", "node_modules"]);
/** The top-level folders of the repository (a path in prose starts with one). */
const TOP = [
  "admin",
  "bench",
  "client",
  "docs",
  "local",
  "scripts",
  "shared",
  "supabase",
  "tests",
  "tooling",
];
/** The endings of a file name the docs may quote on its own (`lanes.ts`). */
const FILE_ENDINGS = /\.(ts|mjs|sql|md|toml|json)$/;
/** Files the docs name that a command writes, absent until it runs, with the command. */
const WRITTEN: Record<string, string> = {
  "bench/results/chaos_long_run.json": "deno task chaos:aggregate (docs/benchmarks.md)",
};
/** Where a quoted code name must occur. */
const CODE_ENDINGS = [".ts", ".mjs", ".sql", ".toml"];

/** Every path of the tree (files and folders, the latter with a trailing `/`), root-relative. */
async function treePaths(dir = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(`${ROOT}${dir}`)) {
    if (NOT_SCANNED.has(entry.name)) continue;
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory) out.push(`${path}/`, ...(await treePaths(path)));
    else out.push(path);
  }
  return out;
}

/** The documents checked: README.md and every docs/*.md. */
async function documents(): Promise<string[]> {
  const docs = ["README.md"];
  for await (const entry of Deno.readDir(`${ROOT}docs`)) {
    if (entry.name.endsWith(".md")) docs.push(`docs/${entry.name}`);
  }
  return docs.sort();
}

/** What a Markdown text names: code spans, link targets, paths in its prose, `deno task`s. */
function mentions(markdown: string): {
  spans: string[];
  paths: string[];
  tasks: string[];
} {
  const spans = [...markdown.matchAll(/(`+)([^`]+?)\1/g)].map((m) => m[2].trim());
  const links = [...markdown.matchAll(/\]\(([^)\s]+)\)/g)]
    .map((m) => m[1].replace(/#.*$/, ""))
    .filter((target) => target && !/^[a-z]+:/.test(target));
  const prose = [
    ...markdown.matchAll(new RegExp(`(?<![\\w./…-])((?:${TOP.join("|")})/[\\w./<>…*-]*)`, "g")),
  ].map((m) => m[1].replace(/[.,;:]+$/, ""));
  const quoted = spans.filter((s) => isPath(s));
  const tasks = [...markdown.matchAll(/\bdeno task ([\w:-]+)/g)].map((m) => m[1]);
  return { spans, paths: [...new Set([...quoted, ...links, ...prose])], tasks };
}

/** Whether a code span is a repository path: with a folder, or a file name of a known kind. */
function isPath(span: string): boolean {
  // URLs and placeholders of a place outside the tree: `/users/me`, `…/functions/v1/<name>`,
  // `<project_url>/functions/v1/<function>`, `<folder>/stack.lock`
  if (!/^[\w./<>…*-]+$/.test(span) || /^(\.*\/|…\/|<)/.test(span)) return false;
  if (span.startsWith(".local/")) return false; // the running stack's state, not the tree
  return span.includes("/") ? /[a-z]/.test(span) : FILE_ENDINGS.test(span);
}

/**
 * Whether `path` (as a document names it) is in `tree`: from the repository root or, without a
 * top-level folder, as the end of a path (`lanes.ts`, `store/`); `<name>`, `*` and a leading
 * `…` stand for any part of a name.
 */
function exists(path: string, tree: string[]): boolean {
  const clean = path.replace(/^\.\//, "");
  const pattern = clean
    .split(/(<[^>]*>|\*|…)/)
    .map((part) =>
      /^(<[^>]*>|\*|…)$/.test(part) ? "[^/]*" : part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")
    )
    .join("");
  const rooted = TOP.some((top) => clean.startsWith(`${top}/`));
  const re = new RegExp(rooted ? `^${pattern}/?$` : `(^|/)${pattern}/?$`);
  return tree.some((p) => re.test(p));
}

/** A quoted code name: `camelCase`, `PascalCase` with a second capital, or an `mp_` SQL name. */
function codeName(span: string): string | undefined {
  const m = /^([A-Za-z_][\w]*)(?:\(.*\))?$/.exec(span);
  if (!m) return undefined;
  const name = m[1];
  return /^[a-z]+[A-Z]/.test(name) || /^[A-Z][a-z]+[A-Z]/.test(name) || /^mp_[a-z_]+$/.test(name) ||
      span.endsWith(")")
    ? name
    : undefined;
}

Deno.test("the docs scan finds paths, tasks and code names, and matches placeholders", () => {
  const md = [
    "Run `deno task test` (or deno task bench:render); see [the contract](docs/contract.md#errors)",
    "and shared/events/lanes.ts, `…_mp_event_outbox.sql`, `supabase/functions/<name>/index.ts`.",
    "`/users/me`, `.local/dev`, `<folder>/stack.lock` and `mp.connection.connected` are no paths; `handler.ts` is.",
    'Names: `defineFunction`, `runRecordOf("x")`, `DomainError`, `mp_save_refreshed`, `limit`.',
    "```sh",
    "deno task dev",
    "```",
  ].join("\n");
  const m = mentions(md);
  assert.deepEqual(m.tasks, ["test", "bench:render", "dev"]);
  assert.deepEqual(m.paths.sort(), [
    "docs/contract.md",
    "handler.ts",
    "shared/events/lanes.ts",
    "supabase/functions/<name>/index.ts",
    "…_mp_event_outbox.sql",
  ]);
  assert.deepEqual(m.spans.map(codeName).filter(Boolean), [
    "defineFunction",
    "runRecordOf",
    "DomainError",
    "mp_save_refreshed",
  ]);
  const tree = [
    "docs/",
    "docs/contract.md",
    "shared/events/lanes.ts",
    "supabase/functions/mp-events/index.ts",
    "admin/supabase/migrations/20261206000200_mp_event_outbox.sql",
    "supabase/functions/mp-events/handler.ts",
  ];
  for (const path of m.paths) assert.ok(exists(path, tree), path);
  assert.ok(!exists("shared/events/gone.ts", tree));
  assert.ok(!exists("events/lanes.ts", ["shared/events/lanes.tsx"]));
  assert.ok(!exists("…_mp_outbox.sql", tree));
});

Deno.test("README.md and docs/*.md name only paths, tasks, functions and code names that exist", async () => {
  const tree = await treePaths();
  const deno = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const tasks = new Set(Object.keys(deno.tasks));
  const functions = new Set(
    tree.filter((p) => /^supabase\/functions\/[^/]+\/$/.test(p)).map((p) => p.split("/")[2]),
  );
  let code = "";
  for (const path of tree) {
    if (CODE_ENDINGS.some((end) => path.endsWith(end))) {
      code += await Deno.readTextFile(`${ROOT}${path}`);
    }
  }
  const codeWords = new Set(code.match(/[A-Za-z_]\w*/g));
  const false_: string[] = [];
  let checked = 0;
  for (const doc of await documents()) {
    const { spans, paths, tasks: run } = mentions(await Deno.readTextFile(`${ROOT}${doc}`));
    for (const path of paths) {
      checked++;
      const resolved = doc.startsWith("docs/") && path.startsWith("../") ? path.slice(3) : path;
      if (!(resolved in WRITTEN) && !exists(resolved, tree)) false_.push(`${doc}: path ${path}`);
    }
    for (const task of run) {
      checked++;
      if (!tasks.has(task)) false_.push(`${doc}: deno task ${task}`);
    }
    for (const span of spans) {
      if (/^(mp-[a-z-]+|get-mp-config|provision-step-[\d-]+)$/.test(span)) {
        checked++;
        if (!functions.has(span)) false_.push(`${doc}: function ${span}`);
      }
      const name = codeName(span);
      if (name) {
        checked++;
        if (!codeWords.has(name)) false_.push(`${doc}: code name ${name}`);
      }
    }
  }
  assert.ok(checked > 300 && functions.size >= 12, `the scan saw the docs (${checked} names)`);
  assert.deepEqual(false_, [], "what the docs name and the tree does not have");
});

/** The functions a Markdown table under `heading` lists in its first column. */
function tableFunctions(markdown: string, heading: string): string[] {
  const start = markdown.search(new RegExp(`^#+\\s+(?:\\d+\\.\\s+)?${heading}\\s*$`, "m"));
  if (start < 0) return [];
  const rest = markdown.slice(start).split("\n").slice(1);
  const next = rest.findIndex((line) => /^#/.test(line));
  const names: string[] = [];
  for (const line of next < 0 ? rest : rest.slice(0, next)) {
    const first = /^\|\s*([^|]+)\|/.exec(line)?.[1] ?? "";
    for (const m of first.matchAll(/`([a-z0-9-]+)`/g)) names.push(m[1]);
  }
  return names;
}

Deno.test("the function tables of README and docs/contract.md list every function of supabase/functions/", async () => {
  const functions: string[] = [];
  for await (const entry of Deno.readDir(`${ROOT}supabase/functions`)) {
    if (entry.isDirectory) functions.push(entry.name);
  }
  assert.ok(functions.length >= 12, "the scan saw the functions");
  for (
    const [doc, heading] of [["README.md", "Functions"], ["docs/contract.md", "The functions"]]
  ) {
    const listed = tableFunctions(await Deno.readTextFile(`${ROOT}${doc}`), heading);
    assert.deepEqual([...new Set(listed)].sort(), functions.sort(), `${doc}, "${heading}"`);
  }
});

/** README's Layout table: each row's first-column path and the text of its other columns. */
function layoutRows(readme: string): Map<string, string> {
  const start = readme.search(/^## Layout\s*$/m);
  const rows = new Map<string, string>();
  if (start < 0) return rows;
  for (const line of readme.slice(start).split("\n").slice(1)) {
    if (/^#/.test(line)) break;
    const cells = line.split("|").slice(1, -1);
    if (cells.length < 2) continue;
    for (const m of cells[0].matchAll(/`([^`]+)`/g)) rows.set(m[1], cells.slice(1).join("|"));
  }
  return rows;
}

Deno.test("README's Layout names every top-level folder, every room of shared/ with each of its modules, and every doc", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const rows = layoutRows(readme);
  assert.ok(rows.size > 10, "the scan saw the Layout table");
  const missing: string[] = [];
  for await (const entry of Deno.readDir(ROOT)) {
    if (!entry.isDirectory || NOT_SCANNED.has(entry.name) || entry.name.startsWith(".")) continue;
    if (![...rows.keys()].some((path) => path.split("/")[0] === entry.name)) {
      missing.push(`${entry.name}/`);
    }
  }
  const rooms = ["tooling", "scripts"];
  for await (const entry of Deno.readDir(`${ROOT}shared`)) {
    if (entry.isDirectory) rooms.push(`shared/${entry.name}`);
  }
  for (const room of rooms) {
    const text = rows.get(`${room}/`);
    if (text === undefined) {
      missing.push(`${room}/`);
      continue;
    }
    const named = new Set([...text.matchAll(/`([\w-]+)(?:\.ts)?`/g)].map((m) => m[1]));
    for await (const entry of Deno.readDir(`${ROOT}${room}`)) {
      const name = entry.name.replace(/\.ts$/, "");
      if (!entry.isFile || name === entry.name || name.startsWith("_")) continue;
      // an operator command is named by its task (`rotate-keys` for rotate_keys.ts)
      if (!named.has(name) && !named.has(name.replaceAll("_", "-"))) {
        missing.push(`${room}/${entry.name}`);
      }
    }
  }
  const docs = rows.get("docs/") ?? "";
  for await (const entry of Deno.readDir(`${ROOT}docs`)) {
    if (entry.name.endsWith(".md") && !docs.includes(`(docs/${entry.name})`)) {
      missing.push(`docs/${entry.name}`);
    }
  }
  assert.deepEqual(missing.sort(), [], "in the tree, not in README's Layout");
});
