/**
 * Database pools (postgres.js) for the Backend and Admin DBs, with a bound on every
 * query so that a database that hangs makes a request fail fast instead of never.
 */
import postgres from "postgres";

/** A postgres.js connection pool. */
export type Sql = postgres.Sql;

/** Raised when a database cannot be reached or does not answer in time. */
export class UnavailableError extends Error {
  constructor(readonly database: "backend" | "admin", cause?: unknown) {
    super(`${database} database unavailable`, { cause });
    this.name = "UnavailableError";
  }
}

/**
 * Connections a function's isolate opens at most per database. An isolate serves one
 * request at a time (docs/local-stack.md), and a request runs a few queries concurrently at most (a
 * refresh run's bounded MercadoPago calls save through the same pool, one statement each),
 * so 3 per database keeps an isolate cheap for the pooler: with Supavisor's or pgbouncer's
 * pool in front, many isolates share a small number of server connections.
 */
export const FUNCTION_POOL_MAX = 3;

/**
 * Opens a lazily-connecting pool; `bigint` columns come back as JavaScript numbers.
 *
 * Works directly and through a transaction-mode pooler (Supavisor on port 6543, pgbouncer
 * locally): no prepared statements (`prepare: false`: a pooler may hand the next statement
 * to another server connection), and no session state anywhere in the functions (no `SET`,
 * `LISTEN`, session advisory locks, temporary tables, or transactions spanning statements
 * sent separately), and no array-type lookup per connection (see `fetch_types`). TLS
 * follows the URL: `sslmode=require` encrypts without verifying the certificate
 * (postgres.js `ssl: "require"`), `sslmode=disable` or none is plain.
 */
export function connect(
  url: string,
  opts: {
    max?: number;
    timeoutMs?: number;
    /**
     * Look up array types per connection (postgres.js `fetch_types`; default off, see
     * below). Only for direct connections that need `sql.reserve()`, which postgres.js
     * 3.4.9 never resolves on a fresh connection without it.
     */
    fetchTypes?: boolean;
  } = {},
): Sql {
  return postgres(url, {
    max: opts.max ?? 5,
    prepare: false,
    // No array-type lookup after connecting: postgres.js runs it as a promise nobody awaits,
    // and through a pooler it is the first statement that needs a server, so a database
    // that is down (pgbouncer's "server login has been failing", Supavisor alike) became an
    // unhandled rejection that killed the isolate. Array parameters go through `pgArray`.
    fetch_types: opts.fetchTypes ?? false,
    connect_timeout: Math.ceil((opts.timeoutMs ?? 5000) / 1000),
    idle_timeout: 30,
    max_lifetime: 60 * 30,
    onnotice: () => {},
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (v: number | bigint) => String(v),
        parse: (v: string) => Number(v),
      },
    },
  });
}

const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ETIMEDOUT",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "53300", // too_many_connections
]);

/** True when `err` means the database could not be reached, rather than a query error. */
function isUnavailable(err: unknown): boolean {
  if (err instanceof UnavailableError) return true;
  const e = err as { code?: string; errno?: string; name?: string };
  if (e?.code?.startsWith("08")) return true;
  return UNAVAILABLE_CODES.has(e?.code ?? "") || UNAVAILABLE_CODES.has(e?.errno ?? "") ||
    e?.name === "ConnectionRefused" || e?.name === "ConnectionReset";
}

/**
 * Errors that mean the statement never reached a server, so running the work again is
 * safe: a pooler refusing a client while its server logins fail (pgbouncer's fast-fail
 * after the database was down: `server_login_retry`, SQLSTATE 08P01) and postgres.js
 * failing to write the query on a connection the pooler had already closed.
 */
function neverSent(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (e?.code === "08P01" && /server_login_retry/.test(e.message ?? "")) return true;
  return e?.code === "CONNECTION_CLOSED" && /^write /.test(e.message ?? "");
}

/**
 * How long `query` keeps retrying work that was never sent (see `neverSent`): a little over
 * the pooler's `server_login_retry` (1 s), so a database that just came back is used at once,
 * while one that is down still fails fast (well within DB_TIMEOUT_MS).
 */
const RETRY_WINDOW_MS = 1_500;

/** Queries in flight with their deadlines, swept by one timer instead of one timer each. */
const inFlight = new Set<{ deadline: number; expire(): void }>();
let sweeper: ReturnType<typeof setInterval> | undefined;

function sweep() {
  const now = performance.now();
  for (const entry of inFlight) if (entry.deadline <= now) entry.expire();
  if (inFlight.size === 0) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}

/**
 * Runs `work` against `sql`, failing with `UnavailableError` when the database cannot be
 * reached or takes longer than `timeoutMs` (checked every 50 ms); other errors pass through.
 * Work that failed before any statement reached a server (`neverSent`) is run again, every
 * 100 ms for up to `RETRY_WINDOW_MS` (within the deadline).
 */
export function query<T>(
  database: "backend" | "admin",
  timeoutMs: number,
  work: () => Promise<T>,
  /** Called on a timeout or a connection-level error, before a retry (see `Pool`). */
  onFault?: () => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const entry = {
      deadline: performance.now() + timeoutMs,
      expire() {
        inFlight.delete(entry);
        onFault?.();
        reject(new UnavailableError(database, "timeout"));
      },
    };
    inFlight.add(entry);
    if (!sweeper) {
      sweeper = setInterval(sweep, 50);
      Deno.unrefTimer(sweeper as unknown as number);
    }
    const started = performance.now();
    const attempt = () =>
      inFlight.has(entry) && work().then(
        (value) => {
          inFlight.delete(entry);
          resolve(value);
        },
        (err) => {
          if (!inFlight.has(entry)) return; // already timed out
          if (isUnavailable(err)) onFault?.();
          const elapsed = performance.now() - started;
          if (neverSent(err) && elapsed + 100 < Math.min(RETRY_WINDOW_MS, timeoutMs)) {
            setTimeout(attempt, 100);
            return;
          }
          inFlight.delete(entry);
          reject(isUnavailable(err) ? new UnavailableError(database, err) : err);
        },
      );
    attempt();
  });
}

/**
 * A pool that starts over after a database fault. postgres.js 3.4.9 keeps a server error
 * that arrived without a ReadyForQuery (a pooler refusing or dropping a client: "server
 * login has been failing", `query_wait_timeout`) on the connection object and hands it to
 * whatever query uses that connection next, possibly much later; a query abandoned at its
 * deadline can leave the same. So after a timeout or a connection-level error the pool is
 * replaced: new work gets fresh connections, and the old pool ends once its queries finish.
 */
export class Pool {
  #sql: Sql | undefined;
  constructor(readonly open: () => Sql) {}

  /** The current pool, opened on first use. */
  get sql(): Sql {
    return this.#sql ??= this.open();
  }

  /** Drops the current pool (it ends in the background once its queries are done). */
  reset(): void {
    const old = this.#sql;
    this.#sql = undefined;
    old?.end({ timeout: 10 }).catch(() => {});
  }

  /** Ends the current pool. */
  async end(): Promise<void> {
    const old = this.#sql;
    this.#sql = undefined;
    await old?.end({ timeout: 1 });
  }
}

/**
 * A Postgres array literal of `values`, to pass as one parameter and cast in SQL
 * (`${pgArray(ids)}::uuid[]`). postgres.js serializes a JS array only after the connection
 * has fetched the array types, which races with queries pipelined on a fresh connection
 * ("malformed array literal"); a literal does not depend on that.
 */
export function pgArray(values: readonly (string | number | null)[]): string {
  const item = (v: string | number | null) =>
    v === null ? "NULL" : `"${String(v).replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
  return `{${values.map(item).join(",")}}`;
}

/**
 * One page of the reconcile scans as the database wrote it: a JSON array text that is passed
 * on to the other database unparsed (so no row is handled in JavaScript), the last id it holds
 * and how many rows.
 */
export interface JsonPage {
  page: string;
  last: string | null;
  rows: number;
}

/** A fragment of SQL built with the `sql` tag, to nest in another query. */
type Fragment = postgres.PendingQuery<postgres.Row[]>;

/**
 * Runs `page` (a select of one page of rows with an `id` column, ordered and limited) and
 * returns it as a {@link JsonPage}: the JSON text of `row` (a `json_build_array(…)` over the
 * page's columns) for each row, in id order, built by the database.
 */
export async function selectJsonPage(sql: Sql, page: Fragment, row: Fragment): Promise<JsonPage> {
  const [result] = await sql<JsonPage[]>`
    with page as (${page})
    select coalesce(json_agg(${row} order by id), '[]')::text as page,
           (select id from page order by id desc limit 1)::text as last,
           count(*)::int as rows
      from page`;
  return result;
}

/** The lowest uuid: a keyset scan or page "after" it starts at the beginning. */
export const NO_ID = "00000000-0000-0000-0000-000000000000";
/** The highest uuid: a keyset scan or page "until" it runs to the end. */
export const MAX_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff";
