/**
 * The scheduled functions are declared once (`shared/schedules/jobs.ts`): the jobs pg_cron holds
 * after the stack's migrate are exactly the declared ones (docs/atomic-state.md, "Schedules"),
 * the newest generated migration (`deno task schedules`) schedules the declaration, every
 * declared job has its function folder and config.toml entry, the set helper adds and removes
 * jobs in both directions, and a scheduled function records its runs through
 * `defineScheduledFunction` (never a run of one account).
 */
import assert from "node:assert/strict";
import { intervalOf, SCHEDULED_JOBS, type ScheduledJob } from "../shared/schedules/jobs.ts";
import {
  configEntry,
  declarationProblems,
  GENERATED_SUFFIX,
  generateSchedules,
  jobRows,
  jobsOfMigration,
  nextVersion,
  REPOSITORY_FILES,
  scheduleMigration,
} from "../tooling/schedules.ts";
import { parse } from "smol-toml";
import type { Sql } from "../shared/platform/db.ts";
import { adminDb, backendDb, call, closeDbs, withCronPaused } from "./_stack.ts";

/** The test pools close once, after every test of this file. */
Deno.test.afterAll(closeDbs);

/** A job of `cron.job` that calls a function, read from its command; undefined for other jobs. */
function functionJob(row: { jobname: string; schedule: string; command: string }) {
  const m = /^select public\.mp_invoke_function\('([^']*)', '(.*)'::jsonb, (\d+)\)$/s.exec(
    row.command,
  );
  if (!m) return undefined;
  return {
    job: row.jobname,
    name: m[1],
    schedule: row.schedule,
    body: JSON.parse(m[2]),
    timeout_ms: Number(m[3]),
  };
}

/** Every job of the Backend's pg_cron that posts to a function (any way of calling one). */
async function scheduledFunctions(sql = backendDb()) {
  const rows = await sql<{ jobname: string; schedule: string; command: string }[]>`
    select jobname, schedule, command from cron.job
     where command like '%mp_invoke_function%' or command like '%/functions/v1/%'
     order by jobname`;
  return rows.map((row) => functionJob(row) ?? { job: row.jobname, unreadable: row.command });
}

Deno.test("after migrate, pg_cron's function jobs are exactly the declared ones (name, schedule, body, timeout), each recorded in mp_schedules", async () => {
  const found = await scheduledFunctions();
  const declared = jobRows(SCHEDULED_JOBS).map((row) => ({ job: row.name, ...row }));
  assert.deepEqual(found, declared, "cron.job's function jobs vs shared/schedules/jobs.ts");
  // The contract's schedules, stated here as docs/contract.md and README state them.
  const byName = new Map(found.map((j) => [j.job, j]));
  assert.equal(byName.get("mp-refresh")?.schedule, "*/10 * * * *");
  assert.deepEqual(byName.get("mp-refresh")?.body, { limit: 200 });
  for (const name of ["mp-reconcile", "mp-probe", "mp-deliver-events"]) {
    assert.equal(byName.get(name)?.schedule, "* * * * *", name);
  }
  const records = await backendDb()<{ job_name: string; function_name: string }[]>`
    select job_name, function_name from mp_schedules order by job_name`;
  assert.deepEqual(
    [...records],
    declared.map((j) => ({ job_name: j.name, function_name: j.name })),
    "one mp_schedules record per declared job, none other",
  );
});

Deno.test("the newest generated migration schedules the declaration; every declared job has its folder and config.toml entry", async () => {
  const state = await generateSchedules({ check: true });
  assert.deepEqual(state, { problems: [], migration: undefined, configAdded: [] });
  const toml = parse(await Deno.readTextFile(REPOSITORY_FILES.config)) as {
    functions: Record<string, { verify_jwt: boolean }>;
  };
  for (const job of SCHEDULED_JOBS) {
    await Deno.stat(`${REPOSITORY_FILES.functions}/${job.name}/index.ts`);
    assert.equal(toml.functions[job.name]?.verify_jwt, false, job.name);
  }
});

Deno.test("mp_schedule_functions schedules what it is given and unschedules every other function job, leaving other jobs alone", async () => {
  const extra: ScheduledJob = {
    name: "mp-schedules-test-job",
    schedule: "*/5 * * * *",
    body: { limit: 3 },
    timeoutMs: 30_000,
  };
  const without = SCHEDULED_JOBS.filter((j) => j.name !== "mp-probe");
  const jobs = JSON.stringify(jobRows([...without, extra]));
  const others = async (sql = backendDb()) =>
    await sql`select jobname, schedule, command from cron.job
      where command not like '%mp_invoke_function%' order by jobname`;
  const before = await others();
  assert.ok(before.some((j) => j.jobname === "mp-retention"), "a job that is not a function's");
  // In a transaction that is rolled back, as postgres (whose jobs they are), as a migration runs.
  await backendDb().begin(async (transaction) => {
    const tx = transaction as unknown as Sql; // its queries, as the helpers below take them
    await tx`set local role postgres`;
    const [{ n }] = await tx`select public.mp_schedule_functions(${jobs}::text::jsonb) as n`;
    assert.equal(n, without.length + 1);
    const names = (await scheduledFunctions(tx)).map((j) => j.job);
    assert.ok(names.includes("mp-schedules-test-job"), "a declared job is added");
    assert.ok(!names.includes("mp-probe"), "an undeclared job is removed");
    assert.deepEqual(
      (await scheduledFunctions(tx)).find((j) => j.job === "mp-schedules-test-job"),
      {
        job: extra.name,
        name: extra.name,
        schedule: "*/5 * * * *",
        body: { limit: 3 },
        timeout_ms: 30_000,
      },
    );
    const records = await tx`select job_name from mp_schedules order by job_name`;
    assert.deepEqual(records.map((r) => r.job_name), names, "the records follow the jobs");
    assert.deepEqual(await others(tx), before, "jobs that call no function are left alone");
    const [{ none }] = await tx`select public.mp_schedule_functions('[]'::jsonb) as none`;
    assert.equal(none, 0);
    assert.deepEqual(await scheduledFunctions(tx), [], "an empty declaration: no function job");
    throw new Error("roll back");
  }).catch((err) => assert.equal(err.message, "roll back"));
  assert.deepEqual(
    (await scheduledFunctions()).map((j) => j.job),
    jobRows(SCHEDULED_JOBS).map((j) => j.name),
    "rolled back",
  );
});

Deno.test("deno task schedules: a new declaration writes one migration after the newest and the function's config.toml entry; run again, nothing", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const files = {
      migrations: `${dir}/migrations`,
      config: `${dir}/config.toml`,
      functions: `${dir}/functions`,
    };
    await Deno.mkdir(files.migrations);
    await Deno.mkdir(`${files.functions}/mp-new-job`, { recursive: true });
    await Deno.writeTextFile(`${files.functions}/mp-new-job/index.ts`, "");
    await Deno.writeTextFile(`${files.migrations}/20990101000000_other.sql`, "select 1;");
    await Deno.writeTextFile(files.config, `${configEntry("mp-old")}\n`);
    const job: ScheduledJob = {
      name: "mp-new-job",
      schedule: "0 3 * * *",
      body: {},
      timeoutMs: 60_000,
    };
    const now = new Date("2026-12-07T12:00:00Z");
    const first = await generateSchedules({ jobs: [job], files, now });
    assert.deepEqual(first, {
      problems: [],
      migration: `20990101000100${GENERATED_SUFFIX}`,
      configAdded: ["mp-new-job"],
    });
    const sql = await Deno.readTextFile(`${files.migrations}/${first.migration}`);
    assert.deepEqual(jobsOfMigration(sql), [
      { name: "mp-new-job", schedule: "0 3 * * *", body: {}, timeout_ms: 60_000 },
    ]);
    const toml = parse(await Deno.readTextFile(files.config)) as {
      functions: Record<string, Record<string, unknown>>;
    };
    assert.deepEqual({ ...toml.functions["mp-new-job"] }, {
      enabled: true,
      verify_jwt: false,
      import_map: "../deno.json",
      entrypoint: "./functions/mp-new-job/index.ts",
    });
    assert.ok(toml.functions["mp-old"], "the entries there are kept");
    const again = await generateSchedules({ jobs: [job], files, now });
    assert.deepEqual(again, { problems: [], migration: undefined, configAdded: [] });
    // Taken out again: a migration that schedules nothing (so pg_cron's job goes too).
    const gone = await generateSchedules({ jobs: [], files, now, check: true });
    assert.equal(gone.migration, `20990101000200${GENERATED_SUFFIX}`, "--check: due");
    assert.equal((await Array.fromAsync(Deno.readDir(files.migrations))).length, 2, "unwritten");
    // A declared job without its folder stops it.
    const lost = await generateSchedules({ jobs: [{ ...job, name: "mp-nowhere" }], files, now });
    assert.equal(lost.problems.length, 1);
    assert.match(lost.problems[0], /mp-nowhere: declared, but .*mp-nowhere\/index\.ts/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generated migrations: the job rows read back, sorted by name; versions after the newest or now", () => {
  const jobs: ScheduledJob[] = [
    { name: "b-job", schedule: "* * * * *", body: { a: "it's" }, timeoutMs: 1000 },
    { name: "a-job", schedule: "15 * * * *", body: {}, timeoutMs: 2000 },
  ];
  const sql = scheduleMigration(jobs);
  assert.deepEqual(jobsOfMigration(sql)?.map((j) => j.name), ["a-job", "b-job"]);
  assert.deepEqual(jobsOfMigration(sql)?.[1].body, { a: "it's" });
  assert.equal(jobsOfMigration("select 1;"), undefined);
  assert.match(sql, /^-- .*\n-- GENERATED by `deno task schedules`/);
  const now = new Date("2026-12-07T23:10:05Z");
  assert.equal(nextVersion(["20261216000100_x.sql"], now), "20261216000200");
  assert.equal(nextVersion(["20250101000000_x.sql"], now), "20261207231005");
  assert.equal(nextVersion([], now), "20261207231005");
});

Deno.test("a declaration's problems: names, twins, schedules, timeouts; intervals of the supported schedules", () => {
  assert.deepEqual(declarationProblems(SCHEDULED_JOBS), []);
  const job = { name: "x", schedule: "* * * * *", body: {}, timeoutMs: 60_000 };
  assert.equal(declarationProblems([{ ...job, name: "X'; drop" }]).length, 1);
  assert.equal(declarationProblems([job, job]).length, 1);
  assert.equal(declarationProblems([{ ...job, schedule: "*/90 * * * *" }]).length, 1);
  assert.equal(declarationProblems([{ ...job, timeoutMs: 500 }]).length, 1);
  assert.equal(declarationProblems([{ ...job, timeoutMs: 400_001 }]).length, 1);
  assert.equal(intervalOf("* * * * *"), 60);
  assert.equal(intervalOf("*/10 * * * *"), 10 * 60);
  assert.equal(intervalOf("37 * * * *"), 60 * 60);
  assert.equal(intervalOf("0 */6 * * *"), 6 * 60 * 60);
  assert.equal(intervalOf("30 3 * * *"), 24 * 60 * 60);
  for (const bad of ["", "* * * *", "60 * * * *", "* 3 * * *", "0 0 1 * *", "1,2 * * * *"]) {
    assert.equal(intervalOf(bad), undefined, bad);
  }
});

Deno.test("a scheduled function records its run (start, counts without results), an empty body meaning the defaults; a run of one account is not recorded", async () => {
  const lastRun = async () =>
    (await adminDb()<{ last_started_at: Date; summary: string }[]>`
      select last_started_at, summary::text as summary from mp_function_runs
       where function_name = 'mp-probe'`)[0];
  await withCronPaused("mp-probe", async () => {
    const before = new Date(Date.now() - 1000);
    const res = await call("mp-probe", undefined, { method: "POST" }); // no body at all
    const answer = res.body;
    assert.equal(res.status, 200, JSON.stringify(answer));
    assert.ok(Array.isArray(answer.results), "the answer has its results");
    const recorded = await lastRun();
    assert.ok(recorded.last_started_at >= before, "recorded with this run's start");
    const summary = JSON.parse(recorded.summary);
    assert.equal(summary.checked, answer.checked);
    assert.equal("results" in summary, false, "the record keeps counts, not results");

    const one = await call("mp-probe", { account_id: crypto.randomUUID() });
    assert.notEqual(one.status, 500, JSON.stringify(one.body));
    assert.deepEqual(await lastRun(), recorded, "a run of one account is not the schedule's");
  });
});

Deno.test("scheduled functions alike: a bad limit is 400 in one wording, with each function's maximum; force needs account_id", async () => {
  const maxima = {
    "mp-refresh": 500,
    "mp-reconcile": 10_000,
    "mp-probe": 1000,
    "mp-deliver-events": 1000,
  };
  for (const [name, max] of Object.entries(maxima)) {
    for (const limit of [0, max + 1, 1.5, "5", null]) {
      const res = await call(name, { limit });
      assert.equal(res.status, 400, `${name} ${JSON.stringify(limit)}`);
      assert.deepEqual(res.body.error, {
        code: "invalid_request",
        message: `limit: must be from 1 to ${max}`,
      }, `${name} ${JSON.stringify(limit)}`);
    }
  }
  const force = await call("mp-refresh", { force: true });
  assert.equal(force.status, 400);
  assert.equal(force.body.error.message, "force: needs account_id");
  const extra = await call("mp-reconcile", { limit: 1, x: 1 });
  assert.equal(extra.status, 400);
  assert.equal(extra.body.error.message, "unknown field x");
});
