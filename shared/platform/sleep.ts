/** Waits `ms` milliseconds (the pauses between retries of a database write). */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
