/**
 * The leak scan of `deno task test`: every secret a run created (the sandbox's tokens and
 * codes, the stack's keys) is looked for in the run's whole output (docs/invariants.md, invariant 5).
 */

/** Every secret the run created (sandbox tokens and codes, the stack's keys), for the scan. */
export async function knownSecrets(env: Record<string, string>): Promise<string[]> {
  const secrets = [
    env.SECRET_KEY,
    env.SERVICE_ROLE_KEY,
    env.MP_CLIENT_SECRET,
    env.MP_WEBHOOK_SECRET,
    ...(env.PLATFORM_WEBHOOK_SECRETS ?? "").split(/\s+/),
    ...(env.PLATFORM_WEBHOOK_SECRETS ?? "").split(/\s+/).map((s) => s.replace(/^whsec_/, "")),
    ...(env.MP_TOKEN_KEYS ?? "").split(",").map((k) => k.slice(k.indexOf(":") + 1)),
    // The poolers' password for postgres.
    ...[env.BACKEND_POOLER_URL, env.ADMIN_POOLER_URL].map((u) =>
      decodeURIComponent(URL.parse(u ?? "")?.password ?? "")
    ),
  ];
  try {
    const res = await fetch(`${env.SANDBOX_URL}/__sandbox/secrets`);
    if (res.ok) secrets.push(...((await res.json()).secrets as string[]));
    else await res.body?.cancel();
  } catch { /* sandbox already gone: scan the stack's own keys only */ }
  return secrets.filter((s) => s && s.length >= 8);
}

/**
 * The secrets among `secrets` that appear in `output`, as they are or URL-encoded (a base64
 * key in a query string); secrets shorter than 8 characters are not looked for.
 */
export function findLeaks(output: string, secrets: string[]): string[] {
  return secrets.filter((s) =>
    s.length >= 8 && (output.includes(s) || output.includes(encodeURIComponent(s)))
  );
}
