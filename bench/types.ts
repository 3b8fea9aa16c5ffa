/** What every benchmark returns: one row per figure, measured against a same-run baseline. */
export interface BenchRow {
  /** Which benchmark (e.g. "get-mp-config fast path"). */
  bench: string;
  /** What was measured (e.g. "throughput req/s", "p99 ms", "accounts/s"). */
  metric: string;
  /** The measured figure, formatted. */
  value: string;
  /** The same-run baseline it is compared with, formatted. */
  baseline: string;
  /** value ÷ baseline (or the ratio the target speaks of), formatted. */
  ratio: string;
  /** The target in words (e.g. "≥ 0.9× floor"). */
  target: string;
  /** Whether the target was met; null when there is no target. */
  met: boolean | null;
}

/** A benchmark: given the running stack's environment (stack.env), measures and reports. */
export type Bench = (env: Record<string, string>) => Promise<BenchRow[]>;
