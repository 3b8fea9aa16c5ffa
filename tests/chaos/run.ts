/**
 * The chaos run (issue 21, item 1; issue 28, item 2): fast-check generates command sequences
 * (`fc.commands` over tests/chaos/commands.ts) and `fc.asyncModelRun` runs each against the
 * real stack reached through tests/_stack.ts (its environment must be the stack's, as
 * `deno task test` or tests/chaos/main.ts give it). Invariants 1–10 are checked after every
 * step by a checker that only reads (tests/chaos/world.ts): both databases, the sandbox's ledger
 * (tests/chaos/ledger.ts) and its counts (`cross_app_calls`: 0), the platform's receiver — the
 * run owns it (tests/chaos/events.ts), on the stack's PLATFORM_WEBHOOK_URL, started here and
 * stopped at the end — and the stack log. A violation is reported with fast-check's seed, path
 * and shrunk command list, and the whole command that replays it (`replay`: `deno task chaos
 * --seed S --steps N --max-commands M --sites SITES --path P --replay-path R`).
 *
 * The run uses every MercadoPago application of the stack (`MP_APPS`: `deno task chaos` starts
 * two, MLA and MLB): accounts in each site, sandbox faults limited to one application, and an
 * account's expectations excused only by its own application's faults. On a single-app stack
 * it runs the single-app command set as it was (`--sites single`).
 *
 * The pg_cron jobs of both databases are paused while it runs (a scheduled mp-refresh or
 * mp-probe would act behind the model's back) and restored after; every fault is undone after
 * each command sequence (databases started, sandbox faults and latency cleared).
 */
import fc from "fast-check";
import { adminDb, backendDb, closeDbs, sandbox, stack } from "../_stack.ts";
import { commandArbitraries } from "./commands.ts";
import { checkInvariants, newTotals, stackApps, type Totals, World } from "./world.ts";
import { Platform } from "./events.ts";
import { LedgerMirror } from "./ledger.ts";

interface ChaosOptions {
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

/**
 * What one chaos invocation (one seed) did; `chaos-summary` prints it as JSON (with `commit`),
 * read by bench/chaos_summary.ts.
 */
interface ChaosSummary {
  seed: number;
  /** The sites of the stack's applications the run used (`MP_APPS`'s order); one: the single app. */
  apps: string[];
  /** Whether the stack ran `MP_APPS` (false: the single-app variables). */
  multi_app: boolean;
  /** The budget asked for (`--steps`) and the commands per sequence at most (`--max-commands`). */
  steps_asked: number;
  max_commands: number;
  /** Steps that ran and did something: no-op steps and steps run while shrinking are apart. */
  steps: number;
  noop_steps: number;
  shrink_steps: number;
  /** fast-check runs (command sequences) before any failure, and those run while shrinking. */
  runs: number;
  shrink_runs: number;
  seconds: number;
  /** Faults set, by kind, fired or not (a sandbox fault no call took is set, not fired). */
  faults: Record<string, number>;
  /** Faults that fired, by kind: a sandbox fault a call took, a database stopped or hung, … */
  faultsFired: Record<string, number>;
  /**
   * Faults of one application that fired (sandbox faults limited to it, its sellers' tokens
   * invalidated), by site, then by kind; part of `faultsFired`. Empty for the single app.
   */
  faultsFiredPerApp: Record<string, Record<string, number>>;
  /** Accounts created (connected or provisioned), by site. */
  accounts_per_app: Record<string, number>;
  commands: Record<string, number>;
  /** Each violation with seed, path, the shrunk command list and its replay line; empty when none. */
  violations: string[];
  /** The command that replays the first violation (null when none). */
  replay: string | null;
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
  totals.logOffset = (await Deno.stat(stack.env("STACK_LOG"))).size;
  const apps = stackApps();
  const sites = apps.list.map((a) => a.site);
  await sandbox.faults("none", 0);
  await sandbox.latency(0);
  for (const app of apps.multi ? apps.list : []) {
    await sandbox.faults("none", 0, app.clientId);
    await sandbox.latency(0, app.clientId);
  }
  const ledger = new LedgerMirror(stack.sandboxUrl);
  await ledger.start();
  const restoreCron = await pauseCron();
  const platform = new Platform();
  let failedAt: number | undefined;
  let replay: string | null = null;
  const maxCommands = opts.maxCommands ?? 25;
  const shrinkMs = (opts.shrinkMinutes ?? 5) * 60_000;
  try {
    await platform.start();
    const property = fc.asyncProperty(
      fc.commands(commandArbitraries(sites), {
        maxCommands,
        size: "max",
        ...(opts.replayPath ? { replayPath: opts.replayPath } : {}),
      }),
      async (cmds) => {
        // Budget spent: the remaining runs pass at once (but never while shrinking a failure,
        // unless shrinking has taken too long: the best list so far is then reported).
        if (failedAt === undefined && totals.steps >= opts.steps) return;
        if (failedAt !== undefined && performance.now() - failedAt > shrinkMs) return;
        totals.shrinking = failedAt !== undefined;
        if (totals.shrinking) totals.shrinkSequences++;
        else totals.sequences++;
        const world = new World(totals, log, platform, ledger, apps);
        try {
          await fc.asyncModelRun(() => ({ model: world, real: world }), cmds);
          // After the faults are undone, once more (a read: no step of its own).
          await world.restore();
          world.beginStep();
          await world.readLedger();
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
      const replayPath = /replayPath="([^"]*)"/.exec(String(details.counterexample?.[0]))?.[1];
      replay = [
        "deno task chaos",
        `--seed ${opts.seed}`,
        `--steps ${opts.steps}`,
        `--max-commands ${maxCommands}`,
        `--sites ${apps.multi ? sites.join(",") : "single"}`,
        `--path ${details.counterexamplePath}`,
        ...(replayPath ? [`--replay-path ${replayPath}`] : []),
      ].join(" ");
      totals.violations.push(`${error}\n${report}\nreplay: ${replay}`);
    }
  } finally {
    await platform.stop();
    await restoreCron();
    await closeDbs();
  }
  return {
    seed: opts.seed,
    apps: sites,
    multi_app: apps.multi,
    steps_asked: opts.steps,
    max_commands: maxCommands,
    steps: totals.steps,
    noop_steps: totals.noopSteps,
    shrink_steps: totals.shrinkSteps,
    runs: totals.sequences,
    shrink_runs: totals.shrinkSequences,
    seconds: Math.round((performance.now() - started) / 1000),
    faults: sum(totals.faults, totals.faultsUnfired),
    faultsFired: totals.faults,
    faultsFiredPerApp: totals.faultsPerApp,
    accounts_per_app: totals.accountsPerApp,
    commands: totals.commands,
    violations: totals.violations,
    replay,
  };
}

/** Two count maps added up, key by key. */
function sum(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** Sum of the values of a count map. */
export const total = (counts: Record<string, number>) =>
  Object.values(counts).reduce((a, b) => a + b, 0);
