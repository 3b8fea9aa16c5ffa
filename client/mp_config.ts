/**
 * The checkout side: a typed `getMpConfig(supabase, clientId)` over supabase-js
 * `functions.invoke`, for the services that charge with a seller's MercadoPago credentials.
 */
import type { SupabaseClient } from "@supabase/supabase-js";

import type { MpConfig } from "../shared/checkout/get_config.ts";

/** The credentials checkout charges with (get-mp-config's answer; one type for both sides). */
export type { MpConfig };

/** get-mp-config answered with an error (docs/contract.md code, HTTP status). */
export class MpConfigError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = "MpConfigError";
  }
}

/**
 * Fetches a client's MercadoPago credentials. `supabase` must be created with a project
 * secret (or service-role) key; throws `MpConfigError` (e.g. 404 `mp_not_connected`, or
 * `mp_reauth_required` once MercadoPago confirmed the token dead).
 */
export async function getMpConfig(supabase: SupabaseClient, clientId: string): Promise<MpConfig> {
  return await invoke(supabase, { client_id: clientId });
}

/**
 * Reports that MercadoPago rejected (401) the token of version `tokenVersion` that
 * get-mp-config gave, and returns what to use instead (get-mp-config step 4): a newer token,
 * the same one when MercadoPago still accepts it, or `MpConfigError` 404 `mp_reauth_required`.
 */
export async function reportRejectedToken(
  supabase: SupabaseClient,
  clientId: string,
  tokenVersion: number,
): Promise<MpConfig> {
  return await invoke(supabase, { client_id: clientId, rejected_token_version: tokenVersion });
}

/**
 * Runs `charge` with the client's credentials; when it answers 401 from MercadoPago
 * (`isRejected`), reports that token once and runs `charge` again with the answer. A second
 * rejection is returned as it is (no loop): the report already told the platform.
 */
export async function withMpConfig<T>(
  supabase: SupabaseClient,
  clientId: string,
  charge: (config: MpConfig) => Promise<T>,
  isRejected: (result: T) => boolean,
): Promise<T> {
  const config = await getMpConfig(supabase, clientId);
  const first = await charge(config);
  // A cache row written before versions existed has none to report.
  if (!isRejected(first) || config.token_version === null) return first;
  return await charge(await reportRejectedToken(supabase, clientId, config.token_version));
}

/** One get-mp-config call with `body`, its error turned into `MpConfigError`. */
async function invoke(supabase: SupabaseClient, body: Record<string, unknown>): Promise<MpConfig> {
  const { data, error } = await supabase.functions.invoke<MpConfig>("get-mp-config", { body });
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
