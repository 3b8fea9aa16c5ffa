/** The `KEY=value` files operators and the local stack keep their settings in (`stack.env`). */

/** Parses `KEY=value` lines (`#` comments and lines without `=` are skipped). */
export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0 && !line.startsWith("#")) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}
