/**
 * One local stack per state folder: a stack holds an exclusive lock on `<folder>/stack.lock`
 * (an advisory file lock the kernel drops when its process ends, however it ends) and writes its
 * pid there; a second stack on the same folder is refused in one line before it touches anything.
 */

/** The lock file in a state folder. */
const LOCK_FILE = "stack.lock";

/** A live stack already holds the state folder. */
class StateDirInUse extends Error {
  constructor(shown: string, pid: number | undefined) {
    super(
      `state folder ${shown} is in use by another local stack${
        pid ? ` (pid ${pid})` : ""
      }: stop it, or start this one with another STACK_PORT_BASE or STACK_STATE_DIR`,
    );
    this.name = "StateDirInUse";
  }
}

/** The pid a lock file names, or undefined when it names none (being written, or released). */
export function lockPid(text: string): number | undefined {
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

async function readPid(path: string): Promise<number | undefined> {
  return lockPid(await Deno.readTextFile(path).catch(() => ""));
}

/**
 * Takes the state folder `dir` (absolute; created if missing) for this process, answering how to
 * give it back; throws `StateDirInUse` naming `shown` and the holder's pid when a live stack holds it.
 */
export async function acquireStateLock(dir: string, shown: string): Promise<() => Promise<void>> {
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/${LOCK_FILE}`;
  const file = await Deno.open(path, { read: true, write: true, create: true });
  if (!(await file.tryLock(true))) {
    file.close();
    throw new StateDirInUse(shown, await readPid(path));
  }
  await file.truncate(0);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    await file.truncate(0).catch(() => {});
    await file.unlock().catch(() => {});
    file.close();
  };
}

/**
 * Throws `StateDirInUse` when a live stack holds the state folder `dir` (absolute), without
 * keeping the lock: for a launcher that must not touch a running stack's files.
 */
export async function assertStateDirFree(dir: string, shown: string): Promise<void> {
  const path = `${dir}/${LOCK_FILE}`;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  try {
    if (!(await file.tryLock(true))) throw new StateDirInUse(shown, await readPid(path));
    await file.unlock();
  } finally {
    file.close();
  }
}
