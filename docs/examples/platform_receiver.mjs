// The platform's side of the connection events, for Node ≥ 20 with one package:
// `npm install standardwebhooks@1.3.0`. Two commands:
//
//   node platform_receiver.mjs serve      receives deliveries on PORT (POST, any path), each
//                                         verified with WEBHOOK_SECRETS (space-separated whsec_…)
//   node platform_receiver.mjs catch-up   reads mp-events after the cursor kept in CURSOR_FILE
//                                         (FUNCTIONS_URL, SECRET_KEY; PAGE_LIMIT, default 100)
//
// Both hand each event to `handle`, which prints it as one JSON line. Delivery is at least
// once and the same event may come by push and by pull: handle an event once per `id` (the
// `webhook-id`); in production, record the ids in your database with a unique index.
import { createServer } from "node:http";
import { readFile, writeFile } from "node:fs/promises";
import { Buffer } from "node:buffer";
import process from "node:process";
import { Webhook } from "standardwebhooks";

const handled = new Set();

/** Acts on one event, once per id (`via`: "push" or "pull"). */
function handle(id, event, via) {
  if (handled.has(id)) return;
  handled.add(id);
  const { account_id, client_id, state } = event.data;
  console.log(JSON.stringify({ via, id, type: event.type, account_id, client_id, state }));
}

/** The payload of a delivery signed under one of `secrets`, or null (forged, altered, stale). */
function verifier(secrets) {
  const hooks = secrets.split(/\s+/).filter(Boolean).map((s) => new Webhook(s));
  return (body, headers) => {
    for (const hook of hooks) {
      try {
        // Checks the signature of the raw body and that webhook-timestamp is within 5 minutes.
        return hook.verify(body, headers);
      } catch {
        // not signed under this secret: try the next (two during a rotation)
      }
    }
    return null;
  };
}

/** Receives deliveries: verifies the raw body, answers 2xx once it is handled, 401 if forged. */
function serve() {
  const verify = verifier(process.env.WEBHOOK_SECRETS ?? "");
  const server = createServer(async (req, res) => {
    if (req.method !== "POST") return res.writeHead(405).end();
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > 64 * 1024) return res.writeHead(413).end();
      chunks.push(chunk);
    }
    // Verify the bytes as they came: parsing and re-serializing would change what was signed.
    const body = Buffer.concat(chunks).toString("utf8");
    const id = req.headers["webhook-id"];
    const event = verify(body, req.headers);
    if (!event) {
      console.log(JSON.stringify({ refused: id ?? null }));
      return res.writeHead(401).end();
    }
    handle(id, event, "push");
    // Any 2xx acknowledges; anything else (or no answer in 15 s) is delivered again later.
    res.writeHead(204).end();
  });
  const port = Number(process.env.PORT ?? 8787);
  server.listen(port, "127.0.0.1", () => console.log(JSON.stringify({ listening: port })));
  process.on("SIGTERM", () => server.close());
}

/** Reads every event after the kept cursor, page by page, keeping the cursor after each page. */
async function catchUp() {
  const { FUNCTIONS_URL, SECRET_KEY } = process.env;
  if (!FUNCTIONS_URL || !SECRET_KEY) throw new Error("set FUNCTIONS_URL and SECRET_KEY");
  const file = process.env.CURSOR_FILE ?? "mp-events.cursor";
  const limit = Number(process.env.PAGE_LIMIT ?? 100);
  let after = (await readFile(file, "utf8").catch(() => "")).trim();
  for (;;) {
    const url = new URL(`${FUNCTIONS_URL}/mp-events`);
    url.searchParams.set("limit", String(limit));
    if (after) url.searchParams.set("after", after); // none: from the oldest kept event
    const res = await fetch(url, {
      headers: { apikey: SECRET_KEY },
      signal: AbortSignal.timeout(30_000),
    });
    if (res.status !== 200) throw new Error(`mp-events answered ${res.status}`);
    const page = await res.json();
    for (const event of page.events) handle(event.id, event, "pull");
    after = page.next;
    await writeFile(file, after);
    if (page.events.length < limit) break;
  }
  console.log(JSON.stringify({ next: after }));
}

const command = process.argv[2];
if (command === "serve") serve();
else if (command === "catch-up") await catchUp();
else {
  console.error("usage: node platform_receiver.mjs serve | catch-up");
  process.exitCode = 2;
}
