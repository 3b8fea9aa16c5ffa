/**
 * docs/contract.md, "Common rules" (README, "Operating it"): an isolate opens at most
 * `FUNCTION_POOL_MAX` (3) connections per database, counted at the pooler. mp-refresh — the one
 * function whose request runs statements concurrently (its 8 MercadoPago calls in flight each save
 * through the pools) — runs in one isolate of a gateway of its own, on the stack's TLS poolers; the
 * pooler's `SHOW CLIENTS` is read while its calls are held and after its run, and the clients whose
 * address is one of the isolate process's sockets are that isolate's connections.
 */
import assert from "node:assert/strict";
import { createGateway, functionEntrypoints } from "../local/gateway.ts";
import {
  closeDbs,
  eventually,
  functionEnv,
  newAccount,
  sandbox,
  stack,
  withCronPaused,
} from "./_stack.ts";

const CONCURRENCY = 8;

/** Local ports of the TCP connections process `pid` holds to `port` on 127.0.0.1. */
async function socketsTo(pid: number, port: number): Promise<Set<number>> {
  const inodes = new Set<string>();
  for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
    const link = await Deno.readLink(`/proc/${pid}/fd/${fd.name}`).catch(() => "");
    const m = link.match(/^socket:\[(\d+)\]$/);
    if (m) inodes.add(m[1]);
  }
  const ports = new Set<number>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const rows = (await Deno.readTextFile(table).catch(() => "")).trim().split("\n").slice(1);
    for (const row of rows) {
      const f = row.trim().split(/\s+/);
      const remote = parseInt(f[2].split(":")[1], 16);
      if (remote === port && inodes.has(f[9])) ports.add(parseInt(f[1].split(":")[1], 16));
    }
  }
  return ports;
}

/** The pooler's own view (`SHOW CLIENTS` on its admin console): client rows of database `postgres`. */
async function poolerClients(which: "BACKEND_POOLER_URL" | "ADMIN_POOLER_URL") {
  const url = new URL(stack.env(which));
  url.pathname = "/pgbouncer";
  const out = await new Deno.Command(`${stack.env("PG_BIN")}/psql`, {
    args: [url.href, "-AF", "|", "-P", "footer=off", "-c", "show clients"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const [header, ...rows] = new TextDecoder().decode(out.stdout).trim().split("\n");
  const cols = header.split("|");
  return rows.map((r) => Object.fromEntries(r.split("|").map((v, i) => [cols[i], v])))
    .filter((c) => c.database === "postgres");
}

/** This isolate's connections per database, as the pooler counts them. */
async function isolateConnections(pid: number) {
  const counts: Record<string, number> = {};
  for (const which of ["BACKEND_POOLER_URL", "ADMIN_POOLER_URL"] as const) {
    const mine = await socketsTo(pid, Number(new URL(stack.env(which)).port));
    const atPooler = (await poolerClients(which)).filter((c) => mine.has(Number(c.port)));
    assert.equal(atPooler.length, mine.size, `${which}: the pooler sees each of the sockets`);
    counts[which] = atPooler.length;
  }
  return counts;
}

Deno.test("an isolate opens at most 3 connections per database, counted at the pooler", async () => {
  await withCronPaused("mp-refresh", async () => {
    const grants = await sandbox.grants(3 * CONCURRENCY);
    await Promise.all(grants.map((grant) => newAccount({ grant, expiresInDays: 1 })));
    const lines: Record<string, unknown>[] = [];
    const gw = await createGateway({
      env: functionEnv({ MP_HTTP_TIMEOUT_MS: "30000" }),
      functions: { "mp-refresh": (await functionEntrypoints()).get("mp-refresh")! },
      limits: { maxIsolates: 1 },
      log: (line) => lines.push(line),
    });
    const samples: Record<string, number>[] = [];
    await sandbox.hold(true);
    try {
      const running = gw.fetch(
        new Request("http://gateway.local/functions/v1/mp-refresh", {
          method: "POST",
          headers: { apikey: stack.secretKey, "content-type": "application/json" },
          body: JSON.stringify({ limit: 3 * CONCURRENCY }),
        }),
      ).then(async (res) => ({ status: res.status, body: await res.json() }));
      await sandbox.awaitHeld(CONCURRENCY);
      const started = await eventually(() =>
        Promise.resolve(lines.find((l) => l.msg === "Edge isolate started"))
      );
      const pid = started.pid as number;
      samples.push(await isolateConnections(pid)); // claimed, calls in flight
      // MercadoPago answers the held calls together: their saves run at once, then the rest.
      await sandbox.hold(false);
      let done = false;
      const answer = running.finally(() => done = true);
      while (!done) samples.push(await isolateConnections(pid));
      const { status, body } = await answer;
      assert.equal(status, 200, JSON.stringify(body).slice(0, 300));
      assert.equal(body.claimed, 3 * CONCURRENCY, "a full run: its limit claimed");
      // Idle connections stay open (idle_timeout 30 s): what the run opened is still counted.
      samples.push(await isolateConnections(pid));
    } finally {
      await sandbox.hold(false);
      await gw.close();
    }
    for (const which of ["BACKEND_POOLER_URL", "ADMIN_POOLER_URL"]) {
      const peak = Math.max(...samples.map((s) => s[which]));
      assert.ok(peak >= 1, `${which}: the isolate was connected (${peak})`);
      // README "Connections": 3 per database per isolate.
      assert.ok(peak <= 3, `${which}: ${peak} connections from one isolate`);
    }
  });
  await closeDbs();
});
