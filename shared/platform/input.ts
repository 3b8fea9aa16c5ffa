/**
 * Input checked against a valibot schema in the contract's words: a failure is a `DomainError`
 * `invalid_request` naming the first bad field (docs/contract.md, "Errors"). The edge checks every
 * function's declared `input:` with it; domain code may check what it reads itself (a webhook's body).
 */
import * as v from "valibot";
import { DomainError } from "./errors.ts";

/** Validates `input` against `schema`; `invalid_request` naming the first bad field. */
export function validate<S extends v.GenericSchema>(schema: S, input: unknown): v.InferOutput<S> {
  const result = v.safeParse(schema, input);
  if (result.success) return result.output;
  const issue = result.issues[0];
  const path = v.getDotPath(issue);
  const message = issue.type === "strict_object" && issue.input !== undefined
    ? `unknown field ${path ?? ""}`.trim()
    : `${path ? `${path}: ` : ""}${issue.message}`;
  throw new DomainError("invalid_request", message);
}
