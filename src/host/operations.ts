/**
 * Asynchronous operations in the manner of Incus: a long action returns at
 * once with an operation id; clients poll it or wait on it. Every state
 * change is written to the store, so `GET /1.0/operations/<id>` survives a
 * daemon restart (an operation the old daemon left running is failed with
 * "daemon restarted").
 */
import { randomUUID } from 'node:crypto';
import { toHangarError, HangarError } from '../common/errors.js';
import type { Operation } from './api/schemas.js';
import type { Store } from './store.js';
import type { Logger } from '../common/log.js';

export const OPERATION_RETENTION_MS = 7 * 24 * 3600 * 1000;
/** How often a running daemon forgets operations older than the retention. */
export const OPERATION_PRUNE_INTERVAL_MS = 3600 * 1000;

export interface Progress {
  stage: string;
  percent?: number;
}

export type ReportProgress = (p: Progress) => void;

export class OperationManager {
  /** Waiters for operations of this daemon that have not finished. */
  private readonly done = new Map<string, { promise: Promise<void>; resolve: () => void }>();

  private pruneTimer: NodeJS.Timeout | undefined;

  constructor(private readonly store: Store, private readonly log?: Logger) {}

  /** Marks operations left running by an earlier daemon as failed; call once at start. */
  recover(): number {
    this.prune();
    return this.store.failRunningOperations('daemon restarted', new Date().toISOString());
  }

  /**
   * Forgets finished operations older than `retentionMs`. Finished operations are kept a
   * week by default: long enough to look back, short enough not to pile up. Returns how many.
   */
  prune(retentionMs = OPERATION_RETENTION_MS, now = Date.now()): number {
    const n = this.store.pruneOperations(new Date(now - retentionMs).toISOString());
    if (n > 0) this.log?.debug({ count: n }, 'pruned old operations');
    return n;
  }

  /** Prunes every `intervalMs` while the daemon runs (a daemon that runs for months must not pile them up). */
  startPruning(intervalMs = OPERATION_PRUNE_INTERVAL_MS, retentionMs = OPERATION_RETENTION_MS): void {
    this.stopPruning();
    this.pruneTimer = setInterval(() => {
      try { this.prune(retentionMs); } catch (e) { this.log?.warn({ err: String(e) }, 'could not prune operations'); }
    }, intervalMs);
    this.pruneTimer.unref();
  }

  stopPruning(): void {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.pruneTimer = undefined;
  }

  /**
   * Records a new running operation and runs `work` in the background.
   * The returned Operation is the state right after creation.
   */
  run(description: string, vms: string[], work: (progress: ReportProgress) => Promise<unknown>): Operation {
    const now = new Date().toISOString();
    const op: Operation = { id: randomUUID(), description, status: 'running', resources: { vms }, createdAt: now, updatedAt: now };
    this.store.insertOperation(op);
    let resolve!: () => void;
    const promise = new Promise<void>((r) => { resolve = r; });
    this.done.set(op.id, { promise, resolve });

    const report: ReportProgress = (p) => {
      const cur = this.store.getOperation(op.id);
      if (!cur || cur.status !== 'running') return;
      const progress: Progress = { stage: p.stage };
      if (p.percent !== undefined) progress.percent = Math.max(0, Math.min(100, Math.round(p.percent * 10) / 10));
      cur.progress = progress;
      cur.updatedAt = new Date().toISOString();
      this.store.updateOperation(cur);
    };

    // Start on the next tick so the caller can answer 202 before any work happens.
    setImmediate(() => {
      void (async () => {
        let final: Operation;
        try {
          const result = await work(report);
          final = { ...(this.store.getOperation(op.id) ?? op), status: 'success', updatedAt: new Date().toISOString() };
          if (final.progress) final.progress = { stage: 'done', percent: 100 };
          if (result !== undefined) final.result = result;
        } catch (e) {
          const err = toHangarError(e);
          this.log?.warn({ op: op.id, description, code: err.code, err: err.message }, 'operation failed');
          final = { ...(this.store.getOperation(op.id) ?? op), status: 'failure', updatedAt: new Date().toISOString(), error: { code: err.code, message: err.message } };
        }
        try { this.store.updateOperation(final); } catch (e) { this.log?.error({ err: String(e) }, 'could not record operation result'); }
        this.done.get(op.id)?.resolve();
        this.done.delete(op.id);
      })();
    });
    return op;
  }

  get(id: string): Operation {
    const op = this.store.getOperation(id);
    if (!op) throw new HangarError('NOT_FOUND', `no operation ${id}`, { id });
    return op;
  }

  list(limit?: number): Operation[] {
    return this.store.listOperations(limit);
  }

  /** Resolves with the operation once it is finished or timeoutMs has passed (then still running). */
  async wait(id: string, timeoutMs: number): Promise<Operation> {
    const op = this.get(id);
    const w = this.done.get(id);
    if (op.status !== 'running' || !w) return op;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([w.promise, new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    clearTimeout(timer);
    return this.get(id);
  }

  /** Waits for every operation of this daemon to finish (graceful shutdown), at most timeoutMs. */
  async drain(timeoutMs: number): Promise<void> {
    const all = [...this.done.values()].map((w) => w.promise);
    if (all.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(all), new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    clearTimeout(timer);
  }
}
