import { notImplemented } from "../../../shared/http.ts";

/** mp-reconcile: filled in by a later issue; answers 501 until then. */
export const handler = notImplemented("mp-reconcile");
