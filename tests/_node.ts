/**
 * Node projects for the tests of what users run under Node (the checkout client, the
 * platform's receiver): a throwaway folder with a `package.json` whose packages are the
 * versions pinned in `deno.json`, installed into its `node_modules` by `deno install` from
 * Deno's npm cache (which the project's own `deno install` filled; the npm registry only when
 * the cache lacks them), and `node` (≥ 20, from PATH) to run in it.
 */

const ROOT = new URL("../", import.meta.url);

/** A Node project folder: where it is, running `node` in it, and removing it. */
export interface NodeProject {
  dir: string;
  /** Writes `text` to `path` (relative to the project), creating its folders. */
  write(path: string, text: string): Promise<void>;
  /** Runs `node <args>` in the project to its end: exit code and output. */
  node(
    args: string[],
    env?: Record<string, string>,
  ): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Starts `node <args>` in the project, its stdout and stderr piped. */
  spawn(args: string[], env?: Record<string, string>): Deno.ChildProcess;
  remove(): Promise<void>;
}

/** The exact version `deno.json` pins for npm package `name` (e.g. `npm:typescript@5.9.3`). */
async function pinnedVersion(name: string): Promise<string> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const spec: unknown = config.imports?.[name];
  const m = typeof spec === "string" ? spec.match(/^npm:(?:@[^/@]+\/)?[^@]+@(\d[^/]*)$/) : null;
  if (!m) throw new Error(`deno.json pins no exact npm version of ${name}`);
  return m[1];
}

/**
 * The path of `node` on PATH. Found here, not left to `Deno.Command("node")`, which runs Deno
 * itself as `node` when PATH has none (the test would pass without ever running Node).
 */
async function findNode(): Promise<string | null> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").filter(Boolean)) {
    const info = await Deno.stat(`${dir}/node`).catch(() => null);
    if (info?.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return `${dir}/node`;
  }
  return null;
}

/** The real Node (≥ 20) on PATH; throws one clear line otherwise. */
async function requireNode(): Promise<string> {
  const node = await findNode();
  if (!node) throw new Error("node is not installed: this test runs Node ≥ 20 (`node` on PATH)");
  const out = await new Deno.Command(node, {
    args: ["-p", "JSON.stringify([process.version, typeof Deno])"],
    stdout: "piped",
    stderr: "null",
  }).output();
  let version = "", deno = "";
  try {
    [version, deno] = JSON.parse(new TextDecoder().decode(out.stdout));
  } catch { /* not a node that answers */ }
  if (!out.success || deno !== "undefined") {
    throw new Error(`${node} is not Node.js: this test runs Node ≥ 20 (\`node\` on PATH)`);
  }
  if (!(Number(version.match(/^v(\d+)\./)?.[1]) >= 20)) {
    throw new Error(`node ${version} at ${node} is too old: this test runs Node ≥ 20`);
  }
  return node;
}

/** `deno install` in `dir`: from the cache only, else from the registry; the error's first line. */
async function install(dir: string): Promise<string | null> {
  let error = "";
  for (const args of [["install", "--cached-only", "--no-lock"], ["install", "--no-lock"]]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.success) return null;
    error = new TextDecoder().decode(out.stderr).split("\n").find((l) => l.trim()) ?? "";
  }
  return error;
}

/** A new Node ESM project with `packages` (names as `deno.json` pins them) installed. */
export async function nodeProject(packages: string[]): Promise<NodeProject> {
  const node = await requireNode();
  const dependencies: Record<string, string> = {};
  for (const name of packages) dependencies[name] = await pinnedVersion(name);
  const dir = await Deno.makeTempDir({ prefix: "mp_node_project_" });
  const write = async (path: string, text: string) => {
    const file = `${dir}/${path}`;
    await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(file, text);
  };
  await write(
    "package.json",
    JSON.stringify({ name: "node-project", private: true, type: "module", dependencies }),
  );
  const error = await install(dir);
  if (error !== null) {
    await Deno.remove(dir, { recursive: true });
    throw new Error(`could not install ${JSON.stringify(dependencies)} for node: ${error}`);
  }
  const command = (args: string[], env: Record<string, string>) =>
    new Deno.Command(node, {
      args,
      cwd: dir,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    });
  return {
    dir,
    write,
    async node(args, env = {}) {
      const out = await command(args, env).output();
      const text = (b: Uint8Array) => new TextDecoder().decode(b);
      return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
    },
    spawn: (args, env = {}) => command(args, env).spawn(),
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}
