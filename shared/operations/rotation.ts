/**
 * Key rotation: every ciphertext at rest that is not under the current (first) key of
 * `MP_TOKEN_KEYS` is decrypted with the ring and re-encrypted with the current key, page by
 * page. Each page is written in one statement that replaces a value only while it still holds
 * the ciphertext that was read (compare-and-swap), so a refresh, connect or revoke landing
 * meanwhile wins. The plaintext is unchanged, so `mp_token_version` is not touched: refresh
 * saves are fenced by version and lease, never by ciphertext, and run safely alongside.
 */
import type { Context } from "../platform/context.ts";
import {
  DecryptError,
  decryptSecret,
  encryptSecret,
  logDecryptFailure,
  type SecretField,
} from "../platform/crypto.ts";
import { pgArray, type Sql } from "../platform/db.ts";
import type { Logger } from "../platform/log.ts";

/** One encrypted column: where it lives, its row key, and the account id its AAD names. */
interface Target {
  db: "admin" | "backend";
  table: string;
  key: string;
  keyType: "uuid" | "text";
  account: string;
  column: string;
  field: SecretField;
}

/** Every column holding ciphertext (the refresh escrow only where its migration ran). */
const TARGETS: Target[] = [
  {
    db: "admin",
    table: "nv_accounts",
    key: "id",
    keyType: "uuid",
    account: "id",
    column: "mp_access_token_encrypted",
    field: "access_token",
  },
  {
    db: "admin",
    table: "nv_accounts",
    key: "id",
    keyType: "uuid",
    account: "id",
    column: "mp_refresh_token",
    field: "refresh_token",
  },
  {
    db: "admin",
    table: "mp_oauth_states",
    key: "state_hash",
    keyType: "text",
    account: "account_id",
    column: "code_verifier_encrypted",
    field: "code_verifier",
  },
  {
    db: "backend",
    table: "mp_refresh_escrow",
    key: "account_id",
    keyType: "uuid",
    account: "account_id",
    column: "access_token_encrypted",
    field: "access_token",
  },
  {
    db: "backend",
    table: "mp_refresh_escrow",
    key: "account_id",
    keyType: "uuid",
    account: "account_id",
    column: "refresh_token_encrypted",
    field: "refresh_token",
  },
];

/** What a rotation did for one column. */
export interface ColumnRotation {
  column: string;
  rotated: number;
  /** Values that changed between the read and the write (the newer value was kept). */
  changed_meanwhile: number;
  failed: number;
  /** Values still not under the current key after the run. */
  remaining: number;
}

/** What a rotation did. */
export interface RotationSummary {
  key_id: string;
  rotated: number;
  changed_meanwhile: number;
  failed: number;
  remaining: number;
  columns: ColumnRotation[];
  seconds: number;
}

function run<T>(ctx: Context, t: Target, work: (sql: Sql) => Promise<T>): Promise<T> {
  return t.db === "admin" ? ctx.admin(work) : ctx.backend(work);
}

async function exists(ctx: Context, t: Target): Promise<boolean> {
  const [row] = await run(
    ctx,
    t,
    (sql) => sql<{ ok: boolean }[]>`select to_regclass(${`public.${t.table}`}) is not null as ok`,
  );
  return row.ok;
}

/** Values of `t` not under key `keyId`. */
async function countStale(ctx: Context, t: Target, keyId: string): Promise<number> {
  const [row] = await run(
    ctx,
    t,
    (sql) =>
      sql<{ n: number }[]>`select count(*)::int as n from ${sql(t.table)}
      where ${sql(t.column)} is not null
        and not starts_with(${sql(t.column)}, ${`v1:${keyId}:`})`,
  );
  return row.n;
}

/** Raised when values labelled with the current key id do not decrypt with that key. */
export class KeyMismatchError extends Error {
  constructor(readonly keyId: string, readonly column: string) {
    super(
      `values labelled key ${keyId} in ${column} do not decrypt with key ${keyId} of ` +
        `MP_TOKEN_KEYS: that id was reused for other key material; put the original key back`,
    );
    this.name = "KeyMismatchError";
  }
}

/** Values sampled per column to prove the current key is the one that wrote them. */
const KEY_CHECK_SAMPLE = 20;

/**
 * Proves that the current key really is the key its id labels: a sample of the values
 * labelled with its id in every column must decrypt with it. Throws KeyMismatchError if not.
 */
export async function verifyCurrentKey(ctx: Context): Promise<void> {
  const ring = await ctx.keys();
  const prefix = `v1:${ring.current.id}:`;
  for (const t of TARGETS) {
    if (!(await exists(ctx, t))) continue;
    const rows = await run(
      ctx,
      t,
      (sql) =>
        sql<{ account: string; value: string }[]>`
          select ${sql(t.account)}::text as account, ${sql(t.column)} as value
            from ${sql(t.table)}
           where starts_with(${sql(t.column)}, ${prefix}) limit ${KEY_CHECK_SAMPLE}`,
    );
    for (const r of rows) {
      try {
        await decryptSecret(ring, r.account, t.field, r.value);
      } catch (err) {
        if (err instanceof DecryptError) throw new KeyMismatchError(ring.current.id, t.column);
        throw err;
      }
    }
  }
}

interface StaleRow {
  key: string;
  account: string;
  value: string;
}

/** Re-encrypts every value of one column; `onProgress` gets the values handled so far. */
async function rotateColumn(
  ctx: Context,
  log: Logger,
  t: Target,
  batchSize: number,
  onProgress: (n: number) => void,
): Promise<Omit<ColumnRotation, "remaining">> {
  const ring = await ctx.keys();
  const prefix = `v1:${ring.current.id}:`;
  const out = { column: `${t.table}.${t.column}`, rotated: 0, changed_meanwhile: 0, failed: 0 };
  let after: string | null = null;
  for (;;) {
    const page: StaleRow[] = await run(ctx, t, (sql) =>
      sql<StaleRow[]>`
        select ${sql(t.key)}::text as key, ${sql(t.account)}::text as account,
               ${sql(t.column)} as value
          from ${sql(t.table)}
         where ${sql(t.column)} is not null and not starts_with(${sql(t.column)}, ${prefix})
           ${after === null ? sql`` : sql`and ${sql(t.key)} > ${after}`}
         order by ${sql(t.key)} limit ${batchSize}`);
    if (page.length === 0) break;
    const keys: string[] = [];
    const olds: string[] = [];
    const news: string[] = [];
    await Promise.all(page.map(async (r) => {
      try {
        const plain = await decryptSecret(ring, r.account, t.field, r.value);
        const fresh = await encryptSecret(ring, r.account, t.field, plain);
        keys.push(r.key);
        olds.push(r.value);
        news.push(fresh);
      } catch (err) {
        if (!(err instanceof DecryptError)) throw err;
        logDecryptFailure(log, r.account, t.field, { table: t.table });
        out.failed++;
      }
    }));
    const written = keys.length === 0 ? [] : await run(ctx, t, (sql) => {
      const list = pgArray(keys);
      const ids = t.keyType === "uuid" ? sql`${list}::uuid[]` : sql`${list}::text[]`;
      return sql`
        update ${sql(t.table)} as t set ${sql(t.column)} = x.new
          from unnest(${ids}, ${pgArray(olds)}::text[], ${pgArray(news)}::text[])
               as x(key, old, new)
         where t.${sql(t.key)} = any(${ids}) and t.${sql(t.key)} = x.key
           and t.${sql(t.column)} = x.old
        returning 1`;
    });
    out.rotated += written.length;
    out.changed_meanwhile += keys.length - written.length;
    onProgress(page.length);
    if (page.length < batchSize) break;
    after = page[page.length - 1].key;
  }
  return out;
}

/**
 * Re-encrypts every ciphertext not under the current key, in batches; resumable (a rerun
 * only sees what is left). `onProgress` gets the values handled so far and the total.
 */
export async function rotateKeys(
  ctx: Context,
  log: Logger,
  opts: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<RotationSummary> {
  const started = performance.now();
  const ring = await ctx.keys();
  await verifyCurrentKey(ctx);
  const targets: Target[] = [];
  for (const t of TARGETS) if (await exists(ctx, t)) targets.push(t);
  let total = 0;
  for (const t of targets) total += await countStale(ctx, t, ring.current.id);
  let done = 0;
  const columns: ColumnRotation[] = [];
  for (const t of targets) {
    const r = await rotateColumn(ctx, log, t, opts.batchSize ?? 1000, (n) => {
      done += n;
      opts.onProgress?.(done, Math.max(total, done));
    });
    columns.push({ ...r, remaining: await countStale(ctx, t, ring.current.id) });
  }
  const sum = (k: "rotated" | "changed_meanwhile" | "failed" | "remaining") =>
    columns.reduce((a, c) => a + c[k], 0);
  return {
    key_id: ring.current.id,
    rotated: sum("rotated"),
    changed_meanwhile: sum("changed_meanwhile"),
    failed: sum("failed"),
    remaining: sum("remaining"),
    columns,
    seconds: Number(((performance.now() - started) / 1000).toFixed(2)),
  };
}
