/**
 * No export without an importer: every symbol a module of the repository exports is imported by
 * another module (tests included), read with the TypeScript compiler's parser. Used by definition,
 * without an importer: the default export `deno serve` and the edge runtime load (`export default
 * { fetch }`: the function entries, the test fixtures, bench/floor.ts), and every export of
 * `client/mp_config.ts`, the published client that Node and Deno users import from a copy of the
 * file. A task entry point of deno.json is run, not imported: its exports need importers too.
 */
import assert from "node:assert/strict";
import ts from "typescript";

const ROOT = new URL("../", import.meta.url).pathname;
/** Folders that are no part of the code: git, tooling state, installed packages. */
const NOT_SCANNED = new Set([".git", ".local", "node_modules"]);
/** The endings of the modules scanned (exports and imports) and of those that only import. */
const MODULES = [".ts"];
const IMPORTERS = [".ts", ".mjs", ".js"];

/** Modules whose every export is an API for users outside the repository, with the reason. */
const PUBLISHED: Record<string, string> = {
  "client/mp_config.ts":
    "the checkout client users copy and import from Node or Deno (README, Checkout)",
};

/** What one module exports and what it takes from the others. */
interface ModuleUse {
  /** The names it exports (`default` for a default export), each with whether it is served. */
  exports: Map<string, { served: boolean }>;
  /** The modules it imports from (specifier as written), each with the names it takes or `*`. */
  imports: { from: string; names: string[] | "*" }[];
}

/** The parser's source file of `text`. */
function parse(path: string, text: string): ts.SourceFile {
  const kind = path.endsWith(".ts") ? ts.ScriptKind.TS : ts.ScriptKind.JS;
  return ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true, kind);
}

/** Whether `node` carries the modifier `kind`. */
function has(node: ts.Node, kind: ts.SyntaxKind): boolean {
  return ts.canHaveModifiers(node) && !!ts.getModifiers(node)?.some((m) => m.kind === kind);
}

/** The identifiers a binding (`a`, `{ a, b: c }`, `[d, ...e]`) declares. */
function bindingNames(name: ts.BindingName): string[] {
  if (ts.isIdentifier(name)) return [name.text];
  return name.elements.flatMap((e) => ts.isOmittedExpression(e) ? [] : bindingNames(e.name));
}

/** `expr` without `satisfies`, `as` and parentheses around it. */
function bare(expr: ts.Expression): ts.Expression {
  while (
    ts.isSatisfiesExpression(expr) || ts.isAsExpression(expr) || ts.isParenthesizedExpression(expr)
  ) expr = expr.expression;
  return expr;
}

/** Whether a default export is what `deno serve` runs: an object literal with a `fetch`. */
function served(expr: ts.Expression): boolean {
  const obj = bare(expr);
  return ts.isObjectLiteralExpression(obj) &&
    obj.properties.some((p) =>
      p.name !== undefined && ts.isIdentifier(p.name) && p.name.text === "fetch"
    );
}

/**
 * The names a dynamic `import("…")` takes: the destructured ones of `const { a } = await
 * import(…)`, the one of `(await import(…)).a`, every name otherwise.
 */
function dynamicNames(call: ts.CallExpression): string[] | "*" {
  let node: ts.Node = call;
  while (ts.isAwaitExpression(node.parent) || ts.isParenthesizedExpression(node.parent)) {
    node = node.parent;
  }
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) && ts.isObjectBindingPattern(parent.name)) {
    const names = parent.name.elements.map((e) =>
      e.dotDotDotToken ? undefined : (e.propertyName ?? e.name)
    );
    if (names.every((n) => n !== undefined && ts.isIdentifier(n))) {
      return names.map((n) => (n as ts.Identifier).text);
    }
  }
  if (ts.isPropertyAccessExpression(parent) && parent.expression === node) {
    return [parent.name.text];
  }
  return "*";
}

/**
 * The names a namespace import `ns` takes: each `ns.a` (and `ns.A` in a type), or every name
 * when `ns` is used any other way (passed on whole).
 */
function namespaceNames(file: ts.SourceFile, ns: ts.Identifier): string[] | "*" {
  const names: string[] = [];
  let whole = false;
  const visit = (node: ts.Node) => {
    if (ts.isIdentifier(node) && node.text === ns.text && node !== ns) {
      const parent = node.parent;
      if (ts.isPropertyAccessExpression(parent) && parent.expression === node) {
        names.push(parent.name.text);
      } else if (ts.isQualifiedName(parent) && parent.left === node) names.push(parent.right.text);
      else whole = true;
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return whole ? "*" : names;
}

/** What the module `text` (at `path`) exports and imports, read by the TypeScript parser. */
function moduleUse(path: string, text: string): ModuleUse {
  const file = parse(path, text);
  const exports = new Map<string, { served: boolean }>();
  const imports: ModuleUse["imports"] = [];
  for (const stmt of file.statements) {
    if (ts.isImportDeclaration(stmt) && ts.isStringLiteral(stmt.moduleSpecifier)) {
      const from = stmt.moduleSpecifier.text;
      const clause = stmt.importClause;
      const names: string[] = [];
      if (clause?.name) names.push("default");
      const bindings = clause?.namedBindings;
      if (bindings && ts.isNamedImports(bindings)) {
        for (const e of bindings.elements) names.push((e.propertyName ?? e.name).text);
      }
      imports.push({ from, names });
      if (bindings && ts.isNamespaceImport(bindings)) {
        imports.push({ from, names: namespaceNames(file, bindings.name) });
      }
    } else if (ts.isExportDeclaration(stmt)) {
      const from = stmt.moduleSpecifier && ts.isStringLiteral(stmt.moduleSpecifier)
        ? stmt.moduleSpecifier.text
        : undefined;
      const clause = stmt.exportClause;
      if (!clause) {
        if (from) imports.push({ from, names: "*" }); // export * from: passes every name on
      } else if (ts.isNamedExports(clause)) {
        for (const e of clause.elements) exports.set(e.name.text, { served: false });
        if (from) {
          imports.push({
            from,
            names: clause.elements.map((e) => (e.propertyName ?? e.name).text),
          });
        }
      } else {
        exports.set(clause.name.text, { served: false });
        if (from) imports.push({ from, names: "*" });
      }
    } else if (ts.isExportAssignment(stmt)) {
      exports.set("default", { served: served(stmt.expression) });
    } else if (has(stmt, ts.SyntaxKind.ExportKeyword)) {
      const isDefault = has(stmt, ts.SyntaxKind.DefaultKeyword);
      if (ts.isVariableStatement(stmt)) {
        for (const d of stmt.declarationList.declarations) {
          for (const name of bindingNames(d.name)) exports.set(name, { served: false });
        }
      } else {
        const name = (stmt as ts.DeclarationStatement).name;
        const key = isDefault ? "default" : name && ts.isIdentifier(name) ? name.text : undefined;
        if (key) exports.set(key, { served: false });
      }
    }
  }
  const visit = (node: ts.Node) => {
    if (
      ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments.length > 0 && ts.isStringLiteralLike(node.arguments[0])
    ) {
      imports.push({ from: node.arguments[0].text, names: dynamicNames(node) });
    } else if (
      ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      let q = node.qualifier;
      while (q && ts.isQualifiedName(q)) q = q.left;
      imports.push({ from: node.argument.literal.text, names: q ? [q.text] : "*" });
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return { exports, imports };
}

/** Every file under `dir` (relative to the repository root) with one of `endings`. */
async function* files(endings: string[], dir = ""): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(`${ROOT}${dir}`)) {
    if (NOT_SCANNED.has(entry.name)) continue;
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory) yield* files(endings, path);
    else if (endings.some((end) => entry.name.endsWith(end))) yield path;
  }
}

/** Every `<path>: <name>` exported in the repository that no other module imports. */
async function deadExports(): Promise<{ dead: string[]; modules: number; exports: number }> {
  const uses = new Map<string, ModuleUse>();
  for await (const path of files(IMPORTERS)) {
    uses.set(path, moduleUse(path, await Deno.readTextFile(`${ROOT}${path}`)));
  }
  const taken = new Map<string, Set<string> | "*">();
  for (const [path, use] of uses) {
    for (const { from, names } of use.imports) {
      if (!from.startsWith(".")) continue; // npm:, node: and bare specifiers are not ours
      const target = new URL(from, `file:///${path}`).pathname.slice(1);
      if (target === path) continue;
      const seen = taken.get(target) ?? new Set<string>();
      if (seen === "*") continue;
      if (names === "*") taken.set(target, "*");
      else {
        for (const n of names) seen.add(n);
        taken.set(target, seen);
      }
    }
  }
  const dead: string[] = [];
  let modules = 0;
  let exports = 0;
  for (const [path, use] of uses) {
    if (!MODULES.some((end) => path.endsWith(end))) continue;
    modules++;
    const seen = taken.get(path);
    for (const [name, { served }] of use.exports) {
      exports++;
      if (served || path in PUBLISHED || seen === "*" || seen?.has(name)) continue;
      dead.push(`${path}: ${name}`);
    }
  }
  return { dead: dead.sort(), modules, exports };
}

Deno.test("the export scan reads exports, re-exports and imports of every form, not strings or comments", () => {
  const text = [
    `import def, { a, b as c, type T } from "./one.ts";`,
    `import * as ns from "./two.ts";`,
    `import * as whole from "./three.ts";`,
    `import "./side.ts";`,
    `export { r, s as t } from "./four.ts";`,
    `export * from "./five.ts";`,
    `const { x, y: z } = await import("./six.ts");`,
    `const w = (await import("./seven.ts")).w;`,
    `const all = await import("./eight.ts");`,
    `type U = import("./nine.ts").U.Inner; type V = typeof import("./ten.ts");`,
    `// import { hidden } from "./comment.ts";`,
    `const s = 'import { q } from "./string.ts"';`,
    `ns.f(); let n: ns.N; use(whole);`,
    `export const k = 1, { l, m: [o] } = obj;`,
    `export function f() {}`,
    `export class C {}`,
    `export interface I {}`,
    `export type Y = 1;`,
    `export enum E { A }`,
    `const local = 1; export { local as renamed };`,
    `export default { fetch: handler } satisfies Deno.ServeDefaultExport;`,
  ].join("\n");
  const use = moduleUse("dir/mod.ts", text);
  assert.deepEqual(use.imports, [
    { from: "./one.ts", names: ["default", "a", "b", "T"] },
    { from: "./two.ts", names: [] },
    { from: "./two.ts", names: ["f", "N"] },
    { from: "./three.ts", names: [] },
    { from: "./three.ts", names: "*" },
    { from: "./side.ts", names: [] },
    { from: "./four.ts", names: ["r", "s"] },
    { from: "./five.ts", names: "*" },
    { from: "./six.ts", names: ["x", "y"] },
    { from: "./seven.ts", names: ["w"] },
    { from: "./eight.ts", names: "*" },
    { from: "./nine.ts", names: ["U"] },
    { from: "./ten.ts", names: "*" },
  ]);
  assert.deepEqual([...use.exports.keys()], [
    "r",
    "t",
    "k",
    "l",
    "o",
    "f",
    "C",
    "I",
    "Y",
    "E",
    "renamed",
    "default",
  ]);
  assert.equal(use.exports.get("default")?.served, true);
  assert.equal(
    moduleUse("m.ts", "export default function main() {}").exports.get("default")?.served,
    false,
  );
  assert.equal(moduleUse("m.ts", "export default { run };").exports.get("default")?.served, false);
});

Deno.test("no export without an importer: every exported symbol is imported by another module (tests included)", async () => {
  const { dead, modules, exports } = await deadExports();
  assert.ok(
    modules > 200 && exports > 500,
    `the scan saw the tree (${modules} modules, ${exports} exports)`,
  );
  assert.deepEqual(dead, [], "exports nothing imports");
});
