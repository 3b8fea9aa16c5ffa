/**
 * Throwaway PostgreSQL 15 clusters for the local stack and the tests: found, created,
 * started, stopped, paused. As root, the server runs as the `postgres` user.
 */

/** Where a cluster lives and how to reach it. */
interface ClusterSpec {
  name: string;
  dir: string;
  port: number;
  /** Extra postgresql.conf lines (pg_cron, …). */
  conf?: string[];
}

const IS_ROOT = Deno.uid() === 0;

/** Raised when a prerequisite is missing; its message is the one line to print. */
export class MissingPrerequisite extends Error {}

async function output(cmd: string, args: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

/** Where PostgreSQL 15 server binaries usually are (`PG_BIN` first when set). */
async function postgresCandidates(): Promise<string[]> {
  const candidates = [Deno.env.get("PG_BIN"), "/usr/lib/postgresql/15/bin"];
  candidates.push(await output("pg_config", ["--bindir"]));
  return candidates.filter((c): c is string => !!c);
}

/** Finds the PostgreSQL 15 server binaries and pg_cron, or throws one clear line. */
export async function findPostgres(candidates?: string[]): Promise<string> {
  for (const dir of candidates ?? await postgresCandidates()) {
    const version = await output(`${dir}/postgres`, ["--version"]);
    if (version?.includes(" 15.")) {
      const share = await output(`${dir}/pg_config`, ["--sharedir"]) ??
        "/usr/share/postgresql/15";
      try {
        await Deno.stat(`${share}/extension/pg_cron.control`);
      } catch {
        throw new MissingPrerequisite(
          "pg_cron for PostgreSQL 15 is missing: run `sudo apt-get install postgresql-15-cron`",
        );
      }
      return dir;
    }
  }
  throw new MissingPrerequisite(
    "PostgreSQL 15 server binaries not found: run `sudo apt-get install postgresql-15 postgresql-15-cron`",
  );
}

/** The bootstrap superuser of a local cluster, as in Supabase's image (`initdb -U supabase_admin`). */
const SUPERUSER = "supabase_admin";

/**
 * The connection URL of a local cluster as `user` (trust authentication, loopback only, no
 * TLS: `sslmode=disable`, which the Supabase CLI needs to hear): by default the superuser,
 * for the stack's own work, scripts and tests.
 */
function clusterUrl(port: number, user = SUPERUSER, database = "postgres"): string {
  return `postgres://${user}@127.0.0.1:${port}/${database}?sslmode=disable`;
}

/** Runs `bin` (as the `postgres` OS user when root); throws with its last stderr lines. */
async function run(bin: string, args: string[], opts: { quiet?: boolean } = {}) {
  const [cmd, argv] = IS_ROOT ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
  const out = await new Deno.Command(cmd, { args: argv, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success && !opts.quiet) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
    throw new Error(`${bin.split("/").pop()} failed: ${err}`);
  }
  return out.success;
}

/** A local cluster: `create()` wipes and initialises it, `start()`/`stop()` run it. */
export class Cluster {
  /** Direct URL as the superuser `supabase_admin`. */
  readonly url: string;
  /** Direct URL as the non-superuser `postgres` (what migrations run as). */
  readonly postgresUrl: string;
  constructor(readonly spec: ClusterSpec, readonly bin: string) {
    this.url = clusterUrl(spec.port);
    this.postgresUrl = clusterUrl(spec.port, "postgres");
  }

  /** Deletes any old data directory and runs initdb with a fast, loopback-only config. */
  async create(): Promise<void> {
    const { dir } = this.spec;
    await this.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(dir, { recursive: true });
    await chownToPostgres(dir);
    await run(`${this.bin}/initdb`, [
      "-D",
      dir,
      "-U",
      SUPERUSER,
      "-A",
      "trust",
      "-E",
      "UTF8",
      "--locale=C",
      "-N",
    ]);
    const conf = [
      `port = ${this.spec.port}`,
      "listen_addresses = '127.0.0.1'",
      "unix_socket_directories = ''",
      "max_connections = 300",
      "fsync = off",
      "synchronous_commit = off",
      "full_page_writes = off",
      "log_min_messages = warning",
      "timezone = 'UTC'",
      ...(this.spec.conf ?? []),
    ];
    const path = `${dir}/postgresql.conf`;
    await Deno.writeTextFile(path, `\n${conf.join("\n")}\n`, { append: true });
  }

  /** Starts the server and waits until it accepts connections. */
  async start(): Promise<void> {
    await run(`${this.bin}/pg_ctl`, [
      "-D",
      this.spec.dir,
      "-l",
      `${this.spec.dir}/server.log`,
      "-w",
      "-t",
      "30",
      "start",
    ]);
  }

  /** Stops the server (fast mode); a cluster that is not running is fine. */
  async stop(): Promise<void> {
    try {
      await Deno.stat(`${this.spec.dir}/postmaster.pid`);
    } catch {
      return;
    }
    await run(`${this.bin}/pg_ctl`, ["-D", this.spec.dir, "-m", "fast", "-w", "stop"], {
      quiet: true,
    });
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) every server process: a database that hangs. */
  async freeze(frozen: boolean): Promise<void> {
    const pid = (await Deno.readTextFile(`${this.spec.dir}/postmaster.pid`)).split("\n")[0];
    const children = (await output("pgrep", ["-P", pid]))?.split("\n").filter(Boolean) ?? [];
    await new Deno.Command("kill", {
      args: [frozen ? "-STOP" : "-CONT", pid, ...children],
    }).output();
  }
}

/** Hands `path` to the `postgres` OS user when running as root (a no-op otherwise). */
export async function chownToPostgres(path: string, recursive = false): Promise<void> {
  if (!IS_ROOT) return;
  const args = [...(recursive ? ["-R"] : []), "postgres:postgres", path];
  await new Deno.Command("chown", { args }).output();
}

/** Makes `dir` usable by the `postgres` user when running as root (a parent may be private). */
export async function ensureReachable(dir: string): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  if (!IS_ROOT) return dir;
  const ok = await new Deno.Command("runuser", {
    args: ["-u", "postgres", "--", "test", "-x", dir],
  }).output();
  if (ok.success) return dir;
  const fallback = `/tmp/mp-sync-${dir.replace(/[^A-Za-z0-9]+/g, "-").slice(-40)}`;
  await Deno.mkdir(fallback, { recursive: true });
  return fallback;
}
