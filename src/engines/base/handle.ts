/**
 * What every engine's VmHandle shares: exit listeners that fire once, the
 * exit promise, detaching (the daemon lets go, the VM keeps running),
 * watching a pid we are not the parent of through /proc, and a kill that
 * never signals a pid that is no longer this VM's.
 *
 * An engine's handle adds its control channel (QMP, hangar-vmm's API) and
 * says how an exit maps to a VmExit: `childExited` for a process Node
 * spawned (it reports code and signal), `processGone` for one seen vanish
 * from /proc (adopted after a daemon restart).
 */
import type { ChildProcess } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { HangarError, toHangarError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { EngineName, VmExit, VmHandle, VmStats } from '../engine.js';
import { isOurs, type VmProcessIdentity } from './identity.js';
import { processCpuSeconds, processRssBytes } from './procfs.js';
import type { VmSandbox } from '../sandbox/index.js';

/** How often /proc/<pid> is looked at while an exit is expected. */
export const PID_POLL_MS = 200;

export abstract class BaseVmHandle implements VmHandle {
  abstract readonly engine: EngineName;
  /** Set once the process has ended. */
  protected exitInfo: VmExit | null = null;
  protected detached = false;
  /** The daemon asked for the kill (so the exit is 'killed', not a crash). */
  protected killRequested = false;
  private listeners: Array<(e: VmExit) => void> = [];
  private readonly exited: Promise<VmExit>;
  private resolveExited!: (e: VmExit) => void;
  private pidTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly pid: number,
    protected readonly identity: VmProcessIdentity,
    protected readonly log: Logger,
    /** Present when this daemon spawned the process: Node reports its exit status. */
    protected readonly child: ChildProcess | null,
    /** The process's confinement: it explains OOM kills and is cleaned up at exit. */
    protected readonly sandbox: VmSandbox | null = null,
  ) {
    this.exited = new Promise((r) => (this.resolveExited = r));
  }

  /** Subclasses call this at the end of their constructor, once their own fields exist. */
  protected watchChild(): void {
    const c = this.child;
    if (!c) return;
    if (c.exitCode !== null || c.signalCode !== null) this.childExited(c.exitCode, c.signalCode);
    else c.once('exit', (code, signal) => this.childExited(code, signal));
  }

  /** A process this daemon spawned has ended with this status. */
  protected abstract childExited(code: number | null, signal: NodeJS.Signals | null): void;
  /** A process this daemon did not spawn is no longer there (seen through /proc). */
  protected abstract processGone(): void;
  /** Drops the control connection (detach, exit). */
  protected abstract closeControl(): void;

  abstract pause(): Promise<void>;
  abstract resume(): Promise<void>;
  abstract requestShutdown(): Promise<void>;
  abstract queryState(): Promise<'running' | 'paused'>;
  abstract openConsole(): Promise<Duplex>;

  /** Resolves once the process has ended, with its exit. */
  whenExited(): Promise<VmExit> {
    return this.exited;
  }

  /** Records the exit once and tells the listeners (none after detach()). */
  protected finish(raw: VmExit): void {
    if (this.exitInfo) return;
    this.stopWatching();
    // A kill the cgroup blames on its memory limit is a crash with that reason.
    const exit = this.sandbox?.explain(raw, this.killRequested) ?? raw;
    // A detached handle belongs to a daemon going away: the next one cleans up.
    if (!this.detached) this.sandbox?.cleanup();
    this.exitInfo = exit;
    this.closeControl();
    this.resolveExited(exit);
    if (this.detached) return;
    for (const l of this.listeners.splice(0)) {
      try {
        l(exit);
      } catch (e) {
        this.log.error({ err: String(e) }, 'exit listener threw');
      }
    }
  }

  /**
   * Looks at /proc/<pid> every `intervalMs` and calls processGone() once it
   * is gone (or no longer this VM's). A child of ours is left to Node's 'exit' (it stays a zombie
   * until reaped, and the exit carries its status). `unref`: the poll alone
   * does not keep the daemon alive (a safety net, not awaited work).
   */
  protected watchPid(intervalMs: number, unref = false): void {
    this.stopWatching();
    const t = setInterval(() => {
      if (this.detached || this.exitInfo) return this.stopWatching();
      // Gone, or its pid already handed to another program: either way this VM's process has ended.
      if (this.child || isOurs(this.pid, this.identity)) return;
      this.processGone();
    }, intervalMs);
    if (unref) t.unref();
    this.pidTimer = t;
  }

  protected stopWatching(): void {
    if (this.pidTimer) clearInterval(this.pidTimer);
    this.pidTimer = null;
  }

  /** Throws INVALID_STATE once the process has ended or the handle was detached. */
  protected usable(what: string): void {
    if (this.exitInfo) throw new HangarError('INVALID_STATE', `${what}: the VM process has exited (${this.exitInfo.reason})`);
    if (this.detached) throw new HangarError('INVALID_STATE', `${what}: the handle was detached`);
  }

  async kill(): Promise<void> {
    if (this.exitInfo) return;
    this.usable('kill');
    this.killRequested = true;
    const done = this.exited;
    // A process we did not spawn may have ended unnoticed and its pid been
    // reused: it is signalled only while it is still this VM's.
    if (this.child || isOurs(this.pid, this.identity)) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw toHangarError(e, 'ENGINE_FAILED');
      }
    }
    if (!this.child) this.watchPid(PID_POLL_MS);
    await done;
  }

  async stats(): Promise<VmStats> {
    const state = await this.queryState();
    return { pid: this.pid, rssBytes: processRssBytes(this.pid), cpuSeconds: processCpuSeconds(this.pid), state };
  }

  onExit(listener: (exit: VmExit) => void): void {
    if (this.detached) return;
    const e = this.exitInfo;
    if (e) queueMicrotask(() => listener(e));
    else this.listeners.push(listener);
  }

  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.listeners = [];
    this.stopWatching();
    this.closeControl();
    this.child?.removeAllListeners('exit');
    // From now on the VM lives on its own: it must not keep this process running.
    this.child?.unref();
  }
}
