/**
 * The `KEY=value` files operators and the local stack keep their settings in (`stack.env`):
 * written so that both `set -a; . FILE` in a POSIX shell and dotenv readers get every value back
 * byte for byte, read with dotenv, and found where the local stack of a port base keeps it.
 */
import { parse } from "dotenv";

/** The local stack's profiles and the port base each starts from (`deno task dev` is `dev`). */
export const STACK_PROFILES = { dev: 54321, test: 25321 } as const;

/** A name of a local stack profile. */
export type StackProfile = keyof typeof STACK_PROFILES;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Inside double quotes a shell still expands these; dotenv would keep a backslash before them. */
const SHELL_SPECIAL_IN_DOUBLE = /["$`\\]/;

/**
 * One `KEY=value` line, the value quoted as both a shell and dotenv read it back unchanged:
 * single quotes, or double quotes for a value holding `'` (then it may not hold `"`, `$`, a
 * backtick or a backslash). Throws, naming the key but never the value, when neither works.
 */
export function envLine(name: string, value: string): string {
  if (!NAME.test(name)) throw new Error(`${JSON.stringify(name)} is not a variable name`);
  if (/[\0\r]/.test(value)) {
    throw new Error(`${name}: a NUL or carriage return cannot be kept in an env file`);
  }
  if (!value.includes("'")) return `${name}='${value}'`;
  if (!SHELL_SPECIAL_IN_DOUBLE.test(value)) return `${name}="${value}"`;
  throw new Error(
    `${name}: a value holding ' together with " $ \` or \\ cannot be written for both a shell and dotenv`,
  );
}

/** A whole env file: optional `#` comment lines, then one quoted `KEY=value` line per variable. */
export function formatEnvFile(env: Record<string, string>, comments: string[] = []): string {
  const head = comments.map((c) => `# ${c.replaceAll("\n", " ")}`);
  return [...head, ...Object.entries(env).map(([k, v]) => envLine(k, v))].join("\n") + "\n";
}

/** Parses an env file as dotenv does (quoted or bare values, `#` comments, `export ` prefixes). */
export function parseEnvFile(text: string): Record<string, string> {
  return parse(text);
}

/**
 * The state folder of a local stack, relative to the repository root: `STACK_STATE_DIR` when set,
 * else `.local/<profile>` at the profile's own port base and `.local/<profile>-<base>` at another
 * `STACK_PORT_BASE`, so stacks side by side never share one.
 */
export function stackStateDir(
  profile: StackProfile,
  env: (name: string) => string | undefined,
): string {
  const dir = env("STACK_STATE_DIR");
  if (dir) return dir.replace(/\/+$/, "");
  const base = Number(env("STACK_PORT_BASE") || STACK_PROFILES[profile]);
  return base === STACK_PROFILES[profile] || !Number.isInteger(base)
    ? `.local/${profile}`
    : `.local/${profile}-${base}`;
}

/**
 * The env file the operator scripts read for variables the environment lacks: `STACK_ENV_FILE`
 * when set, else `stack.env` in the `dev` stack's state folder (which `STACK_STATE_DIR` or
 * `STACK_PORT_BASE` move); relative to the repository root.
 */
export function stackEnvFile(env: (name: string) => string | undefined): string {
  return env("STACK_ENV_FILE") || `${stackStateDir("dev", env)}/stack.env`;
}
