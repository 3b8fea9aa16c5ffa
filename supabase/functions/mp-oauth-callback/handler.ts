import { notImplemented } from "../../../shared/http.ts";

/** mp-oauth-callback: filled in by a later issue; answers 501 until then. */
export const handler = notImplemented("mp-oauth-callback");
