/**
 * hangar-vmm's runtime settings must let it run: node must accept
 * VMM_NODE_FLAGS and start the VMM with them in force, and a vCPU worker
 * thread must load its modules and do its work under VCPU_WORKER_LIMITS.
 * Both constants are empty today (docs/vmm.md says why), so each check is
 * also run on a value it must refuse: a test that looped over the empty
 * constants alone could not fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { VCPU_WORKER_LIMITS, VMM_NODE_FLAGS } from '../../src/vmm/process-flags.js';

/** The compiled module next to this (compiled) test; under tsx, the .ts source. */
function srcFile(rel: string): string {
  const ts = fileURLToPath(import.meta.url).endsWith('.ts');
  return fileURLToPath(new URL(`../../src/${rel}.${ts ? 'ts' : 'js'}`, import.meta.url));
}

/** Runs hangar-vmm's entry point with these node flags; answers its exit status, output and node's execArgv. */
function runVmmWith(flags: readonly string[]): { status: number | null; stdout: string; stderr: string; execArgv: string[] | null } {
  const main = srcFile('vmm/main');
  const tsx = main.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const r = spawnSync(process.execPath, [...tsx, ...flags, main, '--help'], { encoding: 'utf8', timeout: 60_000 });
  // A second run asks node itself which flags it honoured (the same flags, no script).
  const q = spawnSync(process.execPath, [...flags, '-e', 'process.stdout.write(JSON.stringify(process.execArgv))'], { encoding: 'utf8', timeout: 60_000 });
  // execArgv ends with the `-e <code>` pair itself.
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, execArgv: q.status === 0 ? (JSON.parse(q.stdout) as string[]).slice(0, -2) : null };
}

test('node starts hangar-vmm with VMM_NODE_FLAGS, and they are in force', () => {
  for (const f of VMM_NODE_FLAGS) assert.match(f, /^--[a-z0-9-]+(=[A-Za-z0-9._-]+)?$/, `${f} is a plain flag`);
  const r = runVmmWith(VMM_NODE_FLAGS);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^usage: hangar-vmm /);
  assert.deepEqual(r.execArgv, [...VMM_NODE_FLAGS]);
});

test('the same check refuses a flag node does not know, and sees one it does', () => {
  const bad = runVmmWith(['--no-such-hangar-flag']);
  assert.notEqual(bad.status, 0, 'node refuses to start with an unknown flag');
  assert.match(bad.stderr, /bad option|no-such-hangar-flag/);
  assert.equal(bad.execArgv, null);
  const good = runVmmWith(['--max-semi-space-size=1']);
  assert.equal(good.status, 0, good.stderr);
  assert.deepEqual(good.execArgv, ['--max-semi-space-size=1']);
});

/**
 * Starts a worker thread under `limits` that imports exactly the modules
 * src/vmm/vcpu-worker imports (read from its source, so the list cannot go
 * stale) and then allocates a few MiB, as a running vCPU's exit handling
 * does over time. Resolves with how the worker ended.
 */
function vcpuWorkerLoads(limits: ResourceLimits): Promise<{ loaded: boolean; error?: string }> {
  const worker = srcFile('vmm/vcpu-worker');
  const imports = [...fs.readFileSync(worker, 'utf8').matchAll(/^\s*(?:import|\}) [^'\n]*from '(\.{1,2}\/[^']+)';/gm)]
    .map((m) => new URL(m[1]!, `file://${worker}`).href);
  assert.ok(imports.length >= 4, `found the vCPU worker's imports: ${imports.join(', ')}`);
  const src = `const { parentPort } = await import('node:worker_threads');
for (const m of ${JSON.stringify(imports)}) await import(m);
const kept = []; for (let i = 0; i < 16; i++) kept.push(new Array(32 * 1024).fill(i));
parentPort.postMessage({ loaded: kept.length === 16 });`;
  return new Promise((resolve) => {
    const w = new Worker(src, { eval: true, resourceLimits: limits });
    let loaded = false;
    w.on('message', (m: { loaded: boolean }) => { loaded = m.loaded; });
    w.on('error', (e: Error & { code?: string }) => resolve({ loaded: false, error: e.code ?? e.message }));
    w.on('exit', () => resolve({ loaded }));
  });
}

test('a vCPU worker loads its modules and works under VCPU_WORKER_LIMITS', { skip: fileURLToPath(import.meta.url).endsWith('.ts') ? 'needs the compiled worker modules' : false }, async () => {
  for (const [k, v] of Object.entries(VCPU_WORKER_LIMITS)) assert.ok(typeof v === 'number' && v > 0, `${k} = ${String(v)}`);
  assert.deepEqual(await vcpuWorkerLoads(VCPU_WORKER_LIMITS), { loaded: true });
});

test('the same check catches limits too tight for a vCPU worker', { skip: fileURLToPath(import.meta.url).endsWith('.ts') ? 'needs the compiled worker modules' : false }, async () => {
  const r = await vcpuWorkerLoads({ maxOldGenerationSizeMb: 4 });
  assert.equal(r.loaded, false);
  assert.equal(r.error, 'ERR_WORKER_OUT_OF_MEMORY');
});
