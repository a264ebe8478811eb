/**
 * Alerts: conditions the sampler observes each tick (a busy VM, guest
 * memory pressure, a full data directory, an overcommitted host) become
 * alerts once they have held for their window, and clear once they have
 * been false for the same window, so a value hovering at the threshold
 * does not flap. Raised and cleared alerts are stored (GET /1.0/alerts)
 * and told as events of type `alert` on the events stream.
 */
import type Database from 'better-sqlite3';
import type { Store } from '../store.js';
import type { EventBus } from '../events.js';
import type { Alert, AlertKind } from './schemas.js';

/** One condition as seen in one tick. */
export interface Observation {
  vm: string | null;
  kind: AlertKind;
  /** True while the condition holds. */
  firing: boolean;
  /** Seconds it must hold (and then not hold) before the alert is raised (cleared). */
  forSeconds: number;
  /** What the alert says, written while it fires. */
  message: string;
}

/** Cleared alerts kept (the newest); active ones are always kept. */
export const ALERTS_KEEP = 1000;
/** Recent cleared alerts GET /1.0/alerts shows besides the active ones. */
export const ALERTS_RECENT = 100;

interface AlertRow { id: number; vm: string | null; kind: string; message: string; raised_at: number; cleared_at: number | null }
const fromRow = (r: AlertRow): Alert => ({ id: r.id, vm: r.vm, kind: r.kind as AlertKind, message: r.message, raisedAt: r.raised_at, clearedAt: r.cleared_at });
const keyOf = (vm: string | null, kind: AlertKind): string => `${kind}\u0000${vm ?? ''}`;

export class AlertManager {
  private readonly db: Database.Database;
  /** Since when each condition has held without an alert yet (ms). */
  private readonly pendingRaise = new Map<string, number>();
  /** Since when each raised alert's condition has not held (ms). */
  private readonly pendingClear = new Map<string, number>();
  /** Active alerts by condition. */
  private readonly active = new Map<string, Alert>();

  constructor(private readonly store: Store, private readonly events: EventBus) {
    this.db = store.sqlite;
    for (const r of this.db.prepare('SELECT * FROM alerts WHERE cleared_at IS NULL ORDER BY id').all() as AlertRow[]) {
      const a = fromRow(r);
      this.active.set(keyOf(a.vm, a.kind), a);
    }
  }

  /**
   * Feeds one tick's observations. Conditions not observed at all (a VM
   * that stopped or was deleted) clear at once: nothing is left to watch.
   */
  observe(now: number, seen: Observation[]): void {
    const seenKeys = new Set<string>();
    for (const o of seen) {
      const key = keyOf(o.vm, o.kind);
      seenKeys.add(key);
      const alert = this.active.get(key);
      if (o.firing) {
        this.pendingClear.delete(key);
        if (alert) continue;
        const since = this.pendingRaise.get(key) ?? now;
        this.pendingRaise.set(key, since);
        if (now - since >= o.forSeconds * 1000) this.raise(now, o);
      } else {
        this.pendingRaise.delete(key);
        if (!alert) continue;
        const since = this.pendingClear.get(key) ?? now;
        this.pendingClear.set(key, since);
        if (now - since >= o.forSeconds * 1000) this.clear(now, key, alert, 'back to normal');
      }
    }
    for (const [key, alert] of [...this.active]) {
      if (!seenKeys.has(key)) this.clear(now, key, alert, alert.vm ? `VM ${alert.vm} no longer runs` : 'no longer observed');
    }
    for (const key of [...this.pendingRaise.keys()]) if (!seenKeys.has(key)) this.pendingRaise.delete(key);
  }

  private raise(now: number, o: Observation): void {
    const key = keyOf(o.vm, o.kind);
    this.store.transaction(() => {
      const id = Number(this.db.prepare('INSERT INTO alerts (vm, kind, message, raised_at) VALUES (?, ?, ?, ?)').run(o.vm, o.kind, o.message, now).lastInsertRowid);
      const alert: Alert = { id, vm: o.vm, kind: o.kind, message: o.message, raisedAt: now, clearedAt: null };
      this.active.set(key, alert);
      this.pendingRaise.delete(key);
      this.events.emit(o.vm ?? '', 'alert', `raised ${o.kind} (alert ${id}): ${o.message}`);
    });
  }

  private clear(now: number, key: string, alert: Alert, why: string): void {
    this.store.transaction(() => {
      this.db.prepare('UPDATE alerts SET cleared_at = ? WHERE id = ?').run(now, alert.id);
      this.active.delete(key);
      this.pendingClear.delete(key);
      this.events.emit(alert.vm ?? '', 'alert', `cleared ${alert.kind} (alert ${alert.id}): ${why}`);
    });
  }

  /** Active alerts, then the most recent cleared ones, newest first. */
  list(): Alert[] {
    const open = (this.db.prepare('SELECT * FROM alerts WHERE cleared_at IS NULL ORDER BY id DESC').all() as AlertRow[]).map(fromRow);
    const recent = (this.db.prepare(`SELECT * FROM alerts WHERE cleared_at IS NOT NULL ORDER BY id DESC LIMIT ${ALERTS_RECENT}`).all() as AlertRow[]).map(fromRow);
    return [...open, ...recent];
  }

  activeAlerts(): Alert[] {
    return [...this.active.values()].sort((a, b) => b.id - a.id);
  }

  /** Drops cleared alerts beyond the newest ALERTS_KEEP (one bounded statement). */
  prune(): number {
    return this.db.prepare(`DELETE FROM alerts WHERE cleared_at IS NOT NULL AND id < (SELECT id FROM alerts WHERE cleared_at IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ${ALERTS_KEEP - 1})`).run().changes;
  }
}
