/**
 * A function alone under `deno serve` (as a self-hosted deployment runs it), on a port the
 * tests own (`testPort`), with exactly the environment it is given. Ready once `deno serve`
 * says it listens (no connection attempts to a port nobody listens on yet); its output is kept.
 */
import { testPort } from "./_stack.ts";

/** A running `deno serve` of one function. */
interface ServedFunction {
  url: string;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Stops it (SIGTERM) and returns everything it printed. */
  stop(): Promise<string>;
}

const decoder = new TextDecoder();

/** Serves `supabase/functions/<name>/index.ts` on `testPort(offset)` with exactly `env`. */
export async function serveFunction(
  name: string,
  offset: number,
  env: Record<string, string>,
): Promise<ServedFunction> {
  const port = testPort(offset);
  const host = Object.fromEntries(
    ["PATH", "HOME", "DENO_DIR"].flatMap((k) => Deno.env.get(k) ? [[k, Deno.env.get(k)!]] : []),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "serve",
      "-A",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      `supabase/functions/${name}/index.ts`,
    ],
    env: { ...host, NO_COLOR: "1", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let text = "";
  let listening: () => void;
  let failed: (err: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    listening = resolve;
    failed = reject;
  });
  const read = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
      if (text.includes("Listening on")) listening();
    }
  };
  const reading = Promise.all([read(child.stdout), read(child.stderr)]);
  child.status.then((s) => failed(new Error(`deno serve ${name} exited (${s.code})`)));
  const served: ServedFunction = {
    url: `http://127.0.0.1:${port}`,
    output: () => text,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      // `deno serve` stops serving at once, but its process lives on while the function's idle
      // database connections do (postgres.js `idle_timeout`, 30 s): not worth waiting for.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        child.status.then(() => true),
        new Promise<false>((r) => timer = setTimeout(() => r(false), 2000)),
      ]);
      clearTimeout(timer);
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await child.status;
      await reading;
      return text;
    },
  };
  try {
    await ready;
  } catch (err) {
    await served.stop();
    throw new Error(`${(err as Error).message}: ${text.slice(-500)}`);
  }
  return served;
}
