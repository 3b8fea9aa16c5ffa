/**
 * A transaction-mode pooler in front of a local cluster, as Supabase's Supavisor on port
 * 6543 is for Edge Functions: pgbouncer (Debian's), TLS required from clients with a
 * throwaway self-signed certificate, SCRAM authentication of `postgres` with a random
 * password, and trust authentication to the server over loopback. One process per cluster,
 * run as the `postgres` OS user (pgbouncer refuses root); its files live next to the
 * cluster's data directory.
 */
import { chownToPostgres, MissingPrerequisite } from "./postgres.ts";

const IS_ROOT = Deno.uid() === 0;

/** True while process `pid` exists and is not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Where a pooler lives and what it fronts. */
interface PoolerSpec {
  name: string;
  /** Directory for its config, auth file, pid file and log (created, wiped on `create`). */
  dir: string;
  /** Port it listens on (127.0.0.1). */
  port: number;
  /** Port of the cluster it fronts (127.0.0.1, database `postgres`). */
  serverPort: number;
  /** The TLS certificate and key it presents (see `makeCertificate`). */
  cert: { certFile: string; keyFile: string };
  /** The password clients must give for `postgres`. */
  password: string;
}

/** Finds pgbouncer (`PGBOUNCER` first), or undefined. */
export async function findPgbouncer(): Promise<string | undefined> {
  for (const path of [Deno.env.get("PGBOUNCER"), "/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]) {
    if (!path) continue;
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch { /* not there */ }
  }
  return undefined;
}

/** Makes a throwaway self-signed certificate for 127.0.0.1/localhost in `dir`. */
export async function makeCertificate(dir: string): Promise<{ certFile: string; keyFile: string }> {
  await Deno.mkdir(dir, { recursive: true });
  const certFile = `${dir}/pooler.crt`;
  const keyFile = `${dir}/pooler.key`;
  const command = new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ],
    stdout: "null",
    stderr: "piped",
  });
  const out = await command.output().catch((err) => {
    if (err instanceof Deno.errors.NotFound) {
      throw new MissingPrerequisite("openssl is missing: run `sudo apt-get install openssl`");
    }
    throw err;
  });
  if (!out.success) {
    throw new Error(`openssl req -x509 failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  await Deno.chmod(keyFile, 0o600);
  await chownToPostgres(certFile);
  await chownToPostgres(keyFile);
  return { certFile, keyFile };
}

/** The URL clients use: `postgres` with the password, TLS required. */
function poolerUrl(port: number, password: string): string {
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres` +
    "?sslmode=require";
}

/** One pgbouncer process: `create()` writes its files, `start()`/`stop()` run it. */
export class Pooler {
  readonly url: string;
  readonly pidFile: string;
  constructor(readonly spec: PoolerSpec, readonly bin: string) {
    this.url = poolerUrl(spec.port, spec.password);
    this.pidFile = `${spec.dir}/pgbouncer.pid`;
  }

  /** Writes pgbouncer.ini and the auth file (stopping an old process first). */
  async create(): Promise<void> {
    const { dir } = this.spec;
    await this.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(dir, { recursive: true });
    const ini = [
      "[databases]",
      `postgres = host=127.0.0.1 port=${this.spec.serverPort} dbname=postgres user=postgres`,
      "",
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${this.spec.port}`,
      "unix_socket_dir =",
      `pidfile = ${this.pidFile}`,
      `logfile = ${dir}/pgbouncer.log`,
      "auth_type = scram-sha-256",
      `auth_file = ${dir}/userlist.txt`,
      "pool_mode = transaction",
      "max_client_conn = 500",
      "default_pool_size = 20",
      "reserve_pool_size = 5",
      // Keeps a server connection open, so after a restart of the cluster pgbouncer logs in
      // again by itself (within server_login_retry) instead of at the next client.
      "min_pool_size = 1",
      // postgres.js sends extra_float_digits; other drivers send options.
      "ignore_startup_parameters = extra_float_digits,options",
      // A restarted cluster is used again within a second.
      "server_login_retry = 1",
      "server_connect_timeout = 3",
      // A client waits at most this long for a server connection, then gets an error and
      // its query is dropped. Below the functions' DB_TIMEOUT_MS (5 s): a query they gave
      // up on must not run later, when the database is back (a sync reported as failed
      // would land after all).
      "query_wait_timeout = 3",
      "client_tls_sslmode = require",
      `client_tls_cert_file = ${this.spec.cert.certFile}`,
      `client_tls_key_file = ${this.spec.cert.keyFile}`,
      "server_tls_sslmode = disable",
      // `postgres` may read the console (SHOW CLIENTS …): the tests see who connects.
      "stats_users = postgres",
      "log_connections = 0",
      "log_disconnections = 0",
      "log_pooler_errors = 1",
      "",
    ].join("\n");
    await Deno.writeTextFile(`${dir}/pgbouncer.ini`, ini);
    const quoted = this.spec.password.replaceAll('"', '""');
    await Deno.writeTextFile(`${dir}/userlist.txt`, `"postgres" "${quoted}"\n`, { mode: 0o600 });
    await chownToPostgres(dir, true);
  }

  #child?: Deno.ChildProcess;

  /**
   * Starts pgbouncer in the foreground as a child of this process (so it is reaped when it
   * exits: the container's init may reap nothing) and waits until it accepts connections.
   */
  async start(): Promise<void> {
    const ini = `${this.spec.dir}/pgbouncer.ini`;
    const [cmd, args] = IS_ROOT
      ? ["runuser", ["-u", "postgres", "--", this.bin, "-q", ini]]
      : [this.bin, ["-q", ini]];
    const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
      .spawn();
    this.#child = child;
    const stderr = new Response(child.stderr).text();
    let exited = false;
    child.status.then(() => (exited = true));
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.spec.port });
        conn.close();
        return;
      } catch (err) {
        if (exited || Date.now() > deadline) {
          const why = exited ? (await stderr).trim().split("\n").slice(-2).join(" | ") : err;
          throw new Error(`pgbouncer (${this.spec.name}) did not start: ${why}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** The running process id (from its pid file), if it is alive. */
  async pid(): Promise<number | undefined> {
    try {
      const pid = Number((await Deno.readTextFile(this.pidFile)).trim());
      return pid && await isAlive(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Stops pgbouncer (SIGTERM: immediate shutdown) and waits until it is gone. */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    const pid = await this.pid();
    if (pid !== undefined) {
      try {
        Deno.kill(pid, "SIGTERM");
      } catch { /* already gone */ }
    }
    const deadline = Date.now() + 10_000;
    if (child) {
      const done = await Promise.race([
        child.status.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
      ]);
      if (!done) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
    }
    while (pid !== undefined && Date.now() < deadline && await isAlive(pid)) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await Deno.remove(this.pidFile).catch(() => {});
  }
}
