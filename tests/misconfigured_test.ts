/**
 * docs/contract.md, common rules: a missing or malformed variable makes a function answer 500
 * `misconfigured` naming the variable, never its value. Every function of supabase/config.toml
 * runs alone under `deno serve` (the stack's environment with one variable it needs made junk)
 * and is called over HTTP as its caller would; the junk value appears in no answer and no log.
 */
import assert from "node:assert/strict";
import { functionEntrypoints } from "../local/gateway.ts";
import { SCHEDULED_JOBS } from "../shared/schedules/jobs.ts";
import { functionEnv, stack } from "./_stack.ts";
import { serveFunction } from "./_serve.ts";

const marker = () => crypto.randomUUID().replaceAll("-", "").slice(0, 12);
/** `n` random decimal digits (the first not 0): an integer no log holds by chance. */
const digits = (n: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(n)), (b, i) => i === 0 ? 1 + (b % 9) : b % 10)
    .join("");

type Case = { variable: string; value: string; method: "GET" | "POST" };

/**
 * Per function: the variable made junk (each a different kind: key ring, URL, boolean, JSON,
 * server key, integer out of range), its junk value, and how its caller calls it. A scheduled
 * function (shared/schedules/jobs.ts) without a case of its own: ADMIN_DB_URL, which every one
 * needs for its run record, called as pg_cron calls it.
 */
function cases(): Record<string, Case> {
  const scheduled: [string, Case][] = SCHEDULED_JOBS.map((job) => [
    job.name,
    { variable: "ADMIN_DB_URL", value: `junk${marker()}`, method: "POST" },
  ]);
  return {
    ...Object.fromEntries(scheduled),
    "get-mp-config": { variable: "MP_TOKEN_KEYS", value: `k1:junk${marker()}`, method: "POST" },
    "provision-step-7-1": {
      variable: "SUPABASE_SECRET_KEYS",
      value: `{"default": "junk${marker()}"`,
      method: "POST",
    },
    "mp-oauth-start": {
      variable: "MP_REDIRECT_URI",
      value: `junk${marker()}/callback`,
      method: "POST",
    },
    "mp-oauth-callback": { variable: "MP_AUTH_URL", value: `junk${marker()}`, method: "GET" },
    "mp-refresh": {
      variable: "MP_HTTP_TIMEOUT_MS",
      value: digits(12),
      method: "POST",
    },
    "mp-revoke": { variable: "BACKEND_DB_URL", value: `junk${marker()}`, method: "POST" },
    "mp-webhook": { variable: "MP_OAUTH_PKCE", value: `junk${marker()}`, method: "POST" },
    "mp-reconcile": {
      variable: "DB_TIMEOUT_MS",
      value: `-${digits(12)}`,
      method: "POST",
    },
    "mp-health": { variable: "ADMIN_DB_URL", value: `junk${marker()}`, method: "GET" },
    "mp-probe": {
      variable: "MP_PROBE_RATE",
      value: digits(12),
      method: "POST",
    },
    "mp-deliver-events": {
      variable: "PLATFORM_WEBHOOK_SECRETS",
      value: `whsec_junk${marker()}!`,
      method: "POST",
    },
    "mp-events": { variable: "ADMIN_DB_URL", value: `junk${marker()}`, method: "GET" },
  };
}

Deno.test("a malformed variable, per function over HTTP: 500 misconfigured naming it, never its value", async () => {
  const entrypoints = [...(await functionEntrypoints()).keys()];
  const all = cases();
  assert.deepEqual(
    entrypoints.filter((name) => !(name in all)),
    [],
    "every function of supabase/config.toml has a case",
  );
  const served = await Promise.all(
    entrypoints.map((name, i) =>
      serveFunction(name, 30 + i, functionEnv({ [all[name].variable]: all[name].value }))
    ),
  );
  const outputs: string[] = [];
  try {
    for (const [i, name] of entrypoints.entries()) {
      const { variable, value, method } = all[name];
      const query = name === "mp-oauth-callback" ? "?code=TG-x&state=y" : "";
      const res = await fetch(`${served[i].url}/${query}`, {
        method,
        headers: {
          apikey: stack.secretKey,
          ...(method === "POST" ? { "content-type": "application/json" } : {}),
        },
        body: method === "POST" ? JSON.stringify({ account_id: crypto.randomUUID() }) : undefined,
        redirect: "manual",
      });
      const text = await res.text();
      assert.equal(res.status, 500, `${name} (${variable}): ${text.slice(0, 200)}`);
      const body = JSON.parse(text);
      assert.equal(body.error.code, "misconfigured", name);
      assert.ok(body.error.message.includes(variable), `${name}: the answer names ${variable}`);
      assert.ok(!text.includes(value), `${name}: the answer holds no junk value`);
    }
  } finally {
    outputs.push(...await Promise.all(served.map((s) => s.stop())));
  }
  for (const [i, name] of entrypoints.entries()) {
    const { variable, value } = all[name];
    const line = outputs[i].split("\n").find((l) => l.includes("Function misconfigured"));
    assert.ok(line, `${name}: a log line reports the misconfiguration`);
    assert.equal(JSON.parse(line).variable, variable, name);
    assert.ok(!outputs[i].includes(value), `${name}: no log holds the junk value`);
  }
});
