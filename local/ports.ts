/**
 * The local stack's six ports: where each comes from (`STACK_PORT_BASE` and the per-port
 * variables) and a check, before anything starts, that every one is free.
 */

/** The stack's listening ports, each named by the variable that sets it. */
export interface Ports {
  gateway: number;
  backend: number;
  admin: number;
  sandbox: number;
  backendPooler: number;
  adminPooler: number;
}

/** The variable that moves each port on its own (its default is an offset of the base). */
const PORT_VARIABLES: Record<keyof Ports, string> = {
  gateway: "GATEWAY_PORT",
  backend: "BACKEND_DB_PORT",
  admin: "ADMIN_DB_PORT",
  sandbox: "SANDBOX_PORT",
  backendPooler: "BACKEND_POOLER_PORT",
  adminPooler: "ADMIN_POOLER_PORT",
};

/**
 * `STACK_PORT_BASE` and every port variable set to `base` + 0 … 5, for a child stack: the base
 * then wins over per-port variables the parent's own environment may hold.
 */
export function portEnv(base: number): Record<string, string> {
  const ports = Object.values(PORT_VARIABLES).map((name, i) => [name, String(base + i)]);
  return { STACK_PORT_BASE: String(base), ...Object.fromEntries(ports) };
}

/** Linux's default ephemeral range starts here: any outgoing connection may hold a port above. */
const EPHEMERAL_START = 32768;

/**
 * The stack's ports from `env`: base + 0 … base + 5 in `PORT_VARIABLES` order, the base from
 * `STACK_PORT_BASE` or `fallback`; each port variable overrides its own. Throws on a value that
 * is not a TCP port.
 */
export function resolvePorts(env: (name: string) => string | undefined, fallback: number): Ports {
  const read = (name: string, otherwise: number) => {
    const raw = env(name);
    if (raw === undefined || raw === "") return otherwise;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > 65535) {
      throw new Error(`${name}=${raw} is not a TCP port (1–65535)`);
    }
    return n;
  };
  const base = read("STACK_PORT_BASE", fallback);
  const names = Object.keys(PORT_VARIABLES) as (keyof Ports)[];
  return Object.fromEntries(
    names.map((key, i) => [key, read(PORT_VARIABLES[key], base + i)]),
  ) as unknown as Ports;
}

/**
 * Throws one line naming the first port something already holds (a listener, or an outgoing
 * connection bound to it), before a cluster or server starts and fails less clearly.
 */
export function assertPortsFree(ports: Ports, hostname = "127.0.0.1"): void {
  for (const [key, port] of Object.entries(ports) as [keyof Ports, number][]) {
    let listener: Deno.Listener;
    try {
      listener = Deno.listen({ hostname, port });
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse)) throw err;
      const hint = port >= EPHEMERAL_START
        ? ` (ports from ${EPHEMERAL_START} up can be held by any outgoing connection: a base below it stays clear)`
        : "";
      throw new Error(
        `port ${port} (${
          PORT_VARIABLES[key]
        }) is in use: stop what holds it, or move the stack with STACK_PORT_BASE${hint}`,
      );
    }
    listener.close();
  }
}
