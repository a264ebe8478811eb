/**
 * The runtime flags hangar-vmm is spawned with must be ones this Node accepts
 * (an unknown flag makes node refuse to start), and the vCPU worker limits
 * must be plain positive numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { VCPU_WORKER_LIMITS, VMM_NODE_FLAGS } from '../../src/vmm/process-flags.js';

test('VMM_NODE_FLAGS are accepted by this node', () => {
  for (const f of VMM_NODE_FLAGS) assert.match(f, /^--[a-z0-9-]+(=[A-Za-z0-9._-]+)?$/, `${f} is a plain flag`);
  const out = execFileSync(process.execPath, [...VMM_NODE_FLAGS, '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' });
  assert.equal(out, 'ok');
});

test('VCPU_WORKER_LIMITS are positive numbers', () => {
  for (const [k, v] of Object.entries(VCPU_WORKER_LIMITS)) assert.ok(typeof v === 'number' && v > 0, `${k} = ${String(v)}`);
});
