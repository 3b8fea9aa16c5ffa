/**
 * Key rotation: every ciphertext at rest that is not under the current (first) key of
 * `MP_TOKEN_KEYS` is decrypted with the ring and re-encrypted with the current key, page by
 * page (keyset on the row key), every ciphertext column of a table in the same pass. Each page
 * is written in one statement that replaces each value only while it still holds the
 * ciphertext that was read (compare-and-swap, column by column), so a refresh, connect or
 * revoke landing meanwhile wins. The plaintext is unchanged, so `mp_token_version` is not
 * touched: refresh saves are fenced by version and lease, never by ciphertext, and run safely
 * alongside.
 *
 * Built for a million accounts: the crypto is the synchronous node:crypto path (no thread hop
 * per value), the next page is read while the current one is re-encrypted and written, two
 * page writes may be in flight, and memory holds only those pages.
 */
import { BoundedTasks, forEachPage } from "../platform/pipeline.ts";
import type { Context } from "../platform/context.ts";
import {
  DecryptError,
  decryptSecret,
  decryptSecretSync,
  encryptSecretSync,
  logDecryptFailure,
  type SecretField,
} from "../platform/crypto.ts";
import { pgArray, type Sql } from "../platform/db.ts";
import type { Logger } from "../platform/log.ts";

/** One encrypted column of a table and the field its AAD names. */
interface Column {
  column: string;
  field: SecretField;
}

/** A table holding ciphertext: where it lives, its row key, the account id its AAD names. */
interface Target {
  db: "admin" | "backend";
  table: string;
  key: string;
  keyType: "uuid" | "text";
  account: string;
  columns: Column[];
}

/** Every table and column holding ciphertext (the refresh escrow only where its migration ran). */
const TARGETS: Target[] = [
  {
    db: "admin",
    table: "nv_accounts",
    key: "id",
    keyType: "uuid",
    account: "id",
    columns: [
      { column: "mp_access_token_encrypted", field: "access_token" },
      { column: "mp_refresh_token", field: "refresh_token" },
    ],
  },
  {
    db: "admin",
    table: "mp_oauth_states",
    key: "state_hash",
    keyType: "text",
    account: "account_id",
    columns: [{ column: "code_verifier_encrypted", field: "code_verifier" }],
  },
  {
    db: "backend",
    table: "mp_refresh_escrow",
    key: "account_id",
    keyType: "uuid",
    account: "account_id",
    columns: [
      { column: "access_token_encrypted", field: "access_token" },
      { column: "refresh_token_encrypted", field: "refresh_token" },
    ],
  },
];

/** What a rotation did for one column. */
interface ColumnRotation {
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

/** `fragments` joined with commas, as one SQL fragment. */
// deno-lint-ignore no-explicit-any
function commas(sql: Sql, fragments: any[]): ReturnType<Sql> {
  return fragments.reduce((list, f) => sql`${list}, ${f}`);
}

/** Whether column `c` holds a value not under the key of `prefix`, as a SQL condition. */
function stale(sql: Sql, c: Column, prefix: string, alias?: string) {
  const col = alias ? sql`${sql(alias)}.${sql(c.column)}` : sql(c.column);
  return sql`(${col} is not null and not starts_with(${col}, ${prefix}))`;
}

/** Values of each column of `t` not under key `keyId`, in one scan. */
async function countStale(ctx: Context, t: Target, keyId: string): Promise<number[]> {
  const prefix = `v1:${keyId}:`;
  const [row] = await run(ctx, t, (sql) =>
    sql<Record<string, number>[]>`
      select ${
      commas(
        sql,
        t.columns.map((c, i) =>
          sql`count(*) filter (where ${stale(sql, c, prefix)})::int as ${sql(`n${i}`)}`
        ),
      )
    }
        from ${sql(t.table)}`);
  return t.columns.map((_, i) => row[`n${i}`]);
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
async function verifyCurrentKey(ctx: Context): Promise<void> {
  const ring = await ctx.keys();
  const prefix = `v1:${ring.current.id}:`;
  for (const t of TARGETS) {
    if (!(await exists(ctx, t))) continue;
    for (const c of t.columns) {
      const rows = await run(
        ctx,
        t,
        (sql) =>
          sql<{ account: string; value: string }[]>`
            select ${sql(t.account)}::text as account, ${sql(c.column)} as value
              from ${sql(t.table)}
             where starts_with(${sql(c.column)}, ${prefix}) limit ${KEY_CHECK_SAMPLE}`,
      );
      for (const r of rows) {
        try {
          await decryptSecret(ring, r.account, c.field, r.value);
        } catch (err) {
          if (err instanceof DecryptError) throw new KeyMismatchError(ring.current.id, c.column);
          throw err;
        }
      }
    }
  }
}

/** A row with a value to rotate: its key, account and each column's value (`v0`, `v1`, …). */
type StaleRow = { key: string; account: string } & Record<`v${number}`, string | null>;

/** Rows per page by default (each with up to two values to re-encrypt). */
export const ROTATION_BATCH = 5000;

/** Page writes of one table in flight at once, while the next page is read and re-encrypted. */
const WRITES_IN_FLIGHT = 2;

/**
 * Re-encrypts every stale value of one table, every column in the same pass; `onProgress`
 * gets the values handled by each page once it is written.
 */
async function rotateTable(
  ctx: Context,
  log: Logger,
  t: Target,
  batchSize: number,
  onProgress: (n: number) => void,
): Promise<Omit<ColumnRotation, "remaining">[]> {
  const ring = await ctx.keys();
  const prefix = `v1:${ring.current.id}:`;
  const out = t.columns.map((c) => ({
    column: `${t.table}.${c.column}`,
    rotated: 0,
    changed_meanwhile: 0,
    failed: 0,
  }));
  const read = (after: string | null) =>
    run(ctx, t, (sql) =>
      sql<StaleRow[]>`
        select ${sql(t.key)}::text as key, ${sql(t.account)}::text as account,
               ${commas(sql, t.columns.map((c, i) => sql`${sql(c.column)} as ${sql(`v${i}`)}`))}
          from ${sql(t.table)}
         where (${t.columns.map((c) => stale(sql, c, prefix)).reduce((x, y) => sql`${x} or ${y}`)})
           ${after === null ? sql`` : sql`and ${sql(t.key)} > ${after}`}
         order by ${sql(t.key)} limit ${batchSize}`);

  /** Decrypts and re-encrypts a page's stale values (synchronously); the write's arrays. */
  const reencrypt = (page: StaleRow[]) => {
    const keys: string[] = [];
    const olds: (string | null)[][] = t.columns.map(() => []);
    const news: (string | null)[][] = t.columns.map(() => []);
    const tried = t.columns.map(() => 0);
    let handled = 0;
    for (const r of page) {
      let any = false;
      const row = t.columns.map((c, i) => {
        const value = r[`v${i}`];
        if (value === null || value.startsWith(prefix)) return [null, null];
        handled++;
        try {
          const plain = decryptSecretSync(ring, r.account, c.field, value);
          tried[i]++;
          any = true;
          return [value, encryptSecretSync(ring, r.account, c.field, plain)];
        } catch (err) {
          if (!(err instanceof DecryptError)) throw err;
          logDecryptFailure(log, r.account, c.field, { table: t.table });
          out[i].failed++;
          return [null, null];
        }
      });
      if (!any) continue;
      keys.push(r.key);
      row.forEach(([o, n], i) => {
        olds[i].push(o);
        news[i].push(n);
      });
    }
    return { keys, olds, news, tried, handled };
  };

  /** Writes a page in one statement, each column swapped only while it holds what was read. */
  const write = async (b: ReturnType<typeof reencrypt>) => {
    const written = b.keys.length === 0 ? [] : await run(ctx, t, (sql) => {
      const list = pgArray(b.keys);
      const ids = t.keyType === "uuid" ? sql`${list}::uuid[]` : sql`${list}::text[]`;
      const arrays = t.columns.flatMap((_, i) => [
        sql`${pgArray(b.olds[i])}::text[]`,
        sql`${pgArray(b.news[i])}::text[]`,
      ]);
      const names = t.columns.flatMap((_, i) => [sql(`old${i}`), sql(`new${i}`)]);
      const col = (i: number) => sql(t.columns[i].column);
      return sql<Record<`done${number}`, boolean>[]>`
        update ${sql(t.table)} as t set ${
        commas(
          sql,
          t.columns.map((_, i) =>
            sql`${col(i)} = case when t.${col(i)} = x.${sql(`old${i}`)}
                                 then x.${sql(`new${i}`)} else t.${col(i)} end`
          ),
        )
      }
          from unnest(${ids}, ${commas(sql, arrays)}) as x(key, ${commas(sql, names)})
         where t.${sql(t.key)} = any(${ids}) and t.${sql(t.key)} = x.key
           and (${
        t.columns.map((_, i) => sql`t.${col(i)} = x.${sql(`old${i}`)}`)
          .reduce((x, y) => sql`${x} or ${y}`)
      })
        returning ${
        commas(
          sql,
          t.columns.map((_, i) =>
            sql`coalesce(t.${col(i)} = x.${sql(`new${i}`)}, false) as ${sql(`done${i}`)}`
          ),
        )
      }`;
    });
    t.columns.forEach((_, i) => {
      const rotated = written.filter((w) => w[`done${i}`]).length;
      out[i].rotated += rotated;
      out[i].changed_meanwhile += b.tried[i] - rotated;
    });
    onProgress(b.handled);
  };

  const writing = new BoundedTasks(WRITES_IN_FLIGHT);
  try {
    await forEachPage(
      (last: StaleRow | undefined) => read(last?.key ?? null),
      batchSize,
      (page) => page.length > 0 ? writing.add(write(reencrypt(page))) : Promise.resolve(),
    );
  } finally {
    await writing.finish().catch(() => {}); // writes in flight end before the error is rethrown
  }
  await writing.finish();
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
  const counts = await Promise.all(targets.map((t) => countStale(ctx, t, ring.current.id)));
  const total = counts.flat().reduce((a, n) => a + n, 0);
  let done = 0;
  const rotated: Omit<ColumnRotation, "remaining">[][] = [];
  for (const t of targets) {
    rotated.push(
      await rotateTable(ctx, log, t, opts.batchSize ?? ROTATION_BATCH, (n) => {
        done += n;
        opts.onProgress?.(done, Math.max(total, done));
      }),
    );
  }
  const remaining = await Promise.all(targets.map((t) => countStale(ctx, t, ring.current.id)));
  const columns: ColumnRotation[] = rotated.flatMap((cols, t) =>
    cols.map((c, i) => ({ ...c, remaining: remaining[t][i] }))
  );
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
