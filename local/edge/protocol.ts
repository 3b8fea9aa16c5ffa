/**
 * The plain-data messages between the gateway (host) and an isolate (subprocess), and the
 * edge runtime's own error answers.
 */

/** A request as it crosses into an isolate; `body` null when there was none. */
export interface WireRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: ArrayBuffer | null;
  remoteAddr?: { hostname: string; port: number };
}

/** A response as it crosses back to the host. */
export interface WireResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: ArrayBuffer;
}

/** Host → isolate. */
export type ToIsolate =
  | { type: "init"; entrypoint: string; name: string; isolate: string; heapReportMs: number }
  | { type: "request"; id: number; request: WireRequest }
  | { type: "beforeunload"; reason: UnloadReason };

/** Isolate → host; every message carries the isolate heap in bytes. */
export type FromIsolate =
  | { type: "ready"; tid: string; heap: number }
  | { type: "boot_error"; message: string; heap: number }
  | { type: "response"; id: number; response: WireResponse; heap: number }
  | { type: "error"; id: number; message: string; heap: number }
  | { type: "heap"; heap: number }
  /** Background work (`EdgeRuntime.waitUntil`) still pending after a change of it. */
  | { type: "background"; pending: number; heap: number }
  /** `beforeunload` was dispatched: its listeners have run. */
  | { type: "unloaded"; reason: UnloadReason; heap: number };

/** Why `beforeunload` fires or an isolate stops, in the edge runtime's words. */
export type UnloadReason = "WallClockTime" | "CPUTime" | "Memory";

/** The edge runtime's error answer: `{"code","message"}` with `sb-error-code`. */
function runtimeError(status: number, code: string, message: string): WireResponse {
  return {
    status,
    statusText: "",
    headers: [["content-type", "application/json"], ["sb-error-code", code]],
    body: new TextEncoder().encode(JSON.stringify({ code, message })).buffer as ArrayBuffer,
  };
}

/** 546: the isolate went over its CPU or memory limit and was terminated. */
export const resourceLimit = () =>
  runtimeError(
    546,
    "WORKER_RESOURCE_LIMIT",
    "Function failed due to not having enough compute resources (please check logs)",
  );
/** 504: no answer within the request timeout (or the isolate hit its wall clock). */
export const timeoutError = () =>
  runtimeError(504, "WORKER_TIMEOUT", "Function did not respond in time (please check logs)");
/** 500: the function threw, or the isolate died of an uncaught error. */
export const workerError = () =>
  runtimeError(500, "WORKER_ERROR", "Function exited due to an error (please check logs)");
/** 503: the function's module could not be loaded. */
export const bootError = () =>
  runtimeError(503, "BOOT_ERROR", "Function failed to start (please check logs)");
/** 503: the gateway is shutting down. */
export const shuttingDown = () =>
  runtimeError(503, "SHUTTING_DOWN", "The functions gateway is shutting down");
