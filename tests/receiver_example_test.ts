// deno-lint-ignore-file no-explicit-any
/**
 * The receiving side (docs/events.md, "The receiving side: a platform in Node"): the example
 * `docs/examples/platform_receiver.mjs`, which the doc shows verbatim, run by `node` (≥ 20)
 * with the `standardwebhooks` package pinned in deno.json, against the test stack — deliveries
 * signed exactly as mp-deliver-events signs them (`shared/events/sign.ts`, the stack's
 * `PLATFORM_WEBHOOK_SECRETS`), and the catch-up through `mp-events`.
 */
import assert from "node:assert/strict";
import { signatureHeaders, signers } from "../shared/events/sign.ts";
import {
  adminDb,
  call,
  eventually,
  pauseJobsDuringFile,
  provisionedPair,
  stack,
  testPort,
} from "./_stack.ts";
import { type NodeProject, nodeProject } from "./_node.ts";

pauseJobsDuringFile();

const EXAMPLE = new URL("../docs/examples/platform_receiver.mjs", import.meta.url);
/** The example receiver's port. */
const RECEIVER_PORT = () => testPort(62);

/** A Node project with the example and `standardwebhooks`, for `fn`. */
async function withExample(fn: (project: NodeProject) => Promise<void>): Promise<void> {
  const project = await nodeProject(["standardwebhooks"]);
  try {
    await project.write("platform_receiver.mjs", await Deno.readTextFile(EXAMPLE));
    await fn(project);
  } finally {
    await project.remove();
  }
}

/** The JSON lines a run printed. */
function lines(stdout: string): any[] {
  return stdout.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/** An account's events in the outbox, in its order, with the payload as stored (the body sent). */
async function eventsOf(accountId: string): Promise<{ id: string; type: string; body: string }[]> {
  return await adminDb()`select id, type, payload::text as body from mp_event_outbox
    where account_id = ${accountId} order by seq, pos` as any;
}

/** Every mp-events id after `after` (all pages) and the cursor after them. */
async function pullAll(after: string | null): Promise<{ ids: string[]; next: string | null }> {
  const ids: string[] = [];
  let cursor = after;
  for (;;) {
    const res = await call("mp-events", undefined, {
      query: `?limit=500${cursor ? `&after=${cursor}` : ""}`,
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    ids.push(...res.body.events.map((e: any) => e.id));
    cursor = res.body.next;
    if (res.body.events.length < 500) return { ids, next: cursor };
  }
}

Deno.test("docs/events.md shows docs/examples/platform_receiver.mjs verbatim", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/events.md", import.meta.url));
  const marker = "<!-- docs/examples/platform_receiver.mjs -->\n\n```js\n";
  const start = doc.indexOf(marker);
  assert.ok(start >= 0, "the doc marks the example's block");
  const from = start + marker.length;
  const block = doc.slice(from, doc.indexOf("\n```\n", from) + 1);
  assert.equal(block, await Deno.readTextFile(EXAMPLE));
});

Deno.test("the example under Node verifies deliveries with standardwebhooks: real signed events acknowledged and handled once; tampered, wrongly signed and stale ones refused", async () => {
  const p = await provisionedPair();
  assert.equal((await call("mp-revoke", { account_id: p.accountId })).status, 200);
  const events = await eventsOf(p.accountId);
  assert.deepEqual(events.map((e) => e.type), ["mp.connection.connected", "mp.connection.revoked"]);
  const secrets = stack.env("PLATFORM_WEBHOOK_SECRETS").split(" ");
  assert.ok(secrets.length >= 2, "the stack signs under two secrets");
  const hooks = signers(secrets);
  const url = `http://127.0.0.1:${RECEIVER_PORT()}/mp/events`;
  const post = async (body: string, headers: Record<string, string>) => {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body,
    });
    await res.body?.cancel();
    return res.status;
  };
  await withExample(async (project) => {
    // The platform holds one of the secrets (the newest, as after a rotation).
    const receiver = project.spawn(["platform_receiver.mjs", "serve"], {
      PORT: String(RECEIVER_PORT()),
      WEBHOOK_SECRETS: secrets.at(-1)!,
    });
    const out: string[] = [];
    const reading = (async () => {
      for await (const chunk of receiver.stdout.pipeThrough(new TextDecoderStream())) {
        out.push(chunk);
      }
    })();
    const stderr = new Response(receiver.stderr).text();
    try {
      await eventually(() => Promise.resolve(out.join("").includes('"listening"')), 15_000);
      const [connected, revoked] = events;
      for (const e of [connected, revoked]) {
        assert.equal(await post(e.body, signatureHeaders(hooks, e.id, new Date(), e.body)), 204);
      }
      // Delivered again (at least once): acknowledged, not handled twice.
      const again = signatureHeaders(hooks, connected.id, new Date(), connected.body);
      assert.equal(await post(connected.body, again), 204);
      // The body altered after signing.
      const tampered = revoked.body.replace(p.accountId, crypto.randomUUID());
      assert.notEqual(tampered, revoked.body);
      const signed = signatureHeaders(hooks, revoked.id, new Date(), revoked.body);
      assert.equal(await post(tampered, signed), 401);
      // Signed under a secret the platform does not hold.
      const stranger = signers([`whsec_${btoa(crypto.randomUUID())}`]);
      const forged = signatureHeaders(stranger, revoked.id, new Date(), revoked.body);
      assert.equal(await post(revoked.body, forged), 401);
      // Signed right, but 10 minutes ago (a replay).
      const old = new Date(Date.now() - 10 * 60_000);
      assert.equal(
        await post(revoked.body, signatureHeaders(hooks, revoked.id, old, revoked.body)),
        401,
      );
      // No signature at all.
      assert.equal(await post(revoked.body, {}), 401);
    } finally {
      receiver.kill("SIGTERM");
      await receiver.status;
      await reading;
    }
    assert.equal(await stderr, "");
    assert.deepEqual(lines(out.join("")), [
      { listening: RECEIVER_PORT() },
      {
        via: "push",
        id: events[0].id,
        type: "mp.connection.connected",
        account_id: p.accountId,
        client_id: p.clientId,
        state: "connected",
      },
      {
        via: "push",
        id: events[1].id,
        type: "mp.connection.revoked",
        account_id: p.accountId,
        client_id: p.clientId,
        state: "revoked",
      },
      { refused: events[1].id },
      { refused: events[1].id },
      { refused: events[1].id },
      { refused: null },
    ]);
  });
});

Deno.test("the example under Node catches up with mp-events: every event after the kept cursor, in commit order, page by page; a second run has nothing new", async () => {
  const start = (await pullAll(null)).next;
  assert.ok(start);
  const a = await provisionedPair();
  assert.equal((await call("mp-revoke", { account_id: a.accountId })).status, 200);
  const b = await provisionedPair();
  const mine = [...await eventsOf(a.accountId), ...await eventsOf(b.accountId)];
  assert.deepEqual(mine.map((e) => e.type), [
    "mp.connection.connected",
    "mp.connection.revoked",
    "mp.connection.connected",
  ]);
  const mineIds = mine.map((e) => e.id);
  // Readable once their transactions are below every reader's snapshot (docs/events.md, "Pull").
  await eventually(async () => {
    const { ids } = await pullAll(start);
    return mineIds.every((id) => ids.includes(id));
  });
  await withExample(async (project) => {
    const cursorFile = `${project.dir}/mp-events.cursor`;
    await Deno.writeTextFile(cursorFile, start!);
    const env = {
      FUNCTIONS_URL: stack.functionsUrl,
      SECRET_KEY: stack.secretKey,
      CURSOR_FILE: cursorFile,
      PAGE_LIMIT: "2",
    };
    const first = await project.node(["platform_receiver.mjs", "catch-up"], env);
    assert.equal(first.code, 0, first.stderr);
    const printed = lines(first.stdout);
    const pulled = printed.filter((l) => l.via === "pull");
    const last = printed.at(-1);
    assert.deepEqual(Object.keys(last), ["next"]);
    assert.equal(printed.length, pulled.length + 1, "only events and the cursor");
    // The same events, in the same order, as mp-events gives them from the kept cursor.
    const direct = await pullAll(start);
    assert.deepEqual(pulled.map((e) => e.id), direct.ids.slice(0, pulled.length));
    assert.deepEqual(
      pulled.filter((e) => mineIds.includes(e.id)).map((e) => [e.id, e.type, e.account_id]),
      mine.map((e, i) => [e.id, e.type, i < 2 ? a.accountId : b.accountId]),
    );
    assert.equal((await Deno.readTextFile(cursorFile)).trim(), last.next, "the cursor is kept");
    // Nothing new since: the next run prints none of them again.
    const second = await project.node(["platform_receiver.mjs", "catch-up"], env);
    assert.equal(second.code, 0, second.stderr);
    const again = lines(second.stdout).filter((l) => l.via === "pull").map((e) => e.id);
    assert.deepEqual(again.filter((id) => pulled.some((e) => e.id === id)), []);
  });
});
