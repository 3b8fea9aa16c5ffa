/**
 * The pipe between the gateway and an isolate subprocess: JSON messages, one per line, with
 * bodies as base64. Host → isolate on its stdin; isolate → host on its stdout, each message
 * line starting with the record separator `\x1e`, so the function's own console output can
 * share stdout and is passed through to the gateway's stdout unchanged.
 */
import { Buffer } from "node:buffer";

/** Marks a message line on the isolate's stdout. */
export const MARK = "\x1e";

/** Serializes a message; `body` fields (ArrayBuffer) become base64 strings. */
export function encode(msg: unknown): string {
  return JSON.stringify(
    msg,
    (k, v) =>
      k === "body" && v instanceof ArrayBuffer ? { b64: Buffer.from(v).toString("base64") } : v,
  );
}

/** Parses a message; base64 `body` fields become ArrayBuffers again. */
export function decode<T>(line: string): T {
  return JSON.parse(line, (k, v) => {
    if (k !== "body" || v === null || typeof v !== "object" || typeof v.b64 !== "string") return v;
    const bytes = Buffer.from(v.b64, "base64");
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  }) as T;
}

/** Splits a byte stream into lines (without the `\n`); a last unterminated line is kept. */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let at: number;
    while ((at = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, at);
      pending = pending.slice(at + 1);
    }
  }
  if (pending) yield pending;
}

/** Writes all of `bytes` to a sync writer (stdout), looping over partial writes. */
export function writeAllSync(w: { writeSync(p: Uint8Array): number }, bytes: Uint8Array) {
  let at = 0;
  while (at < bytes.length) at += w.writeSync(bytes.subarray(at));
}
