/**
 * The state folder's lock (`local/state_lock.ts`): one stack per folder, a second refused in one
 * line naming the holder, and nothing left held once the holder is gone — even killed outright.
 */
import assert from "node:assert/strict";
import { acquireStateLock, assertStateDirFree, lockPid } from "../local/state_lock.ts";

const LOCK_MODULE = new URL("../local/state_lock.ts", import.meta.url).href;

Deno.test("state lock: a second holder is refused in one line naming the first; after release it is free", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const release = await acquireStateLock(dir, ".local/dev-26400");
    const refusal =
      `state folder .local/dev-26400 is in use by another local stack (pid ${Deno.pid}): stop it, or start this one with another STACK_PORT_BASE or STACK_STATE_DIR`;
    await assert.rejects(acquireStateLock(dir, ".local/dev-26400"), { message: refusal });
    await assert.rejects(assertStateDirFree(dir, ".local/dev-26400"), { message: refusal });
    await release();
    await assertStateDirFree(dir, ".local/dev-26400");
    const again = await acquireStateLock(dir, ".local/dev-26400");
    await again();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("state lock: a holder killed with SIGKILL leaves the folder free", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { acquireStateLock } from ${JSON.stringify(LOCK_MODULE)};
         await acquireStateLock(${JSON.stringify(dir)}, "held");
         console.log("held");
         setInterval(() => {}, 1000);`,
      ],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.equal(new TextDecoder().decode(value).trim(), "held");
    await assert.rejects(
      acquireStateLock(dir, "held"),
      new RegExp(`in use by another local stack \\(pid ${child.pid}\\)`),
    );
    child.kill("SIGKILL");
    assert.equal((await child.status).signal, "SIGKILL");
    reader.releaseLock();
    await child.stdout.cancel();
    const release = await acquireStateLock(dir, "held");
    await release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lockPid: a pid, or nothing for an empty or torn file", () => {
  assert.equal(lockPid("4242\n"), 4242);
  assert.equal(lockPid(""), undefined);
  assert.equal(lockPid("42x"), undefined);
  assert.equal(lockPid("0"), undefined);
});
