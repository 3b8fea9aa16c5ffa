/**
 * The local platform itself: config.toml is what the Supabase CLI needs, missing
 * prerequisites are one clear line, a stack stops every process it started, and stacks side by
 * side keep to their own state folders.
 */
import assert from "node:assert/strict";
import { parse } from "smol-toml";
import { findPostgres, MissingPrerequisite } from "../local/postgres.ts";
import { launchStack } from "../local/launch.ts";
import { isAlive } from "../local/pooler.ts";
import { portEnv, resolvePorts } from "../local/ports.ts";
import { connect } from "../shared/platform/db.ts";
import { call, stack, testPort } from "./_stack.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();

/** When each of a stack's two clusters started: a cluster wiped or restarted starts anew. */
async function clusterStarts(env: (name: string) => string): Promise<string[]> {
  const starts: string[] = [];
  for (const name of ["BACKEND_DB_URL", "ADMIN_DB_URL"]) {
    const sql = connect(env(name), { max: 1 });
    try {
      const [row] = await sql`select pg_postmaster_start_time()::text as started`;
      starts.push(row.started);
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
  return starts;
}

/** Calls get-mp-config through a stack's gateway for an unknown client: 404 when it answers. */
async function unknownClientStatus(functionsUrl: string, secretKey: string): Promise<number> {
  const res = await fetch(`${functionsUrl}/get-mp-config`, {
    method: "POST",
    headers: { apikey: secretKey, "content-type": "application/json" },
    body: JSON.stringify({ client_id: crypto.randomUUID() }),
  });
  await res.body?.cancel();
  return res.status;
}

/**
 * Sources `file` in `bash -c 'set -a; . FILE; set +a'` and answers its stderr and, for each of
 * `names`, whether bash's value equals `expected` (never the values: they are secrets).
 */
async function sourcedInBash(file: string, expected: Record<string, string>) {
  const names = Object.keys(expected);
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      'set -a; . "$1"; set +a; shift; for n in "$@"; do printf "%s\\0" "${!n}"; done',
      "bash",
      file,
      ...names,
    ],
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const values = decoder.decode(out.stdout).split("\0");
  const differing = names.filter((name, i) => values[i] !== expected[name]);
  return { code: out.code, stderr: decoder.decode(out.stderr), differing, values, names };
}

Deno.test("supabase/config.toml declares every function, verify_jwt off, entrypoint and import map", async () => {
  const toml = parse(await Deno.readTextFile(new URL("supabase/config.toml", ROOT))) as {
    functions: Record<string, { verify_jwt: boolean; entrypoint: string; import_map: string }>;
  };
  const dirs: string[] = [];
  for await (const e of Deno.readDir(new URL("supabase/functions/", ROOT))) {
    if (e.isDirectory) dirs.push(e.name);
  }
  assert.deepEqual(Object.keys(toml.functions).sort(), dirs.sort());
  for (
    const required of [
      "get-mp-config",
      "provision-step-7-1",
      "mp-oauth-start",
      "mp-oauth-callback",
      "mp-refresh",
      "mp-revoke",
      "mp-webhook",
    ]
  ) {
    assert.ok(toml.functions[required], required);
  }
  for (const [name, fn] of Object.entries(toml.functions)) {
    assert.equal(fn.verify_jwt, false, name);
    await Deno.stat(new URL(`supabase/${fn.entrypoint}`, ROOT));
    await Deno.stat(new URL(`supabase/${fn.import_map}`, ROOT));
    const mod = await import(new URL(`supabase/${fn.entrypoint}`, ROOT).href);
    assert.equal(typeof mod.default.fetch, "function", `${name} default-exports { fetch }`);
  }
});

Deno.test("missing PostgreSQL binaries or pg_cron are one line naming the apt package", async () => {
  const empty = await Deno.makeTempDir();
  await assert.rejects(findPostgres([empty]), (err: Error) => {
    assert.ok(err instanceof MissingPrerequisite);
    assert.match(err.message, /apt-get install postgresql-15 /);
    assert.ok(!err.message.includes("\n"));
    return true;
  });
  const share = await Deno.makeTempDir();
  await Deno.mkdir(`${share}/extension`);
  await Deno.writeTextFile(`${empty}/postgres`, "#!/bin/sh\necho 'postgres (PostgreSQL) 15.18'\n", {
    mode: 0o755,
  });
  await Deno.writeTextFile(`${empty}/pg_config`, `#!/bin/sh\necho '${share}'\n`, { mode: 0o755 });
  await assert.rejects(findPostgres([empty]), /apt-get install postgresql-15-cron/);
  await Deno.writeTextFile(`${share}/extension/pg_cron.control`, "");
  assert.equal(await findPostgres([empty]), empty);
  await Deno.remove(empty, { recursive: true });
  await Deno.remove(share, { recursive: true });
});

Deno.test("resolvePorts: base + 0 … 5, each variable overrides its own; a bad value is one line", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.deepEqual(resolvePorts(env({}), 25321), {
    gateway: 25321,
    backend: 25322,
    admin: 25323,
    sandbox: 25324,
    backendPooler: 25325,
    adminPooler: 25326,
  });
  const moved = resolvePorts(env({ STACK_PORT_BASE: "29000", SANDBOX_PORT: "29999" }), 25321);
  assert.equal(moved.gateway, 29000);
  assert.equal(moved.adminPooler, 29005);
  assert.equal(moved.sandbox, 29999);
  for (const bad of ["x", "0", "65536", "12.5"]) {
    assert.throws(() => resolvePorts(env({ ADMIN_DB_PORT: bad }), 25321), {
      message: `ADMIN_DB_PORT=${bad} is not a TCP port (1–65535)`,
    });
  }
});

Deno.test("a port already held stops the stack before it starts anything, in one line naming it", async () => {
  const base = testPort(50);
  const held = Deno.listen({ hostname: "127.0.0.1", port: base + 2 });
  const dir = `.local/stack-test-held-${base}`;
  const stateDir = new URL(`${dir}/`, ROOT).pathname;
  await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  try {
    await assert.rejects(
      launchStack({ stateDir: dir, portBase: base }),
      new RegExp(
        `\\(exit 1\\): local stack failed: port ${base + 2} \\(ADMIN_DB_PORT\\) is in use`,
      ),
    );
    const lines = (await Deno.readTextFile(`${stateDir}stack.log`)).trim().split("\n");
    assert.equal(lines.length, 1, lines.join(" | "));
    await assert.rejects(Deno.stat(`${stateDir}pg`), Deno.errors.NotFound, "no cluster");
  } finally {
    held.close();
  }
});

Deno.test("a second stack starts beside this one in its own state folder; this one keeps answering while and after it runs; SIGTERM stops every process and cluster", async () => {
  const starts = await clusterStarts(stack.env);
  assert.equal((await call("get-mp-config", { client_id: crypto.randomUUID() })).status, 404);
  // Ports the tests own (base + 90 …), so they move with STACK_PORT_BASE; no STACK_STATE_DIR:
  // the stack picks its folder from its base, as `deno task dev` on another base does.
  const second = testPort(90);
  const launched = await launchStack({ portBase: second });
  try {
    const env = launched.env;
    assert.equal(launched.folder, `.local/test-${second}`);
    assert.match(
      await Deno.readTextFile(launched.logFile),
      new RegExp(
        `state folder \\.local/test-${second}, env file \\.local/test-${second}/stack\\.env`,
      ),
    );
    assert.equal(env.GATEWAY_PORT, String(second));
    const health = await fetch(`${env.SUPABASE_URL}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    assert.equal(await unknownClientStatus(env.FUNCTIONS_URL, env.SECRET_KEY), 404);
    // This stack, while the second runs: its gateway calls a function, its clusters never restarted.
    assert.equal((await call("get-mp-config", { client_id: crypto.randomUUID() })).status, 404);
    assert.deepEqual(await clusterStarts(stack.env), starts);

    // The second stack's stack.env, as a person sources it: no complaint, every value intact.
    const sourced = await sourcedInBash(`${launched.stateDir}/stack.env`, env);
    assert.equal(sourced.stderr, "");
    assert.equal(sourced.code, 0);
    assert.deepEqual(sourced.differing, [], "variables bash reads otherwise than the stack wrote");
    const secrets = sourced.values[sourced.names.indexOf("PLATFORM_WEBHOOK_SECRETS")];
    assert.ok(/^whsec_\S+ whsec_\S+$/.test(secrets), "PLATFORM_WEBHOOK_SECRETS: two secrets");

    const pids = [env.BACKEND_PGDATA, env.ADMIN_PGDATA].map((d) => `${d}/postmaster.pid`);
    for (const pid of pids) await Deno.stat(pid);
    // A pgbouncer per cluster, TLS required, answering as postgres (not a superuser).
    const poolerPids: number[] = [];
    const poolers = [[env.BACKEND_POOLER_URL, String(second + 4)], [
      env.ADMIN_POOLER_URL,
      String(second + 5),
    ]];
    for (const [url, port] of poolers) {
      assert.equal(new URL(url).port, port);
      assert.equal(new URL(url).searchParams.get("sslmode"), "require");
      const sql = connect(url, { max: 1 });
      const [row] = await sql`select current_user as user,
      (select rolsuper from pg_roles where rolname = current_user) as rolsuper`;
      await sql.end();
      assert.deepEqual({ ...row }, { user: "postgres", rolsuper: false });
      const plain = connect(url.replace("sslmode=require", "sslmode=disable"), { max: 1 });
      await assert.rejects(plain`select 1`, /SSL required/);
      await plain.end();
      const pid = Number(
        (await Deno.readTextFile(
          `${env.BACKEND_PGDATA}/../${
            url === env.BACKEND_POOLER_URL ? "backend" : "admin"
          }-pooler/pgbouncer.pid`,
        )).trim(),
      );
      assert.ok(await isAlive(pid), "pgbouncer runs");
      poolerPids.push(pid);
    }

    const { code } = await launched.stop(); // SIGTERM
    assert.equal(code, 0);
    assert.match(await Deno.readTextFile(launched.logFile), /Local stack stopped/);
    for (const pid of pids) await assert.rejects(Deno.stat(pid), Deno.errors.NotFound);
    for (const pid of poolerPids) assert.equal(await isAlive(pid), false, "pgbouncer stopped");
    await assert.rejects(fetch(`${env.SUPABASE_URL}/health`));
    for (
      const port of [
        env.BACKEND_DB_PORT,
        env.ADMIN_DB_PORT,
        env.SANDBOX_PORT,
        env.BACKEND_POOLER_PORT,
        env.ADMIN_POOLER_PORT,
      ]
    ) {
      await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: Number(port) }));
    }
    await assert.rejects(Deno.stat(`${launched.stateDir}/stack.env`), Deno.errors.NotFound);
  } finally {
    await launched.stop(); // already stopped unless an assertion failed first
  }
  // This stack, after the second stopped: the same clusters, answering through its gateway.
  assert.equal((await call("get-mp-config", { client_id: crypto.randomUUID() })).status, 404);
  assert.deepEqual(await clusterStarts(stack.env), starts);
});

Deno.test("a second stack on the same state folder is refused in one line; the first keeps running", async () => {
  const firstBase = testPort(80);
  const dir = `.local/stack-test-${firstBase}`;
  const first = await launchStack({ stateDir: dir, portBase: firstBase });
  try {
    const env = (name: string) => first.env[name];
    const starts = await clusterStarts(env);
    const envFile = `${first.stateDir}/stack.env`;
    const written = await Deno.readTextFile(envFile);
    const refusal =
      `state folder ${dir} is in use by another local stack (pid ${first.env.STACK_PID}): stop it, or start this one with another STACK_PORT_BASE or STACK_STATE_DIR`;

    // On other ports (base + 90 …), the same folder: refused before it touches anything.
    const second = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("local/stack.ts", ROOT).pathname, "--profile", "test"],
      env: { ...portEnv(testPort(90)), STACK_STATE_DIR: dir },
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
    assert.equal(second.code, 1);
    assert.equal(decoder.decode(second.stdout), "");
    assert.equal(decoder.decode(second.stderr), `local stack failed: ${refusal}\n`);
    // launchStack refuses too, before it truncates the first one's log.
    await assert.rejects(launchStack({ stateDir: dir, portBase: testPort(90) }), {
      message: refusal,
    });
    assert.match(await Deno.readTextFile(first.logFile), /local stack \(test\) up in/);

    // The first: its env file as it wrote it, its gateway calling a function, its clusters the same.
    assert.ok((await Deno.readTextFile(envFile)) === written, "its stack.env is untouched");
    assert.equal(await unknownClientStatus(first.env.FUNCTIONS_URL, first.env.SECRET_KEY), 404);
    assert.deepEqual(await clusterStarts(env), starts);
  } finally {
    assert.equal((await first.stop()).code, 0);
  }
});

Deno.test("the functions reach both databases through the poolers, as postgres", async () => {
  // An unknown client: the fast path misses, the fallback looks in the Admin DB.
  const res = await call("get-mp-config", { client_id: crypto.randomUUID() });
  assert.equal(res.status, 404);
  for (const name of ["BACKEND_POOLER_URL", "ADMIN_POOLER_URL"]) {
    const consoleUrl = new URL(stack.env(name));
    consoleUrl.pathname = "/pgbouncer";
    const out = await new Deno.Command(`${stack.env("PG_BIN")}/psql`, {
      args: [consoleUrl.href, "-AtF", "|", "-c", "show clients"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    // type|user|database|…: the console itself is on database `pgbouncer`; the rest are pools.
    const clients = new TextDecoder().decode(out.stdout).trim().split("\n")
      .map((l) => l.split("|")).filter((c) => c[2] === "postgres");
    assert.ok(clients.length > 0, `${name}: the functions' pool is connected`);
    for (const c of clients) assert.equal(c[1], "postgres", `${name}: as postgres`);
  }
});
