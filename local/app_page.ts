/**
 * The small page at APP_RETURN_URL where a person sees the local accounts and connects or
 * revokes them through the sandbox. (Filled in with the OAuth issue.)
 */
import type { Fetch } from "./gateway.ts";

/** What the page needs: where the functions are and the key it calls them with. */
export interface AppPageOptions {
  functionsUrl: string;
  serverKey: string;
  adminDbUrl: string;
}

/** The page's handler, mounted by the gateway under `/app`. */
export function createAppPage(_opts: AppPageOptions): Fetch & { close(): Promise<void> } {
  const page = () =>
    new Response("<!doctype html><title>MP accounts</title><p>Not built yet.</p>", {
      headers: { "content-type": "text/html; charset=utf-8" },
    });
  return Object.assign(page, { close: () => Promise.resolve() });
}
