/**
 * The floor of the checkout design, for `bench/checkout.ts`: a bare `deno serve` module that
 * imports only the database driver and answers a get-mp-config request with the same
 * primary-key SELECT, the same driver and the same pool size — no key check, no validation,
 * no logging. Run: `deno serve -A --port <n> bench/floor.ts` with `BACKEND_DB_URL` set.
 */
import postgres from "postgres";

/**
 * Pool size: the functions' own (`FUNCTION_POOL_MAX` in shared/platform/db.ts), which
 * `bench/checkout.ts` passes as `FLOOR_POOL_SIZE` so the floor imports nothing but the driver.
 */
const poolSize = Number(Deno.env.get("FLOOR_POOL_SIZE") ?? 3);

const sql = postgres(Deno.env.get("BACKEND_DB_URL") ?? "", {
  max: poolSize,
  onnotice: () => {},
});

export default {
  async fetch(req: Request): Promise<Response> {
    const { client_id } = await req.json();
    const [row] = await sql`
      select mp_access_token, mp_public_key, mp_token_version from clients where id = ${client_id}`;
    if (!row) return Response.json({ error: { code: "client_not_found" } }, { status: 404 });
    return Response.json({
      client_id,
      access_token: row.mp_access_token,
      public_key: row.mp_public_key,
      source: "fast_path",
      token_version: Number(row.mp_token_version),
    });
  },
} satisfies Deno.ServeDefaultExport;
