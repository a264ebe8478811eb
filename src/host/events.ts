/**
 * Lifecycle events: stored (so clients can catch up with ?since=seq) and
 * broadcast to live subscribers (the /1.0/events WebSocket). An event
 * emitted inside a store transaction reaches subscribers only once that
 * transaction has committed: nobody hears of a change that was rolled back.
 */
import type { LifecycleEvent } from './api/schemas.js';
import type { Store, EventType } from './store.js';

export type EventListener = (e: LifecycleEvent) => void;

export class EventBus {
  private readonly listeners = new Set<EventListener>();
  constructor(private readonly store: Store) {}

  emit(vm: string, type: EventType, reason?: string): LifecycleEvent {
    const e = this.store.insertEvent(new Date().toISOString(), vm, type, reason);
    this.store.afterCommit(() => this.publish(e));
    return e;
  }

  private publish(e: LifecycleEvent): void {
    for (const l of [...this.listeners]) {
      try { l(e); } catch { /* one broken subscriber must not stop the others */ }
    }
  }

  list(opts: { since?: number; vm?: string; limit?: number } = {}): LifecycleEvent[] {
    return this.store.listEvents(opts);
  }

  /** Returns the function that unsubscribes. */
  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}
