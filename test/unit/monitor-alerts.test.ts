/**
 * Alert rules over a real store and event bus: a condition raises an alert
 * only after holding for its window, clears only after being false for the
 * window, each change is stored and told as an `alert` event, a VM that
 * stops clears its alerts, and a restarted daemon picks up active alerts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/host/store.js';
import { EventBus } from '../../src/host/events.js';
import { AlertManager, type Observation } from '../../src/host/monitor/alerts.js';

function setup(t: { after(fn: () => void): void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-monitor-alerts-'));
  const store = new Store(dir);
  t.after(() => { store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const events = new EventBus(store);
  const heard: string[] = [];
  events.subscribe((e) => heard.push(`${e.type}:${e.vm}:${e.reason ?? ''}`));
  return { store, events, heard, alerts: new AlertManager(store, events) };
}

const busy = (firing: boolean): Observation => ({ vm: 'web', kind: 'cpu', firing, forSeconds: 60, message: 'VM web uses 99% of its 1 vCPU' });

test('raised after the condition held for its window, cleared after it has been false as long', (t) => {
  const { alerts, heard } = setup(t);
  alerts.observe(0, [busy(true)]);
  alerts.observe(30_000, [busy(true)]);
  assert.equal(alerts.activeAlerts().length, 0, 'not yet: 30 s of a 60 s window');
  alerts.observe(45_000, [busy(false)]);
  alerts.observe(50_000, [busy(true)]);
  alerts.observe(100_000, [busy(true)]);
  assert.equal(alerts.activeAlerts().length, 0, 'a dip restarts the window');
  alerts.observe(110_000, [busy(true)]);
  const [a] = alerts.activeAlerts();
  assert.ok(a);
  assert.deepEqual({ vm: a.vm, kind: a.kind, raisedAt: a.raisedAt, clearedAt: a.clearedAt }, { vm: 'web', kind: 'cpu', raisedAt: 110_000, clearedAt: null });
  alerts.observe(120_000, [busy(true)]);
  assert.equal(alerts.list().length, 1, 'raised once, not again while it holds');
  alerts.observe(130_000, [busy(false)]);
  alerts.observe(170_000, [busy(false)]);
  assert.equal(alerts.activeAlerts().length, 1, 'still active: 40 s below of 60');
  alerts.observe(190_000, [busy(false)]);
  assert.equal(alerts.activeAlerts().length, 0);
  assert.equal(alerts.list()[0]!.clearedAt, 190_000);
  assert.equal(heard.length, 2);
  assert.match(heard[0]!, /^alert:web:raised cpu \(alert \d+\): VM web uses 99%/);
  assert.match(heard[1]!, /^alert:web:cleared cpu \(alert \d+\): back to normal/);
});

test('host alerts with no window raise at once and carry vm null ("" on the event)', (t) => {
  const { alerts, heard } = setup(t);
  alerts.observe(5, [{ vm: null, kind: 'disk-space', firing: true, forSeconds: 0, message: 'the data directory is 95% full' }]);
  assert.equal(alerts.list()[0]!.vm, null);
  assert.match(heard[0]!, /^alert::raised disk-space/);
});

test('a VM that is no longer observed (stopped, deleted) has its alerts cleared', (t) => {
  const { alerts } = setup(t);
  alerts.observe(0, [{ ...busy(true), forSeconds: 0 }]);
  assert.equal(alerts.activeAlerts().length, 1);
  alerts.observe(10_000, []);
  assert.equal(alerts.activeAlerts().length, 0);
  assert.match(alerts.list()[0]!.message, /99%/);
});

test('active alerts survive a daemon restart: the new manager clears, not re-raises, them', (t) => {
  const { store, events, alerts } = setup(t);
  alerts.observe(0, [{ ...busy(true), forSeconds: 0 }]);
  const again = new AlertManager(store, events);
  assert.equal(again.activeAlerts().length, 1);
  again.observe(1000, [{ ...busy(true), forSeconds: 0 }]);
  assert.equal(again.list().length, 1);
  again.observe(2000, [{ ...busy(false), forSeconds: 0 }]);
  assert.equal(again.activeAlerts().length, 0);
  assert.equal(again.list().length, 1);
});

test('stored alerts are bounded: old cleared ones are pruned, active ones kept', (t) => {
  const { store, alerts } = setup(t);
  const ins = store.sqlite.prepare('INSERT INTO alerts (vm, kind, message, raised_at, cleared_at) VALUES (?, ?, ?, ?, ?)');
  store.transaction(() => {
    ins.run('x', 'cpu', 'old active', 0, null);
    for (let i = 0; i < 1200; i++) ins.run('x', 'cpu', `m${i}`, i, i + 1);
  });
  assert.equal(alerts.prune(), 200);
  const n = (store.sqlite.prepare('SELECT COUNT(*) AS n FROM alerts').get() as { n: number }).n;
  assert.equal(n, 1001);
  assert.equal(alerts.list()[0]!.message, 'old active');
});
