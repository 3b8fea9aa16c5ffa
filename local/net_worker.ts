/**
 * The worker behind the local pg_net stand-in: it drains `net.http_request_queue`, performs
 * each request with its timeout, and records the answer in `net._http_response`, as pg_net's
 * background worker does.
 */
import type { Sql } from "../shared/platform/db.ts";
import type { Logger } from "../shared/platform/log.ts";

interface Queued {
  id: number;
  method: string;
  url: string;
  headers: Record<string, string> | null;
  body: string | null;
  timeout_milliseconds: number;
}

/** Starts draining the queue of the database behind `sql`; `stop()` waits for requests in flight. */
export function startNetWorker(sql: Sql, log: Logger): { stop(): Promise<void> } {
  let stopped = false;
  let draining: Promise<void> = Promise.resolve();
  const inFlight = new Set<Promise<void>>();

  const perform = async (r: Queued) => {
    let row: Record<string, unknown>;
    try {
      const res = await fetch(r.url, {
        method: r.method,
        headers: r.headers ?? {},
        body: r.body,
        signal: AbortSignal.timeout(r.timeout_milliseconds),
      });
      row = {
        id: r.id,
        status_code: res.status,
        content_type: res.headers.get("content-type"),
        headers: Object.fromEntries(res.headers),
        content: await res.text(),
        timed_out: false,
        error_msg: null,
      };
    } catch (err) {
      const timedOut = (err as Error).name === "TimeoutError";
      row = { id: r.id, timed_out: timedOut, error_msg: timedOut ? "Timeout" : String(err) };
    }
    log.info("pg_net request done", {
      net_request_id: r.id,
      status_code: row.status_code,
      timed_out: row.timed_out,
    });
    await sql`insert into net._http_response ${sql(row)}`.catch(() => {});
  };

  const drain = async () => {
    while (!stopped) {
      const batch = await sql<Queued[]>`
        delete from net.http_request_queue
         where id in (select id from net.http_request_queue order by id limit 20
                      for update skip locked)
        returning id, method, url, headers, convert_from(body, 'UTF8') as body,
                  timeout_milliseconds`.catch(() => [] as Queued[]);
      if (batch.length === 0) return;
      for (const r of batch) {
        const p = perform(r).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
    }
  };
  const kick = () => {
    draining = draining.then(drain);
  };

  const listening = sql.listen("net_http_request", kick).catch(() => undefined);
  const timer = setInterval(kick, 1000);
  kick();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await (await listening)?.unlisten().catch(() => {});
      await draining;
      await Promise.all(inFlight);
    },
  };
}
