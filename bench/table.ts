/** The bench rows as tables: plain text for the terminal, Markdown for bench/RESULTS.md. */
import type { BenchRow } from "./types.ts";

const COLUMNS: (keyof BenchRow)[] = [
  "bench",
  "metric",
  "value",
  "baseline",
  "ratio",
  "target",
  "met",
];

function cell(row: BenchRow, col: keyof BenchRow): string {
  const v = row[col];
  if (col === "met") return v === null ? "" : v ? "yes" : "NO";
  return String(v);
}

/** The rows as a plain-text table for the terminal. */
export function textTable(rows: BenchRow[]): string {
  const widths = COLUMNS.map((c) => Math.max(c.length, ...rows.map((r) => [...cell(r, c)].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => c + " ".repeat(widths[i] - [...c].length)).join("  ").trimEnd();
  return [
    line(COLUMNS),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map((r) => line(COLUMNS.map((c) => cell(r, c)))),
  ].join("\n");
}

/** The rows as a Markdown table. */
export function markdownTable(rows: BenchRow[]): string {
  const esc = (s: string) => s.replaceAll("|", "\\|");
  return [
    `| ${COLUMNS.join(" | ")} |`,
    `| ${COLUMNS.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${COLUMNS.map((c) => esc(cell(r, c))).join(" | ")} |`),
  ].join("\n");
}
