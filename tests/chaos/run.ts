/**
 * The chaos run (issue 21, item 1): fast-check generates command sequences
 * (`fc.commands` over tests/chaos/commands.ts) and `fc.asyncModelRun` runs each against the
 * real stack reached through tests/_stack.ts (its environment must be the stack's, as
 * `deno task test` or tests/chaos/main.ts give it). Invariants 1–10 are checked after every
 * step; for 10 the run owns the platform's receiver (tests/chaos/events.ts) on the stack's
 * PLATFORM_WEBHOOK_URL, started here and stopped at the end. A violation is reported with fast-check's seed, path and shrunk command list, which
 * replay it: `deno task chaos --seed S --path P`.
 *
 * The pg_cron jobs of both databases are paused while it runs (a scheduled mp-refresh or
 * mp-probe would act behind the model's back) and restored after; every fault is undone after
 * each command sequence (databases started, sandbox faults and latency cleared).
 */
import fc from "fast-check";
import { adminDb, backendDb, closeDbs, sandbox, stack } from "../_stack.ts";
import { commandArbitraries } from "./commands.ts";
import { checkInvariants, newTotals, type Totals, World } from "./world.ts";
import { Platform } from "./events.ts";

export interface ChaosOptions {
  seed: number;
  /** Steps (commands run) to reach, over as many sequences as it takes. */
  steps: number;
  /** Commands per sequence at most (default 25). */
  maxCommands?: number;
  /** A fast-check replay path (with the seed of the failure). */
  path?: string;
  /** The commands' replayPath of a failure (shown in its command list). */
  replayPath?: string;
  /** Minutes spent shrinking a failure at most (default 5). */
  shrinkMinutes?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface ChaosSummary {
  seed: number;
  steps: number;
  runs: number;
  seconds: number;
  faults: Record<string, number>;
  commands: Record<string, number>;
  /** Each violation with seed, path and the shrunk command list; empty when none. */
  violations: string[];
}

/** Pauses every active pg_cron job of both databases; returns what restores them. */
async function pauseCron(): Promise<() => Promise<void>> {
  const paused: { db: "backend" | "admin"; ids: number[] }[] = [];
  for (const [name, db] of [["backend", backendDb], ["admin", adminDb]] as const) {
    const rows = await db()`update cron.job set active = false where active returning jobid`;
    paused.push({ db: name, ids: rows.map((r) => Number(r.jobid)) });
  }
  return async () => {
    for (const p of paused) {
      if (p.ids.length === 0) continue;
      const db = p.db === "backend" ? backendDb() : adminDb();
      await db`update cron.job set active = true where jobid = any(${p.ids})`;
    }
  };
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosSummary> {
  const started = performance.now();
  const log = opts.log ?? (() => {});
  const totals: Totals = newTotals();
  totals.reuseBaseline = (await sandbox.stats()).refresh_token_reuse;
  totals.logOffset = (await Deno.stat(stack.env("STACK_LOG"))).size;
  await sandbox.faults("none", 0);
  await sandbox.latency(0);
  const restoreCron = await pauseCron();
  const platform = new Platform();
  let failedAt: number | undefined;
  const shrinkMs = (opts.shrinkMinutes ?? 5) * 60_000;
  try {
    await platform.start();
    const property = fc.asyncProperty(
      fc.commands(commandArbitraries(), {
        maxCommands: opts.maxCommands ?? 25,
        size: "max",
        ...(opts.replayPath ? { replayPath: opts.replayPath } : {}),
      }),
      async (cmds) => {
        // Budget spent: the remaining runs pass at once (but never while shrinking a failure,
        // unless shrinking has taken too long: the best list so far is then reported).
        if (failedAt === undefined && totals.steps >= opts.steps) return;
        if (failedAt !== undefined && performance.now() - failedAt > shrinkMs) return;
        totals.runs++;
        const world = new World(totals, log, platform);
        try {
          await fc.asyncModelRun(() => ({ model: world, real: world }), cmds);
          await world.restore();
          await checkInvariants(world);
        } catch (err) {
          failedAt ??= performance.now();
          log(`  violation: ${(err as Error).message}`);
          throw err;
        } finally {
          await world.restore();
        }
      },
    );
    const details = await fc.check(property, {
      seed: opts.seed,
      numRuns: opts.path ? 1 : Math.max(1, opts.steps),
      ...(opts.path ? { path: opts.path } : {}),
    });
    if (details.failed) {
      const report = fc.defaultReportMessage(details) ?? "failed";
      const error = (details.errorInstance as Error | undefined)?.message ??
        String(details.errorInstance);
      totals.violations.push(`${error}\n${report}`);
    }
  } finally {
    await platform.stop();
    await restoreCron();
    await closeDbs();
  }
  return {
    seed: opts.seed,
    steps: totals.steps,
    runs: totals.runs,
    seconds: Math.round((performance.now() - started) / 1000),
    faults: totals.faults,
    commands: totals.commands,
    violations: totals.violations,
  };
}

/** Sum of the values of a count map. */
export const total = (counts: Record<string, number>) =>
  Object.values(counts).reduce((a, b) => a + b, 0);
