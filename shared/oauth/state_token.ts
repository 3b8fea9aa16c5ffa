/**
 * The OAuth state and PKCE values themselves: 256-bit random tokens, the S256 challenge of a
 * verifier, and the SHA-256 under which a state is stored (the state itself never is).
 */

const encoder = new TextEncoder();

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** 32 random bytes (256 bits) as base64url: used for states and PKCE verifiers alike. */
export function randomToken(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)). */
export async function pkceChallenge(verifier: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(verifier))));
}

/** The stored form of a state: hex SHA-256 (the state itself is never stored). */
export async function hashState(state: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(state)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** True when `state` has the shape `randomToken()` produces (cheap check before any query). */
export function isWellFormedState(state: string | null): state is string {
  return state !== null && /^[A-Za-z0-9_-]{22,128}$/.test(state);
}
