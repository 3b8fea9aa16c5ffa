/**
 * The checkout side: a typed `getMpConfig(supabase, clientId)` over supabase-js
 * `functions.invoke`, for the services that charge with a seller's MercadoPago credentials.
 */
import type { SupabaseClient } from "@supabase/supabase-js";

/** The credentials checkout charges with. */
export interface MpConfig {
  client_id: string;
  access_token: string;
  public_key: string | null;
  source: "fast_path" | "fallback";
  token_version: number;
}

/** get-mp-config answered with an error (docs/contract.md code, HTTP status). */
export class MpConfigError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = "MpConfigError";
  }
}

/**
 * Fetches a client's MercadoPago credentials. `supabase` must be created with a project
 * secret (or service-role) key; throws `MpConfigError` (e.g. 404 `mp_not_connected`).
 */
export async function getMpConfig(supabase: SupabaseClient, clientId: string): Promise<MpConfig> {
  const { data, error } = await supabase.functions.invoke<MpConfig>("get-mp-config", {
    body: { client_id: clientId },
  });
  if (!error) return data!;
  const res = (error as { context?: Response }).context;
  if (res instanceof Response) {
    const body = await res.json().catch(() => undefined);
    throw new MpConfigError(
      res.status,
      body?.error?.code ?? "internal",
      body?.error?.message ?? error.message,
    );
  }
  throw new MpConfigError(0, "unreachable", error.message);
}
