/**
 * What a chaos run (tests/chaos/cli.ts) reports about itself: the `chaos-summary {json}` line it
 * prints last, read as bench/chaos.ts and bench/chaos_aggregate.ts count it. Faults are counted
 * as fired when the summary tells fired from set (`faultsFired`), else as set; steps and
 * sequences as the run counted them.
 */

/** The fields of a `chaos-summary` line these counts use (a run may print more). */
export interface ChaosSummary {
  seed: number;
  /**
   * The sites of the stack's MercadoPago applications the run used (one: the single app); absent
   * in a line printed before the run had several applications (it ran on the single app).
   */
  apps?: string[];
  steps: number;
  runs: number;
  seconds: number;
  /** Faults set, by kind (fired or not). */
  faults: Record<string, number>;
  /** Faults that fired, by kind, when the run tells them apart. */
  faultsFired?: Record<string, number>;
  /** Faults of one application alone that fired, by site, then by kind (a part of `faultsFired`). */
  faultsFiredPerApp?: Record<string, Record<string, number>>;
  /** The commit the run ran, when it says. */
  commit?: string;
  violations: string[];
}

/** Every `chaos-summary` line of a run's output, parsed, in order. */
export function summariesOf(text: string): ChaosSummary[] {
  return text.split("\n").filter((l) => l.startsWith("chaos-summary ")).map((l) => {
    const s = JSON.parse(l.slice("chaos-summary ".length));
    for (const field of ["seed", "steps", "runs", "seconds"]) {
      if (typeof s[field] !== "number") throw new Error(`chaos-summary without ${field}`);
    }
    if (typeof s.faults !== "object" || !Array.isArray(s.violations)) {
      throw new Error("chaos-summary without faults or violations");
    }
    return s as ChaosSummary;
  });
}

/** The sites of a run's applications: as its summary says, else (an older line) the single app. */
export function appsOf(s: ChaosSummary): string[] {
  return s.apps ?? ["single"];
}

/** Faults of one application alone that fired, in all, by site (none for the single app). */
export function faultsPerAppOf(s: ChaosSummary): Record<string, number> {
  return Object.fromEntries(
    Object.entries(s.faultsFiredPerApp ?? {}).map((
      [site, kinds],
    ) => [site, Object.values(kinds).reduce((a, b) => a + b, 0)]),
  );
}

/** The faults a summary counts, by kind, and whether they are those that fired or those set. */
export function faultsOf(
  s: ChaosSummary,
): { faults: Record<string, number>; counted: "fired" | "set" } {
  return s.faultsFired
    ? { faults: s.faultsFired, counted: "fired" }
    : { faults: s.faults, counted: "set" };
}

/**
 * The replay line of a violation as the run printed it (the line naming `--seed`), else its
 * first line.
 */
export function replayOf(violation: string): string {
  const lines = violation.split("\n").map((l) => l.trim()).filter(Boolean);
  return lines.find((l) => l.includes("--seed")) ?? lines.find((l) => /seed/i.test(l)) ??
    lines[0] ?? "";
}
