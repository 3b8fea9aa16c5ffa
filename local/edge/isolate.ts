/**
 * The program one isolate runs (`deno run local/edge/isolate.ts`, a subprocess of the
 * gateway): imports one function's index.ts, then answers one request at a time from the
 * host (messages on stdin, answers on stdout: see channel.ts), reports its heap, and
 * dispatches `beforeunload` on globalThis when the host says so.
 */
import { decode, encode, lines, MARK, writeAllSync } from "./channel.ts";
import type { FromIsolate, ToIsolate, WireRequest } from "./protocol.ts";
import { scrub } from "../../shared/platform/log.ts";

type Fetch = (req: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;

const encoder = new TextEncoder();
let handler: Fetch | undefined;
let busy = false;
let lastHeap = 0;

// The edge runtime's `EdgeRuntime.waitUntil` (background work after the answer): the promise is
// kept referenced, a rejection logged, and the host told how much is pending, so it keeps the
// isolate alive for it as the runtime does (a retiring isolate ends once it has settled; the wall
// clock still ends it).
const background = new Set<Promise<unknown>>();
(globalThis as { EdgeRuntime?: unknown }).EdgeRuntime ??= {
  waitUntil(p: Promise<unknown>) {
    background.add(p);
    post({ type: "background", pending: background.size, heap: heap() });
    p.catch((err) => console.error(scrub(`waitUntil rejected: ${(err as Error)?.name ?? err}`)))
      .finally(() => {
        background.delete(p);
        post({ type: "background", pending: background.size, heap: heap() });
      });
  },
};

const heap = () => (lastHeap = Deno.memoryUsage().heapUsed);
const post = (msg: FromIsolate) =>
  writeAllSync(Deno.stdout, encoder.encode(`${MARK}${encode(msg)}\n`));

async function boot(entrypoint: string, heapReportMs: number) {
  try {
    const mod = await import(entrypoint);
    const fetch = mod.default?.fetch;
    if (typeof fetch !== "function") throw new TypeError("index.ts has no default { fetch }");
    handler = fetch.bind(mod.default);
  } catch (err) {
    console.error(scrub(`isolate boot error: ${(err as Error)?.stack ?? err}`));
    post({ type: "boot_error", message: (err as Error)?.name ?? "Error", heap: heap() });
    return;
  }
  // While a request runs, report the heap on every tick; when idle, only when it moved 1 MiB.
  setInterval(() => {
    const before = lastHeap;
    const now = heap();
    if (busy || Math.abs(now - before) >= 1 << 20) post({ type: "heap", heap: now });
  }, heapReportMs);
  post({ type: "ready", tid: `${Deno.pid}/task/${Deno.pid}`, heap: heap() });
}

function toRequest(wire: WireRequest): [Request, Deno.ServeHandlerInfo] {
  const req = new Request(wire.url, {
    method: wire.method,
    headers: wire.headers,
    body: wire.body === null ? null : new Uint8Array(wire.body),
  });
  const info = {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 0, ...wire.remoteAddr },
    completed: Promise.resolve(),
  } as Deno.ServeHandlerInfo;
  return [req, info];
}

async function serve(id: number, wire: WireRequest) {
  busy = true;
  try {
    const res = await handler!(...toRequest(wire));
    const body = await res.arrayBuffer();
    post({
      type: "response",
      id,
      response: { status: res.status, statusText: res.statusText, headers: [...res.headers], body },
      heap: heap(),
    });
  } catch (err) {
    console.error(scrub(`isolate error: ${(err as Error)?.stack ?? err}`));
    post({ type: "error", id, message: (err as Error)?.name ?? "Error", heap: heap() });
  } finally {
    busy = false;
  }
}

for await (const line of lines(Deno.stdin.readable)) {
  if (!line) continue;
  const msg = decode<ToIsolate>(line);
  if (msg.type === "init") void boot(msg.entrypoint, msg.heapReportMs);
  else if (msg.type === "request") void serve(msg.id, msg.request);
  else if (msg.type === "beforeunload") {
    globalThis.dispatchEvent(new CustomEvent("beforeunload", { detail: { reason: msg.reason } }));
    // dispatchEvent runs the listeners synchronously: the host may now rely on them having run.
    post({ type: "unloaded", reason: msg.reason, heap: heap() });
  }
}
// stdin closed: the gateway is gone.
Deno.exit(0);
