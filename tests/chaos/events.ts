// deno-lint-ignore-file no-explicit-any
/**
 * The chaos run's platform (docs/events.md, invariant 10): a receiver of the pushed events on the
 * stack's PLATFORM_WEBHOOK_URL (the test profile: the gateway's port + 7), started once per
 * `runChaos` and stopped at its end, answering as the model tells it (`ok` 2xx, `error` 5xx,
 * `never`: the request is held until the run ends, so the attempt times out after the stack's
 * short PLATFORM_WEBHOOK_TIMEOUT_MS); and a reader of the pull API keeping its cursor.
 *
 * `checkEvents` (called by `checkInvariants` after every step) checks invariant 10:
 * - each tracked account's outbox events, in sequence order, form a chain of real changes of
 *   `nv_accounts.mp_state` (types as docs/events.md, contiguous sequences ending at
 *   `mp_event_seq`, none for a no-op) that ends at the account's current state, and at most
 *   one `expiring` per token version;
 * - every delivery the receiver got verifies under every secret of PLATFORM_WEBHOOK_SECRETS, is
 *   an outbox event byte for byte, and came only after each earlier event of its account was
 *   acknowledged (or delivered before this receiver existed);
 * - the pulled events, in order, are exactly the outbox in commit order up to the last pulled;
 * - no payload (outbox, delivery, pull) carries a secret, and none has a field docs/events.md lacks;
 *   with several applications, an event's `site_id` is its account's site.
 *
 * Secrets are compared with `===`/`includes` only; no message names one.
 */
import { Webhook } from "standardwebhooks";
import { adminDb, stack } from "../_stack.ts";
import { findIn, Violation, type World } from "./world.ts";

export type ReceiverMode = "ok" | "error" | "never";

/** One request the receiver got. */
interface Receipt {
  /** Arrival order over the whole run. */
  n: number;
  at: number;
  id: string;
  body: string;
  /** Answered 2xx at once. */
  acked: boolean;
  /** Verifies under every secret of PLATFORM_WEBHOOK_SECRETS. */
  verified: boolean;
}

/** A pulled event (mp-events). */
interface Pulled {
  id: string;
  event: any;
}

const DATA_KEYS = new Set([
  "account_id",
  "client_id",
  "mp_user_id",
  "state",
  "reason",
  "deadline",
  "token_version",
  "site_id",
]);

/** The receiver and the pull reader of one chaos run. */
export class Platform {
  mode: ReceiverMode = "ok";
  receipts: Receipt[] = [];
  /** Receipts checked so far (the checks are incremental). */
  checkedReceipts = 0;
  /** Ids of events acknowledged by the receiver, with the arrival number of the first ack. */
  ackedAt = new Map<string, number>();
  pulled: Pulled[] = [];
  pulledIds = new Set<string>();
  checkedPulled = 0;
  cursor: string | undefined;
  startedAt = 0;
  private server: Deno.HttpServer | undefined;
  private held = new Set<() => void>();
  private hooks: Webhook[] = [];

  /** Where the stack delivers (PLATFORM_WEBHOOK_URL; else the gateway's port + 7). */
  static target(): URL {
    let url: string | undefined;
    try {
      url = stack.env("PLATFORM_WEBHOOK_URL");
    } catch { /* unset */ }
    return new URL(
      url ?? `http://127.0.0.1:${Number(stack.env("GATEWAY_PORT")) + 7}/platform/events`,
    );
  }

  async start(): Promise<void> {
    const url = Platform.target();
    this.hooks = stack.env("PLATFORM_WEBHOOK_SECRETS").split(/\s+/).filter(Boolean)
      .map((s) => new Webhook(s));
    // The database's clock: receipts are compared with delivered_at.
    const [{ now }] = await adminDb()`select now()`;
    this.startedAt = (now as Date).getTime();
    const ready = Promise.withResolvers<void>();
    this.server = Deno.serve(
      { hostname: url.hostname, port: Number(url.port), onListen: () => ready.resolve() },
      async (req) => {
        const body = await req.text();
        const headers = Object.fromEntries(req.headers);
        const mode = this.mode;
        let verified = this.hooks.length > 0;
        for (const hook of this.hooks) {
          try {
            hook.verify(body, headers);
          } catch {
            verified = false;
          }
        }
        const r: Receipt = {
          n: this.receipts.length,
          at: Date.now(),
          id: headers["webhook-id"] ?? "",
          body,
          acked: mode === "ok" && new URL(req.url).pathname === url.pathname,
          verified,
        };
        this.receipts.push(r);
        if (r.acked && !this.ackedAt.has(r.id)) this.ackedAt.set(r.id, r.n);
        if (mode === "error") return new Response("unavailable", { status: 503 });
        if (mode === "never") {
          await new Promise<void>((resolve) => this.held.add(resolve));
          return new Response("too late", { status: 503 });
        }
        return r.acked ? Response.json({ ok: true }) : new Response("not here", { status: 404 });
      },
    );
    await ready.promise;
  }

  /** Releases the held requests and stops the receiver. */
  async stop(): Promise<void> {
    for (const release of this.held) release();
    this.held.clear();
    await this.server?.shutdown();
    this.server = undefined;
  }

  get heldCount(): number {
    return this.held.size;
  }
}

/** The event type of a change (SQL `mp_event_type`), or null for no change. */
function eventType(
  oldState: string,
  newState: string,
  oldUser: number | null,
  newUser: number | null,
  reason: string | null,
): string | null {
  const live = ["connected", "at_risk", "reauth_required"];
  if (
    newState === "connected" && live.includes(oldState) && oldUser !== null &&
    newUser !== oldUser
  ) return "mp.connection.seller_replaced";
  if (newState === oldState) return null;
  if (newState === "connected" && (oldState === "at_risk" || oldState === "reauth_required")) {
    return "mp.connection.recovered";
  }
  if (newState === "connected") return "mp.connection.connected";
  if (newState === "at_risk") return "mp.connection.at_risk";
  if (newState === "reauth_required") return "mp.connection.reauth_required";
  if (newState === "revoked") {
    return reason === "mp_deauthorized" ? "mp.connection.deauthorized" : "mp.connection.revoked";
  }
  return null;
}

const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

/** A payload's shape: docs/events.md's fields only (a token could hide in no other). */
function shapeProblem(payload: any): string | null {
  if (!payload || typeof payload !== "object") return "not an object";
  const top = Object.keys(payload).sort().join(",");
  if (top !== "data,timestamp,type") return `top-level fields ${top}`;
  const extra = Object.keys(payload.data ?? {}).filter((k) => !DATA_KEYS.has(k));
  if (extra.length > 0) return `data fields ${extra.join(",")}`;
  if (!("client_id" in payload.data) || !("mp_user_id" in payload.data)) {
    return "client_id or mp_user_id missing";
  }
  return null;
}

/** Invariant 10 (see the module's comment). Needs the Admin DB; does nothing while it is down. */
export async function checkEvents(w: World, secrets: string[]): Promise<void> {
  if (w.db.admin !== "up") return;
  const p = w.platform;

  // 1. Each tracked account: its events are its changes of state, one each, in order.
  for (const a of w.accounts) {
    const id = `account ${a.accountId}`;
    const { row, events } = await adminDb().begin(
      "isolation level repeatable read",
      async (sql) => {
        const [row] = await sql`select mp_state, mp_state_reason, mp_user_id, mp_event_seq
        from nv_accounts where id = ${a.accountId}`;
        const events = await sql`select id, seq, type, payload::text as payload, status,
          delivered_at
        from mp_event_outbox where account_id = ${a.accountId} order by seq, pos`;
        return { row, events };
      },
    );
    if (!row) continue;
    let state = "not_connected";
    let user: number | null = null;
    let expectSeq: number | null = null;
    const expiringVersions = new Set<number>();
    for (const e of events) {
      const seq = Number(e.seq);
      if (findIn(e.payload, secrets).length > 0) {
        throw new Violation(10, `${id}: event seq ${seq} (${e.type}) carries a secret`);
      }
      if (
        e.status === "delivered" && !p.ackedAt.has(e.id) &&
        e.delivered_at.getTime() >= p.startedAt
      ) {
        throw new Violation(
          10,
          `${id}: event seq ${seq} (${e.type}) is marked delivered, the receiver never acknowledged it`,
        );
      }
      const payload = JSON.parse(e.payload);
      const shape = shapeProblem(payload);
      if (shape) throw new Violation(10, `${id}: event seq ${seq} payload: ${shape}`);
      if (payload.type !== e.type || payload.data.account_id !== a.accountId) {
        throw new Violation(10, `${id}: event seq ${seq} payload names another type or account`);
      }
      if (expectSeq === null) {
        if (seq !== 0 && seq !== 1) throw new Violation(10, `${id}: first event has seq ${seq}`);
      } else if (seq !== expectSeq) {
        throw new Violation(10, `${id}: event seq ${seq} follows seq ${expectSeq - 1}`);
      }
      expectSeq = seq + 1;
      const d = payload.data;
      // Several applications: an event names the account's own site (docs/events.md, `site_id`).
      if (w.apps.multi && d.site_id != null && d.site_id !== a.site) {
        throw new Violation(
          "site",
          `${id}: event seq ${seq} (${e.type}) names site ${d.site_id}, the account's is ${a.site}`,
        );
      }
      if (e.type === "mp.connection.expiring") {
        if (d.state !== state) {
          throw new Violation(
            10,
            `${id}: expiring (seq ${seq}) in state ${d.state}, the events' state is ${state}`,
          );
        }
        if (expiringVersions.has(d.token_version)) {
          throw new Violation(
            10,
            `${id}: a second expiring (seq ${seq}) for token version ${d.token_version}`,
          );
        }
        expiringVersions.add(d.token_version);
        if (!a.eventsSeen.has(e.id)) {
          a.eventsSeen.add(e.id);
          w.observed("event_expiring");
        }
        continue;
      }
      const expected = eventType(state, d.state, user, num(d.mp_user_id), d.reason ?? null);
      if (expected !== e.type) {
        throw new Violation(
          10,
          `${id}: event seq ${seq} is ${e.type}, but ${state} → ${d.state} is ${
            expected ?? "no change"
          }`,
        );
      }
      state = d.state;
      user = num(d.mp_user_id);
      if (!a.eventsSeen.has(e.id)) {
        a.eventsSeen.add(e.id);
        w.observed(`event_${e.type.replace("mp.connection.", "")}`);
      }
    }
    if (expectSeq !== null && expectSeq - 1 !== Number(row.mp_event_seq)) {
      throw new Violation(
        10,
        `${id}: last event seq ${expectSeq - 1}, nv_accounts.mp_event_seq ${row.mp_event_seq}`,
      );
    }
    if (state !== row.mp_state) {
      throw new Violation(
        10,
        `${id}: state ${row.mp_state} (${row.mp_state_reason}), its events end at ${state} (${events.length} events)`,
      );
    }
    if (
      ["connected", "at_risk", "reauth_required"].includes(state) &&
      user !== num(row.mp_user_id)
    ) {
      throw new Violation(10, `${id}: seller changed to ${row.mp_user_id} without an event`);
    }
  }

  // 2. Deliveries: signed, an outbox event byte for byte, in order per account.
  const fresh = p.receipts.slice(p.checkedReceipts);
  for (const r of fresh) {
    if (!r.verified) {
      throw new Violation(10, `delivery ${r.n} (webhook-id ${r.id}) does not verify`);
    }
    if (findIn(r.body, secrets).length > 0) {
      throw new Violation(10, `delivery ${r.n} (webhook-id ${r.id}) carries a secret`);
    }
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(r.id);
    const [e] = uuid
      ? await adminDb()`select account_id, seq, payload::text as payload
          from mp_event_outbox where id = ${r.id}`
      : [];
    if (!e) throw new Violation(10, `delivery ${r.n}: webhook-id ${r.id} is no outbox event`);
    if (e.payload !== r.body) {
      throw new Violation(10, `delivery ${r.n} (${r.id}): the body is not the stored payload`);
    }
    const earlier = await adminDb()`select id, seq, status, delivered_at, failed_at
      from mp_event_outbox where account_id = ${e.account_id} and seq < ${e.seq}`;
    for (const x of earlier) {
      const ack = p.ackedAt.get(x.id);
      if (ack !== undefined && ack < r.n) continue;
      if (x.status === "delivered" && x.delivered_at.getTime() < p.startedAt) continue;
      if (x.status === "failed" && x.failed_at.getTime() <= r.at) continue;
      throw new Violation(
        10,
        `account ${e.account_id}: event seq ${e.seq} delivered (receipt ${r.n}) before seq ${x.seq} was acknowledged (${x.status})`,
      );
    }
  }
  p.checkedReceipts += fresh.length;
  for (const _ of fresh) w.observed("event_receipts_checked");

  // 3. Pull: the pulled events are the outbox in commit order, none skipped, none repeated.
  if (p.pulled.length > 0) {
    const last = p.pulled[p.pulled.length - 1].id;
    const [{ n }] = await adminDb()`select count(*)::int as n from mp_event_outbox e,
        (select xid, pos from mp_event_outbox where id = ${last}) l
      where (e.xid, e.pos) <= (l.xid, l.pos)`;
    if (n !== p.pulled.length) {
      throw new Violation(
        10,
        `pulled ${p.pulled.length} events, the outbox holds ${n} up to the last pulled (commit order)`,
      );
    }
    if (p.checkedPulled < p.pulled.length) {
      const from = p.checkedPulled > 0 ? p.pulled[p.checkedPulled - 1].id : null;
      const rows = await adminDb()`select e.id, e.payload::text as payload
        from mp_event_outbox e, (select xid, pos from mp_event_outbox where id = ${last}) l
        where (e.xid, e.pos) <= (l.xid, l.pos)
          and (${from}::uuid is null or (e.xid, e.pos) >
               (select xid, pos from mp_event_outbox where id = ${from}::uuid))
        order by e.xid, e.pos`;
      const fresh = p.pulled.slice(p.checkedPulled);
      if (rows.length !== fresh.length) {
        throw new Violation(10, `pulled ${fresh.length} new events, the outbox has ${rows.length}`);
      }
      rows.forEach((row, k) => {
        const got = fresh[k];
        if (row.id !== got.id) {
          throw new Violation(
            10,
            `pulled event ${
              p.checkedPulled + k
            } is ${got.id}, the outbox's is ${row.id} (commit order)`,
          );
        }
        const stored = JSON.parse(row.payload);
        const { id: _id, ...rest } = got.event;
        if (JSON.stringify(canonical(rest)) !== JSON.stringify(canonical(stored))) {
          throw new Violation(10, `pulled event ${got.id} differs from its stored payload`);
        }
        if (findIn(JSON.stringify(got.event), secrets).length > 0) {
          throw new Violation(10, `pulled event ${got.id} carries a secret`);
        }
      });
      p.checkedPulled = p.pulled.length;
    }
  }
}

/** A JSON value with its keys sorted (for a comparison that ignores key order). */
function canonical(v: any): any {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]));
  }
  return v;
}
