/**
 * `deno task bench:render`: re-renders bench/RESULTS.md from what the runs stored
 * (bench/results/*.json) without measuring anything, then says on the terminal which stored
 * figures were measured at another commit than HEAD and how much of the code they measure has
 * changed since (the document itself never depends on HEAD).
 */
import { loadBenchStore, loadChaosStore, writeResults } from "./results.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** The code a bench measures: the functions, their shared code, the SQL, the bench itself. */
const MEASURED = ["shared", "supabase", "admin", "local", "bench"];

async function git(args: string[]): Promise<string> {
  const out = await new Deno.Command("git", { args: ["-C", ROOT, ...args], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).trim();
}

async function main(): Promise<number> {
  const store = await loadBenchStore();
  const long = await loadChaosStore();
  await writeResults(undefined, store, long);
  console.log("bench:render: wrote bench/RESULTS.md from bench/results/");
  const head = await git(["rev-parse", "HEAD"]);
  const measured = [
    ...store.benches.map((e) => ({ what: `bench ${e.name}`, commit: e.run.commit })),
    ...(long?.runs ?? []).map((r) => ({ what: `chaos run ${r.log}`, commit: r.commit })),
  ];
  for (const m of measured) {
    if (head.startsWith(m.commit) || m.commit.startsWith(head)) {
      console.log(`  ${m.what}: measured at HEAD`);
      continue;
    }
    const files = await git(["diff", "--name-only", `${m.commit}..HEAD`, "--", ...MEASURED]);
    const n = files ? files.split("\n").length : 0;
    console.log(
      `  ${m.what}: measured at ${m.commit.slice(0, 7)}, not at HEAD (${n} files of ${
        MEASURED.join(", ")
      } changed since)`,
    );
  }
  if (!long) console.log("  chaos long run: none aggregated (deno task chaos:aggregate)");
  return 0;
}

if (import.meta.main) Deno.exit(await main());
