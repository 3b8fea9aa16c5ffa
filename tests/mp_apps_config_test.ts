/**
 * `MP_APPS` and `MP_SITE_ID` (docs/contract.md, "Common rules" and "Applications and sites"):
 * one MercadoPago application per site, the single-app variables as one site, the default site,
 * and a malformed entry named by site and field without its value (no stack needed).
 */
import assert from "node:assert/strict";
import {
  appOfSite,
  loadConfig,
  MisconfiguredError,
  requireConfig,
  siteOf,
} from "../shared/platform/config.ts";
import { connectApp } from "../shared/oauth/start.ts";
import { webhookApp } from "../shared/connection/webhook.ts";

const SECRET = "s3cr3t-value-never-logged";

/** One well-formed `MP_APPS` entry. */
function entry(id: string, extra: Record<string, unknown> = {}) {
  return {
    client_id: id,
    client_secret: `${SECRET}-${id}`,
    webhook_secrets: [`whk-${id}`],
    ...extra,
  };
}

const single = {
  MP_CLIENT_ID: "111",
  MP_CLIENT_SECRET: SECRET,
  MP_WEBHOOK_SECRET: "whk-single",
  MP_REDIRECT_URI: "https://fn.example/mp-oauth-callback",
  MP_AUTH_URL: "https://auth.mercadopago.com.ar",
  MP_OAUTH_PKCE: "true",
};

/** The message `requireConfig(config, needs)` throws, or undefined. */
function problem(
  config: ReturnType<typeof loadConfig>,
  needs: Parameters<typeof requireConfig>[1],
) {
  try {
    requireConfig(config, needs);
    return undefined;
  } catch (err) {
    assert.ok(err instanceof MisconfiguredError);
    return err.message;
  }
}

Deno.test("the single-app variables are one application, at MLA unless MP_SITE_ID says", () => {
  const config = loadConfig(single);
  assert.equal(config.problems.size, 0);
  assert.deepEqual([...config.mpApps.keys()], ["MLA"]);
  assert.equal(config.mpDefaultSite, "MLA");
  assert.deepEqual(config.mpApps.get("MLA"), {
    site: "MLA",
    clientId: "111",
    clientSecret: SECRET,
    webhookSecrets: ["whk-single"],
    redirectUri: "https://fn.example/mp-oauth-callback",
    authUrl: "https://auth.mercadopago.com.ar",
    pkce: true,
    apiUrl: "https://api.mercadopago.com",
    timeoutMs: 10_000,
  });
  const brazil = loadConfig({ ...single, MP_SITE_ID: "MLB" });
  assert.deepEqual([...brazil.mpApps.keys()], ["MLB"]);
  assert.equal(brazil.mpDefaultSite, "MLB");
  assert.equal(problem(brazil, ["mpClientId", "mpClientSecret", "mpWebhookSecret"]), undefined);
});

Deno.test("the single app's missing variables are named as before", () => {
  assert.equal(problem(loadConfig({}), ["mpClientId"]), "MP_CLIENT_ID: not set");
  const noSecret = loadConfig({ MP_CLIENT_ID: "111" });
  assert.equal(problem(noSecret, ["mpClientId"]), undefined);
  assert.equal(problem(noSecret, ["mpClientSecret"]), "MP_CLIENT_SECRET: not set");
  assert.equal(problem(noSecret, ["mpRedirectUri"]), "MP_REDIRECT_URI: not set");
  assert.equal(problem(noSecret, ["mpWebhookSecret"]), "MP_WEBHOOK_SECRET: not set");
  assert.equal(
    problem(loadConfig({ ...single, MP_SITE_ID: "XYZ" }), ["mpClientId"]),
    "MP_SITE_ID: not one of MLA, MLB, MLM, MLC, MCO, MLU, MPE",
  );
});

Deno.test("MP_APPS: one application per site; optional fields default to the single-app variables", () => {
  const config = loadConfig({
    MP_REDIRECT_URI: "https://fn.example/cb",
    MP_OAUTH_PKCE: "true",
    MP_APPS: JSON.stringify({
      MLA: entry("1"),
      MLB: entry("2", {
        webhook_secrets: ["old", "new"],
        redirect_uri: "https://fn.example/cb-br",
        auth_url: "https://auth.mercadopago.com.br",
        pkce: false,
      }),
    }),
  });
  assert.equal(config.problems.size, 0);
  assert.equal(config.mpDefaultSite, "MLA");
  const mla = config.mpApps.get("MLA")!;
  assert.equal(mla.clientId, "1");
  assert.equal(mla.redirectUri, "https://fn.example/cb");
  assert.equal(mla.authUrl, "https://auth.mercadopago.com");
  assert.equal(mla.pkce, true);
  const mlb = config.mpApps.get("MLB")!;
  assert.deepEqual(mlb.webhookSecrets, ["old", "new"]);
  assert.equal(mlb.redirectUri, "https://fn.example/cb-br");
  assert.equal(mlb.authUrl, "https://auth.mercadopago.com.br");
  assert.equal(mlb.pkce, false);
  assert.equal(
    problem(config, ["mpClientId", "mpClientSecret", "mpRedirectUri", "mpWebhookSecret"]),
    undefined,
  );
});

Deno.test("MP_APPS takes precedence over the single-app variables", () => {
  const config = loadConfig({ ...single, MP_APPS: JSON.stringify({ MLM: entry("9") }) });
  assert.deepEqual([...config.mpApps.keys()], ["MLM"]);
  assert.equal(config.mpDefaultSite, "MLM");
  assert.equal(config.mpApps.get("MLM")!.clientId, "9");
});

Deno.test("MP_APPS: the default site is MP_SITE_ID, else MLA, else the first entry", () => {
  const apps = JSON.stringify({ MLB: entry("2"), MLM: entry("3"), MLA: entry("1") });
  assert.equal(loadConfig({ MP_APPS: apps }).mpDefaultSite, "MLA");
  assert.equal(loadConfig({ MP_APPS: apps, MP_SITE_ID: "MLM" }).mpDefaultSite, "MLM");
  const noMla = JSON.stringify({ MPE: entry("7"), MCO: entry("8") });
  assert.equal(loadConfig({ MP_APPS: noMla }).mpDefaultSite, "MPE");
  const elsewhere = loadConfig({ MP_APPS: noMla, MP_SITE_ID: "MLU" });
  assert.equal(
    problem(elsewhere, ["mpClientId"]),
    "MP_SITE_ID: MLU has no application in MP_APPS",
  );
});

Deno.test("a malformed MP_APPS entry is misconfigured, naming the site and field, never a value", () => {
  const cases: [unknown, string][] = [
    ["not json", "MP_APPS: not a JSON object keyed by site"],
    [[entry("1")], "MP_APPS: not a JSON object keyed by site"],
    [{}, "MP_APPS: has no application"],
    [{ XYZ: entry("1") }, "MP_APPS: XYZ is not a site (MLA, MLB, MLM, MLC, MCO, MLU, MPE)"],
    [{ MLB: "x" }, "MP_APPS: MLB is not an object"],
    [
      { MLB: { ...entry("2"), client_secret: "" } },
      "MP_APPS: MLB.client_secret is not a non-empty string",
    ],
    [
      { MLB: { ...entry("2"), client_secret: 5 } },
      "MP_APPS: MLB.client_secret is not a non-empty string",
    ],
    [{ MLA: { ...entry("1"), client_id: 1 } }, "MP_APPS: MLA.client_id is not a non-empty string"],
    [
      { MLA: { ...entry("1"), webhook_secrets: [] } },
      "MP_APPS: MLA.webhook_secrets is not a non-empty array of non-empty strings",
    ],
    [
      { MLA: { ...entry("1"), webhook_secrets: SECRET } },
      "MP_APPS: MLA.webhook_secrets is not a non-empty array of non-empty strings",
    ],
    [{ MLA: { ...entry("1"), redirect_uri: "nope" } }, "MP_APPS: MLA.redirect_uri is not a URL"],
    [{ MLA: { ...entry("1"), auth_url: 3 } }, "MP_APPS: MLA.auth_url is not a URL"],
    [{ MLA: { ...entry("1"), pkce: "yes" } }, "MP_APPS: MLA.pkce is not true or false"],
    [
      { MLA: { ...entry("1"), client_secrets: "x" } },
      "MP_APPS: MLA has an unknown field client_secrets",
    ],
    [{ MLA: entry("1"), MLB: entry("1") }, "MP_APPS: MLB.client_id is also MLA's"],
  ];
  for (const [value, message] of cases) {
    const raw = typeof value === "string" ? value : JSON.stringify(value);
    const config = loadConfig({ ...single, MP_APPS: raw });
    for (const need of ["mpClientId", "mpClientSecret", "mpWebhookSecret"] as const) {
      const said = problem(config, [need]);
      assert.equal(said, message, raw);
      assert.ok(!said!.includes(SECRET), "no secret in the message");
    }
    assert.equal(config.mpApps.size, 0, "no application is served from a malformed MP_APPS");
  }
});

Deno.test("MP_APPS: an entry without redirect_uri and no MP_REDIRECT_URI is named when it is needed", () => {
  const config = loadConfig({ MP_APPS: JSON.stringify({ MLA: entry("1"), MLB: entry("2") }) });
  assert.equal(problem(config, ["mpClientId", "mpClientSecret"]), undefined);
  assert.equal(
    problem(config, ["mpRedirectUri"]),
    "MP_APPS: MLA.redirect_uri is not set (nor MP_REDIRECT_URI)",
  );
});

Deno.test("an account's application: its site's, the default one for an account without a site", () => {
  const config = loadConfig({
    MP_APPS: JSON.stringify({ MLA: entry("1"), MLB: entry("2") }),
  });
  assert.equal(appOfSite(config, "MLB")!.clientId, "2");
  assert.equal(appOfSite(config, null)!.clientId, "1");
  assert.equal(appOfSite(config, "MLM"), undefined, "no application for that site");
  assert.equal(appOfSite(config, "junk"), undefined);
  assert.equal(siteOf(config, "MLB"), "MLB");
  assert.equal(siteOf(config, null), "MLA");
  assert.equal(siteOf(loadConfig({ ...single, MP_SITE_ID: "MCO" }), null), "MCO");
  assert.throws(() => siteOf(loadConfig({ MP_SITE_ID: "ZZZ" }), null), {
    message: "MP_SITE_ID: not one of MLA, MLB, MLM, MLC, MCO, MLU, MPE",
  });
});

Deno.test("mp-oauth-start's application: the site asked for, else the account's, else the default; 400 for an unconfigured one", () => {
  const config = loadConfig({
    MP_APPS: JSON.stringify({ MLA: entry("1"), MLB: entry("2") }),
  });
  assert.equal(connectApp(config, "MLB", "MLA").site, "MLB");
  assert.equal(connectApp(config, undefined, "MLB").site, "MLB");
  assert.equal(connectApp(config, undefined, null).site, "MLA");
  for (const [site, stored] of [["MLM", null], [undefined, "MPE"]] as const) {
    assert.throws(() => connectApp(config, site, stored), (err: Error & { code?: string }) => {
      assert.equal(err.code, "invalid_request");
      return true;
    });
  }
});

Deno.test("mp-webhook's application: ?app=<site>, the default one without it, none for an unknown site", () => {
  const config = loadConfig({
    MP_APPS: JSON.stringify({ MLA: entry("1"), MLB: entry("2") }),
  });
  const at = (query: string) =>
    webhookApp(config, new URL(`https://fn.example/mp-webhook${query}`));
  assert.equal(at("?app=MLB")!.clientId, "2");
  assert.equal(at("")!.clientId, "1");
  assert.equal(at("?app=MLM"), undefined, "a site without an application");
  assert.equal(at("?app=mlb"), undefined, "not a site");
  assert.equal(at("?app=MLA&app=MLB"), undefined, "two applications");
});
