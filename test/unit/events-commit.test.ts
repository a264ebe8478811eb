/**
 * Lifecycle events reach subscribers only once the transaction that wrote
 * them has committed: a rolled-back change is never announced. And the VM
 * state changes the VM manager may make.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/host/store.js';
import { EventBus } from '../../src/host/events.js';
import type { LifecycleEvent, VmStateName } from '../../src/host/api/schemas.js';
import { checkTransition } from '../../src/host/vms.js';
import { HangarError } from '../../src/common/errors.js';

let dir: string;
let store: Store;
let bus: EventBus;
let heard: LifecycleEvent[];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-events-'));
  store = new Store(dir);
  bus = new EventBus(store);
  heard = [];
  bus.subscribe((e) => heard.push(e));
});

afterEach(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('outside a transaction an event is published at once', () => {
  bus.emit('a', 'created');
  assert.deepEqual(heard.map((e) => e.type), ['created']);
});

test('inside a transaction: published after the commit, not before', () => {
  store.transaction(() => {
    bus.emit('a', 'created');
    bus.emit('a', 'started');
    assert.equal(heard.length, 0, 'nothing is heard while the transaction is open');
  });
  assert.deepEqual(heard.map((e) => e.type), ['created', 'started']);
  assert.deepEqual(heard, bus.list(), 'what was heard is what was stored');
});

test('a rolled-back transaction publishes nothing and stores nothing', () => {
  assert.throws(() => store.transaction(() => {
    bus.emit('a', 'started');
    throw new Error('boom');
  }), /boom/);
  assert.equal(heard.length, 0);
  assert.deepEqual(bus.list(), []);
  // The next transaction is not haunted by the dropped event.
  store.transaction(() => { bus.emit('a', 'stopped'); });
  assert.deepEqual(heard.map((e) => e.type), ['stopped']);
});

test('nested: a failed inner part publishes nothing; the outer commit publishes the rest, once', () => {
  store.transaction(() => {
    bus.emit('a', 'created');
    try {
      store.transaction(() => {
        bus.emit('a', 'started');
        throw new Error('inner');
      });
    } catch { /* the outer transaction goes on */ }
    store.transaction(() => { bus.emit('a', 'paused'); });
    assert.equal(heard.length, 0, 'an inner commit is not the end of the transaction');
  });
  assert.deepEqual(heard.map((e) => e.type), ['created', 'paused']);
  assert.deepEqual(bus.list().map((e) => e.type), ['created', 'paused']);
});

test('a subscriber that throws does not undo the change or silence the others', () => {
  const other: string[] = [];
  bus.subscribe(() => { throw new Error('bad subscriber'); });
  bus.subscribe((e) => other.push(e.type));
  store.transaction(() => { bus.emit('a', 'created'); });
  assert.deepEqual(other, ['created']);
  assert.equal(bus.list().length, 1);
});

test('VM state changes: a start always passes through starting (where admission reserves), exits only from live states', () => {
  const ok: Array<[VmStateName, VmStateName]> = [['stopped', 'starting'], ['crashed', 'starting'], ['starting', 'running'], ['starting', 'stopped'],
    ['running', 'paused'], ['paused', 'running'], ['running', 'stopping'], ['stopping', 'stopped'], ['running', 'crashed'], ['paused', 'stopped']];
  for (const [from, to] of ok) checkTransition('v', from, to);
  const bad: Array<[VmStateName, VmStateName]> = [['stopped', 'running'], ['crashed', 'running'], ['stopped', 'paused'], ['starting', 'paused'],
    ['stopping', 'running'], ['stopped', 'crashed'], ['paused', 'starting'], ['running', 'starting']];
  for (const [from, to] of bad) {
    assert.throws(() => checkTransition('v', from, to), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_STATE' && e.message === `VM "v" cannot go from ${from} to ${to}`, `${from} → ${to}`);
  }
});
