/**
 * The checkout client under Node, as a checkout service uses it: a new Node ESM project holds
 * only a copy of `client/mp_config.ts` and a small `main.ts`, compiled by the real `tsc` (the
 * TypeScript pinned in deno.json) with `strict`, `module`/`moduleResolution` `NodeNext` and the
 * stricter flags a service may add, then run by `node` (≥ 20) against the test stack: a fast
 * path answer, a 404 `mp_not_connected` as `MpConfigError`, and `withMpConfig`'s retry after
 * MercadoPago's 401.
 */
import assert from "node:assert/strict";
import {
  newAccount,
  newClient,
  pauseJobsDuringFile,
  provisionedPair,
  sandbox,
  stack,
} from "./_stack.ts";
import { nodeProject } from "./_node.ts";

pauseJobsDuringFile();

/** The service's tsconfig: strict NodeNext, plus what stricter projects turn on. */
const TSCONFIG = {
  compilerOptions: {
    strict: true,
    module: "NodeNext",
    moduleResolution: "NodeNext",
    target: "ES2022",
    // The platform's fetch types without a package (a Nest service has @types/node instead).
    lib: ["ES2022", "DOM"],
    types: [],
    rootDir: "src",
    outDir: "dist",
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    noImplicitOverride: true,
    noImplicitReturns: true,
    noUnusedLocals: true,
    noUnusedParameters: true,
    noPropertyAccessFromIndexSignature: true,
    verbatimModuleSyntax: true,
    isolatedModules: true,
    erasableSyntaxOnly: true,
  },
  include: ["src"],
};

/** The service: reads credentials, shows an error, charges through withMpConfig; one JSON line. */
const MAIN = `import { createMpConfigClient, type MpConfig, MpConfigError } from "./mp_config.js";

// Node's process, declared here so the project needs no package but TypeScript.
declare const process: { env: Record<string, string | undefined> };

const env = (name: string): string => process.env[name] ?? "";
const mp = createMpConfigClient({ functionsUrl: env("FUNCTIONS_URL"), secretKey: env("SECRET_KEY") });
const out: Record<string, unknown> = {};

const config: MpConfig = await mp.getMpConfig(env("CONNECTED_CLIENT_ID"));
out["connected"] = {
  keys: Object.keys(config).sort(),
  client_id: config.client_id,
  source: config.source,
  token_version: config.token_version,
  site_id: config.site_id,
  token_is_the_sellers: config.access_token === env("EXPECTED_TOKEN"),
};

try {
  await mp.getMpConfig(env("UNCONNECTED_CLIENT_ID"));
  out["unconnected"] = "answered";
} catch (err) {
  out["unconnected"] = err instanceof MpConfigError
    ? { is_mp_config_error: true, name: err.name, status: err.status, code: err.code }
    : { other: String(err) };
}

const versions: (number | null)[] = [];
const res = await mp.withMpConfig(env("KILLED_CLIENT_ID"), (c) => {
  versions.push(c.token_version);
  return fetch(env("MP_API_URL") + "/users/me", {
    headers: { authorization: "Bearer " + c.access_token },
  });
});
out["retried"] = { status: res.status, versions };

console.log(JSON.stringify(out));
`;

Deno.test("under Node: the copied client compiles with tsc (strict, NodeNext) and reads credentials, errors and retries against the stack", async () => {
  const project = await nodeProject(["typescript"]);
  try {
    await project.write(
      "src/mp_config.ts",
      await Deno.readTextFile(new URL("../client/mp_config.ts", import.meta.url)),
    );
    await project.write("src/main.ts", MAIN);
    await project.write("tsconfig.json", JSON.stringify(TSCONFIG, null, 2));
    const tsc = await project.node(["node_modules/typescript/bin/tsc", "-p", "."]);
    assert.equal(tsc.code, 0, `tsc failed:\n${tsc.stdout}${tsc.stderr}`);
    const version = await project.node(["node_modules/typescript/bin/tsc", "--version"]);
    assert.match(version.stdout, /^Version 5\./);

    const connected = await provisionedPair();
    const unconnected = await newClient();
    await newAccount({ clientId: unconnected });
    const killed = await provisionedPair();
    await sandbox.invalidate(killed.seller, "access");
    const run = await project.node(["dist/main.js"], {
      FUNCTIONS_URL: stack.functionsUrl,
      SECRET_KEY: stack.secretKey,
      MP_API_URL: stack.env("MP_API_URL"),
      CONNECTED_CLIENT_ID: connected.clientId,
      EXPECTED_TOKEN: connected.grant.access_token,
      UNCONNECTED_CLIENT_ID: unconnected,
      KILLED_CLIENT_ID: killed.clientId,
    });
    assert.equal(run.code, 0, `node failed:\n${run.stderr}`);
    const out = JSON.parse(run.stdout.trim());
    assert.deepEqual(out.connected, {
      keys: ["access_token", "client_id", "public_key", "site_id", "source", "token_version"],
      client_id: connected.clientId,
      source: "fast_path",
      token_version: 1,
      site_id: "MLA",
      token_is_the_sellers: true,
    });
    assert.deepEqual(out.unconnected, {
      is_mp_config_error: true,
      name: "MpConfigError",
      status: 404,
      code: "mp_not_connected",
    });
    assert.equal(out.retried.status, 200, "the second run's token is accepted");
    assert.equal(out.retried.versions.length, 2);
    assert.equal(out.retried.versions[0], 1);
    assert.ok(out.retried.versions[1] > 1);
  } finally {
    await project.remove();
  }
});
