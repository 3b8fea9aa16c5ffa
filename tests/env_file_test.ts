/**
 * The env file (`stack.env`): what the writer writes, a shell (`set -a; . FILE`) and dotenv read
 * back byte for byte; where a stack of a port base keeps it; and the operator scripts, which read
 * it for variables the environment lacks and otherwise name it in their one-line error.
 */
import assert from "node:assert/strict";
import { parse } from "dotenv";
import {
  envLine,
  formatEnvFile,
  parseEnvFile,
  stackEnvFile,
  stackStateDir,
} from "../tooling/env_file.ts";
import { misconfiguredLine, scriptEnv } from "../scripts/_cli.ts";
import { MisconfiguredError } from "../shared/platform/config.ts";
import { stack } from "./_stack.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const decoder = new TextDecoder();

/** Values a shell or a naive reader gets wrong. */
const AWKWARD: Record<string, string> = {
  PLAIN: "postgres://u:p@127.0.0.1:5432/postgres?sslmode=require",
  SPACES: "whsec_AAAA whsec_BBBB",
  PADDED: "  leading and trailing  ",
  DOLLAR: "a$HOME b${PATH} $(echo no) `echo no`",
  DOUBLE_QUOTES: 'say "hi" and \\"escaped\\"',
  SINGLE_QUOTE: "it's fine",
  SINGLE_AND_SPACE: "O'Brien's key = yes # not a comment",
  HASH: "#not-a-comment value#hash",
  HASH_AFTER_SPACE: "value # still the value",
  EQUALS: "a=b==c=",
  BACKSLASHES: "C:\\path\\n\\t\\\\ end\\",
  JSON: '{"default":"sb_secret_x y"}',
  NEWLINE: "line one\nline two",
  UNICODE: "ñandú → 🦙",
  EMPTY: "",
  BANG: "hello!world !! !$",
  SEMICOLON: "a; echo injected; b && c | d > e",
};

/** Sources `file` in `bash -c 'set -a; . FILE; set +a'` and prints each of `names` NUL-terminated. */
async function sourceInBash(file: string, names: string[]) {
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      'set -a; . "$1"; set +a; shift; for n in "$@"; do printf "%s\\0" "${!n}"; done',
      "bash",
      file,
      ...names,
    ],
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: "/nonexistent" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const values = decoder.decode(out.stdout).split("\0").slice(0, -1);
  return { code: out.code, stderr: decoder.decode(out.stderr), values };
}

Deno.test("env file: awkward values come back byte-identical from bash `set -a; . FILE` and from dotenv", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/stack.env`;
    await Deno.writeTextFile(file, formatEnvFile(AWKWARD, ["a comment; with $ and 'quotes'"]));
    const names = Object.keys(AWKWARD);
    const bash = await sourceInBash(file, names);
    assert.equal(bash.stderr, "");
    assert.equal(bash.code, 0);
    assert.equal(bash.values.length, names.length);
    names.forEach((name, i) => assert.equal(bash.values[i], AWKWARD[name], `bash: ${name}`));

    const text = await Deno.readTextFile(file);
    assert.deepEqual(parse(text), AWKWARD, "dotenv's parser");
    assert.deepEqual(parse(text, { fast: true }), AWKWARD, "dotenv's fast parser");
    assert.deepEqual(parseEnvFile(text), AWKWARD, "the project's reader");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("env file: every value is quoted, the same way each time", () => {
  assert.equal(envLine("A", "x"), "A='x'");
  assert.equal(envLine("A", "two words"), "A='two words'");
  assert.equal(envLine("A", "it's"), `A="it's"`);
  assert.equal(envLine("A", ""), "A=''");
  assert.equal(formatEnvFile({ A: "1", B: "x y" }, ["c"]), "# c\nA='1'\nB='x y'\n");
});

Deno.test("env file: a value no quoting carries intact is refused, naming the key and never the value", () => {
  for (const value of [`it's $5`, `it's "x"`, "it's a\\b", "it's `x`", "a\rb", "a\0b"]) {
    assert.throws(() => envLine("SECRET_KEY", value), (err: Error) => {
      assert.match(err.message, /^SECRET_KEY: /);
      assert.ok(!err.message.includes(value), "the value is not in the message");
      return true;
    });
  }
  assert.throws(() => envLine("BAD NAME", "x"), /is not a variable name/);
  assert.throws(() => envLine("1X", "x"), /is not a variable name/);
});

Deno.test("state folder: .local/<profile> at the profile's base, .local/<profile>-<base> at another; STACK_STATE_DIR wins", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.equal(stackStateDir("dev", env({})), ".local/dev");
  assert.equal(stackStateDir("dev", env({ STACK_PORT_BASE: "54321" })), ".local/dev");
  assert.equal(stackStateDir("dev", env({ STACK_PORT_BASE: "26400" })), ".local/dev-26400");
  assert.equal(stackStateDir("test", env({})), ".local/test");
  assert.equal(stackStateDir("test", env({ STACK_PORT_BASE: "25321" })), ".local/test");
  assert.equal(stackStateDir("test", env({ STACK_PORT_BASE: "26490" })), ".local/test-26490");
  assert.equal(
    stackStateDir("dev", env({ STACK_PORT_BASE: "26400", STACK_STATE_DIR: ".local/mine/" })),
    ".local/mine",
  );
  assert.equal(stackStateDir("dev", env({ STACK_STATE_DIR: "" })), ".local/dev");
  assert.equal(stackEnvFile(env({})), ".local/dev/stack.env");
  assert.equal(stackEnvFile(env({ STACK_PORT_BASE: "26400" })), ".local/dev-26400/stack.env");
  assert.equal(stackEnvFile(env({ STACK_STATE_DIR: ".local/x" })), ".local/x/stack.env");
  assert.equal(
    stackEnvFile(env({ STACK_ENV_FILE: "/tmp/e.env", STACK_STATE_DIR: ".local/x" })),
    "/tmp/e.env",
  );
});

Deno.test("scriptEnv: the environment's non-empty values win; the file fills what it lacks", () => {
  const files: Record<string, string> = {
    [`${ROOT}.local/dev/stack.env`]: formatEnvFile({ A: "file a", B: "file b", C: "file c" }),
  };
  const read = (path: string) => files[path];
  const got = scriptEnv({ A: "env a", B: "" }, read);
  assert.deepEqual(got.env, { A: "env a", B: "file b", C: "file c" });
  assert.deepEqual(got.fromFile.sort(), ["B", "C"]);
  assert.equal(got.file, ".local/dev/stack.env");
  assert.equal(got.found, true);
  const moved = scriptEnv({ STACK_PORT_BASE: "26400" }, read);
  assert.equal(moved.file, ".local/dev-26400/stack.env");
  assert.equal(moved.found, false);
  assert.deepEqual(moved.fromFile, []);
});

Deno.test("misconfiguredLine: plain words naming the variable and where it was looked for", () => {
  const missing = new MisconfiguredError("MP_TOKEN_KEYS", "not set");
  const none = { env: {}, file: ".local/dev/stack.env", found: false, fromFile: [] };
  assert.equal(
    misconfiguredLine(missing, none),
    "MP_TOKEN_KEYS is not set (not in the environment, nor in .local/dev/stack.env, which does not exist: start the stack with `deno task dev`, or set it)",
  );
  assert.equal(
    misconfiguredLine(missing, { ...none, found: true }),
    "MP_TOKEN_KEYS is not set (not in the environment, nor in .local/dev/stack.env: set it)",
  );
  const bad = new MisconfiguredError("MP_TOKEN_KEYS", "key k2 is not 32 bytes");
  assert.equal(
    misconfiguredLine(bad, { ...none, env: { MP_TOKEN_KEYS: "x" }, fromFile: ["MP_TOKEN_KEYS"] }),
    "MP_TOKEN_KEYS: key k2 is not 32 bytes (in .local/dev/stack.env)",
  );
  assert.equal(
    misconfiguredLine(bad, undefined),
    "MP_TOKEN_KEYS: key k2 is not 32 bytes (in the environment)",
  );
});

/** Runs an operator script with exactly `env` (plus what deno itself needs). */
async function script(name: string, args: string[], env: Record<string, string>) {
  const keep = ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"].flatMap((k) => {
    const v = Deno.env.get(k);
    return v === undefined ? [] : [[k, v] as const];
  });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/${name}.ts`, ...args],
    cwd: ROOT,
    env: { ...Object.fromEntries(keep), NO_COLOR: "1", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("scripts: with nothing in the environment they read the env file; without one they name it", async () => {
  const rel = `.local/env-file-test-${crypto.randomUUID().slice(0, 8)}`;
  const dir = `${ROOT}${rel}`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    // No file: one line naming the variable and the file looked in.
    const absent = await script("status", [], { STACK_ENV_FILE: `${rel}/none.env` });
    assert.equal(absent.code, 2);
    assert.equal(
      absent.stderr,
      `status: BACKEND_DB_URL is not set (not in the environment, nor in ${rel}/none.env, which does not exist: start the stack with \`deno task dev\`, or set it)\n`,
    );
    // A moved dev stack's file is looked for where that stack keeps it.
    const moved = await script("events", [], { STACK_PORT_BASE: "26977" });
    assert.equal(moved.code, 2);
    assert.match(
      moved.stderr,
      /^events: ADMIN_DB_URL is not set \(not in the environment, nor in \.local\/dev-26977\/stack\.env, which/,
    );

    // The file holds the databases: status runs from it alone, and says where they came from.
    const file = `${rel}/stack.env`;
    await Deno.writeTextFile(
      `${ROOT}${file}`,
      formatEnvFile({
        BACKEND_DB_URL: stack.env("BACKEND_DB_URL"),
        ADMIN_DB_URL: "postgres://nobody@127.0.0.1:1/none",
      }),
    );
    // The environment wins: its ADMIN_DB_URL is the live one, the file's points nowhere.
    const ran = await script("status", ["--json"], {
      STACK_ENV_FILE: file,
      ADMIN_DB_URL: stack.env("ADMIN_DB_URL"),
    });
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stderr, `status: variables not in the environment read from ${file}\n`);
    assert.equal(typeof JSON.parse(ran.stdout).totals, "object");

    // A malformed key ring in the file: plain words, the file named, the key never printed.
    const short = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    await Deno.writeTextFile(
      `${ROOT}${file}`,
      formatEnvFile({
        BACKEND_DB_URL: stack.env("BACKEND_DB_URL"),
        ADMIN_DB_URL: stack.env("ADMIN_DB_URL"),
        MP_TOKEN_KEYS: `k2:${short}`,
      }),
    );
    const bad = await script("backfill", [], { STACK_ENV_FILE: file });
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, `backfill: MP_TOKEN_KEYS: key k2 is not 32 bytes (in ${file})\n`);
    assert.ok(!bad.stderr.includes(short));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
