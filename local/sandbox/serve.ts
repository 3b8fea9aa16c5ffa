/**
 * Serving the sandbox over real TCP, able to lose an answer as a network does: a raw TCP front
 * relays each client connection to its own connection on an internal `Deno.serve` (loopback,
 * ephemeral port). When the handler rejects with {@link DroppedConnection} (the `lose_answer`
 * fault: the call was processed, its answer is lost), the front closes that client's socket
 * without a byte of answer, so the caller's `fetch` rejects with "client error (SendRequest):
 * connection closed before message completed" — never a "(Connect)" error, as the request did
 * arrive. `Deno.serve` alone cannot do this: a handler can only answer. Connections are kept
 * alive as MercadoPago's are; mind that Deno's `fetch` resends a request once when a pooled
 * connection closes unanswered, unless its body is a stream (denoland/deno#36415).
 */

/** The sandbox's handler rejects with this when it processed a call but drops its answer. */
export class DroppedConnection extends Error {
  constructor() {
    super("the sandbox processed the call and dropped the connection without answering");
    this.name = "DroppedConnection";
  }
}

/** What {@link serveSandbox} serves: anything with the sandbox's handler. */
interface Servable {
  handler: (req: Request) => Promise<Response>;
}

/** Where and how long to serve; `port: 0` picks a free port (read it from `addr`). */
interface ServeSandboxOptions {
  hostname: string;
  port: number;
  signal?: AbortSignal;
}

/** A served sandbox, shaped like `Deno.serve`'s server: its address, `finished`, `shutdown()`. */
interface SandboxServer {
  addr: Deno.NetAddr;
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

/** Serves `sandbox` on hostname:port, turning a {@link DroppedConnection} into a closed socket. */
export function serveSandbox(sandbox: Servable, opts: ServeSandboxOptions): SandboxServer {
  const links = new Map<number, () => void>(); // internal connection's local port → its closer
  const relays = new Set<Promise<void>>();
  const inner = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req, info) => {
      try {
        return await sandbox.handler(req);
      } catch (err) {
        if (!(err instanceof DroppedConnection)) throw err;
        links.get(info.remoteAddr.port)?.(); // the client's socket closes before any answer
        return new Response(null, { status: 502 }); // written to a closed connection: unseen
      }
    },
  );
  const listener = Deno.listen({ hostname: opts.hostname, port: opts.port });

  /** Relays one client connection to its own internal connection until either side closes. */
  async function relay(client: Deno.TcpConn): Promise<void> {
    const upstream = await Deno.connect({ hostname: inner.addr.hostname, port: inner.addr.port })
      .catch(() => null);
    if (!upstream) return closeAll(client);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const port = upstream.localAddr.port;
    links.set(port, () => closeAll(client, upstream));
    await Promise.race([copy(client, upstream), copy(upstream, client)]);
    links.delete(port);
    closeAll(client, upstream);
  }

  async function accept(): Promise<void> {
    try {
      for await (const client of listener) {
        const done = relay(client).finally(() => relays.delete(done));
        relays.add(done);
      }
    } catch { /* the listener was closed */ }
  }

  const accepting = accept();
  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    stopping ??= (async () => {
      try {
        listener.close();
      } catch { /* already closed */ }
      await accepting;
      for (const close of links.values()) close(); // held calls see their client go away
      await Promise.all(relays);
      await inner.shutdown();
    })();
  opts.signal?.addEventListener("abort", () => void shutdown(), { once: true });
  if (opts.signal?.aborted) void shutdown();
  const finished = accepting.then(() => stopping ?? shutdown()).then(() => inner.finished);
  return { addr: listener.addr, finished, shutdown };
}

/** Copies bytes from one connection to the other until end of stream or an error. */
async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (let n; (n = await from.read(buf)) !== null;) {
      for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
    }
  } catch { /* either side was closed */ }
}

function closeAll(...conns: Deno.Conn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}
