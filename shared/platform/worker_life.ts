/**
 * The isolate's life as the edge runtime bounds it: a wall clock that starts when the
 * isolate boots (this module is evaluated with the function's first import), and the
 * `beforeunload` event the runtime dispatches before it terminates the isolate (wall clock,
 * CPU or memory). Long runs (mp-refresh) ask here whether they may still start work that
 * must finish before the isolate goes away.
 */

/** When this isolate booted (epoch ms): its wall clock runs from here. */
const isolateStartedAt = Date.now();

let unloadReason: string | undefined;

/** Why the runtime told this isolate to shut down, or undefined while it has not. */
export function shutdownReason(): string | undefined {
  return unloadReason;
}

if (typeof globalThis.addEventListener === "function") {
  globalThis.addEventListener("beforeunload", (event: Event) => {
    const detail = (event as CustomEvent<{ reason?: string } | undefined>).detail;
    unloadReason ??= typeof detail?.reason === "string" ? detail.reason : "beforeunload";
  });
}

/**
 * The last moment (epoch ms) at which work needing `reserveMs` to finish may start, so that
 * it ends before the isolate's wall clock (`wallClockMs` from boot) runs out.
 */
export function latestStart(wallClockMs: number, reserveMs: number, bootedAt = isolateStartedAt) {
  return bootedAt + wallClockMs - reserveMs;
}
