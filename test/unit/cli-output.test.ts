/**
 * The CLI's pure pieces: table/CSV/YAML-like rendering, durations and sizes
 * in rows, progress lines, exit codes, log tails and the launch request
 * built from options.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HangarError, ERROR_STATUS, type ErrorCode } from '../../src/common/errors.js';
import { projectRoot } from '../../src/common/paths.js';
import type { Vm } from '../../src/host/api/schemas.js';
import { formatDuration, formatSizeApprox, renderCsv, renderKeyValues, renderTable, resolveFormat } from '../../src/cli/output.js';
import { EXIT, exitCodeFor } from '../../src/cli/exit-codes.js';
import { ProgressReporter } from '../../src/cli/progress.js';
import { lastLines } from '../../src/cli/commands/logs.js';
import { LIST_HEADERS, launchRequest, renderVm, vmRow } from '../../src/cli/commands/vm.js';
import { eventLine, eventsQuery } from '../../src/cli/commands/events.js';
import { compileUntil } from '../../src/cli/commands/console.js';
import { renderHostCheck } from '../../src/cli/commands/host.js';

const vm: Vm = {
  id: 'vm-1',
  name: 'web1',
  state: 'running',
  spec: { image: 'tiny', engine: 'qemu', cpus: 2, memoryBytes: 256 * 1024 * 1024, cmdline: 'console=ttyS0', disks: [] },
  runtime: { pid: 4242, accel: 'tcg', startedAt: '2026-11-26T09:00:00.000Z', uptimeSeconds: 3725, lastExit: null },
  createdAt: '2026-11-26T08:59:58.123Z',
};

test('durations read like an uptime column', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(59.9), '59s');
  assert.equal(formatDuration(61), '1m01s');
  assert.equal(formatDuration(3725), '1h02m');
  assert.equal(formatDuration(90061), '1d01h');
  assert.equal(formatDuration(null), '-');
  assert.equal(formatDuration(-5), '-');
});

test('a VM row shows sizes the way --memory takes them', () => {
  assert.deepEqual(vmRow(vm), ['web1', 'running', 'qemu', 'tcg', '2', '256M', '1h02m', '-']);
  const stopped: Vm = { ...vm, state: 'stopped', runtime: { ...vm.runtime, pid: null, accel: null, uptimeSeconds: null } };
  assert.deepEqual(vmRow(stopped), ['web1', 'stopped', 'qemu', '-', '2', '256M', '-', '-']);
  assert.deepEqual(vmRow({ ...vm, spec: { ...vm.spec, memoryBytes: 1536 * 1024 * 1024 } })[5], '1536M');
});

test('tables align columns, have no borders and no trailing blanks', () => {
  const t = renderTable(LIST_HEADERS, [vmRow(vm), ['db-primary', 'stopped', 'micro', '-', '1', '1G', '-', '-']]);
  const lines = t.trimEnd().split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0]!, /^NAME\s+STATE\s+ENGINE\s+ACCEL\s+CPUS\s+MEMORY\s+UPTIME\s+IPV4$/);
  // STATE starts at the same column on every line
  const col = lines[0]!.indexOf('STATE');
  assert.equal(lines[1]!.indexOf('running'), col);
  assert.equal(lines[2]!.indexOf('stopped'), col);
  for (const l of lines) assert.equal(l, l.trimEnd());
});

test('CSV quotes only what needs quoting', () => {
  assert.equal(renderCsv(['A', 'B'], [['x', 'has,comma'], ['say "hi"', 'line\nbreak']]), 'A,B\nx,"has,comma"\n"say ""hi""","line\nbreak"\n');
});

test('--json wins over --format; unknown formats are refused', () => {
  assert.equal(resolveFormat({}), 'table');
  assert.equal(resolveFormat({ format: 'CSV' }), 'csv');
  assert.equal(resolveFormat({ json: true, format: 'csv' }), 'json');
  assert.throws(() => resolveFormat({ format: 'yaml' }), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_ARGUMENT');
});

test('show renders spec and runtime as indented key: value lines', () => {
  const s = renderVm(vm);
  assert.match(s, /^name: web1$/m);
  assert.match(s, /^spec:\n {2}image: tiny\n {2}engine: qemu\n {2}cpus: 2\n {2}memory: 256M\n/m);
  assert.match(s, /^runtime:\n {2}pid: 4242\n {2}accel: tcg\n {2}started: 2026-11-26 09:00:00Z\n {2}uptime: 1h02m\n {2}last exit: -$/m);
  assert.match(s, /^created: 2026-11-26 08:59:58Z$/m);
});

test('key/value rendering handles lists, empty objects and nesting', () => {
  assert.equal(renderKeyValues({ a: [], b: {}, c: ['x', 'y'], d: [{ k: 1, l: 2 }], e: '' }), 'a: []\nb: {}\nc:\n  - x\n  - y\nd:\n  - k: 1\n    l: 2\ne: ""\n');
});

test('error codes map to documented exit codes', () => {
  assert.equal(exitCodeFor('INVALID_ARGUMENT'), EXIT.USAGE);
  assert.equal(exitCodeFor('NOT_FOUND'), 3);
  assert.equal(exitCodeFor('INVALID_STATE'), 4);
  assert.equal(exitCodeFor('ALREADY_EXISTS'), 4);
  assert.equal(exitCodeFor('UNAVAILABLE'), 5);
  assert.equal(exitCodeFor('TIMEOUT'), 6);
  assert.equal(exitCodeFor('UNSUPPORTED'), 7);
  assert.equal(exitCodeFor('UNAUTHORIZED'), 8);
  assert.equal(exitCodeFor('ENGINE_FAILED'), EXIT.FAILURE);
});

test("docs/cli.md's exit-code table is exactly what the CLI does, for every error code", () => {
  const doc = fs.readFileSync(path.join(projectRoot(), 'docs', 'cli.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Output, errors and exit codes'));
  const documented = new Map<string, number>();
  for (const m of section.matchAll(/^\| (\d+) \| [^|]+ \|([^|\n]*)\|$/gm)) {
    for (const c of m[2]!.matchAll(/`([A-Z_]+)`/g)) documented.set(c[1]!, Number(m[1]));
  }
  const codes = Object.keys(ERROR_STATUS) as ErrorCode[];
  assert.deepEqual([...documented.keys()].sort(), [...codes].sort(), 'every error code has its row, and no row names an unknown code');
  for (const c of codes) assert.equal(exitCodeFor(c), documented.get(c), `${c}: exit code as documented`);
});

test('launch options become a validated create request', () => {
  assert.deepEqual(launchRequest('tiny', 'web1', { cpus: 2, memory: '256M', start: true }), { name: 'web1', image: 'tiny', cpus: 2, memory: 268435456 });
  assert.deepEqual(launchRequest('tiny', 'web1', { engine: 'micro', cmdline: 'quiet', start: false }), { name: 'web1', image: 'tiny', engine: 'micro', cmdline: 'quiet', start: false });
  const invalid = (e: unknown) => e instanceof HangarError && e.code === 'INVALID_ARGUMENT';
  assert.throws(() => launchRequest('tiny', 'web1', { memory: '12XB', start: true }), invalid);
  assert.throws(() => launchRequest('tiny', 'web1', { memory: '0', start: true }), invalid);
  assert.throws(() => launchRequest('tiny', 'Web_1', { start: true }), invalid);
  assert.throws(() => launchRequest(' ', 'web1', { start: true }), invalid);
});

test('progress: plain lines off a terminal, only when the stage or percent moves', () => {
  let written = '';
  const p = new ProgressReporter('Launching web1', { write: (s: string) => (written += s) }, false);
  p.start();
  p.update({ description: 'x', progress: { stage: 'building image', percent: 0 } });
  p.update({ description: 'x', progress: { stage: 'building image', percent: 4 } });
  p.update({ description: 'x', progress: { stage: 'building image', percent: 50 } });
  p.update({ description: 'x', progress: { stage: 'booting' } });
  p.update({ description: 'x' });
  p.stop('Launched web1');
  assert.equal(written, 'Launching web1...\n  building image 0%\n  building image 50%\n  booting\nLaunched web1\n');
});

test('progress: a terminal gets one line redrawn in place', () => {
  let written = '';
  const p = new ProgressReporter('Launching', { write: (s: string) => (written += s) }, true);
  p.start();
  p.update({ description: 'x', progress: { stage: 'booting', percent: 10 } });
  p.stop('done');
  assert.match(written, /^\r\x1b\[2K. Launching/);
  assert.ok(written.endsWith('\r\x1b[2Kdone\n'));
});

test('log tails keep whole lines', () => {
  assert.equal(lastLines('a\nb\nc\n', 2), 'b\nc\n');
  assert.equal(lastLines('a\nb\nc', 2), 'b\nc');
  assert.equal(lastLines('a\n', 5), 'a\n');
  assert.equal(lastLines('a\nb\n', 0), '');
});

test('events: query string and streaming line', () => {
  assert.equal(eventsQuery({}), '');
  assert.equal(eventsQuery({ since: 5, vm: 'web1' }), '?since=5&vm=web1');
  assert.equal(eventLine({ seq: 7, at: '2026-11-26T09:00:00.000Z', vm: 'web1', type: 'stopped', reason: 'guest poweroff' }), '7  2026-11-26 09:00:00Z  web1  stopped  (guest poweroff)\n');
});

test('console --until must be a valid regular expression', () => {
  assert.ok(compileUntil('hello-\\d+')!.test('xx hello-42'));
  assert.equal(compileUntil(undefined), undefined);
  assert.throws(() => compileUntil('(unclosed'), (e: unknown) => e instanceof HangarError && e.code === 'INVALID_ARGUMENT');
});

test('host check report says what Hangar will do', () => {
  const s = renderHostCheck({
    kvm: { present: true, fullSystem: false, kind: 'nested-emulated', detail: 'PVM: guest kernel mode is emulated' },
    qemu: { present: true, version: '7.2.0' },
    cpus: { total: 2, allocated: 1 },
    memory: { totalBytes: 24 * 1024 ** 3, availableBytes: 20 * 1024 ** 3, allocatedBytes: 256 * 1024 ** 2 },
    defaultAccel: 'tcg',
    budget: {
      memoryBytes: { committed: 256 * 1024 ** 2, limit: 21 * 1024 ** 3 },
      cpus: { committed: 1, limit: 8 },
      vms: { defined: 3, limit: 1000 },
      settings: { memoryReserveBytes: 3 * 1024 ** 3, memoryRatio: 1, cpuRatio: 4, maxVms: 1000 },
    },
    advice: ['Full Linux guests run on QEMU with TCG.'],
  });
  assert.match(s, /^KVM: +present, but kernel mode is emulated \(nested-emulated\)/m);
  assert.match(s, /^QEMU: +7\.2\.0$/m);
  assert.match(s, /^Memory: +24G total, 20G available, 256M allocated to VMs$/m);
  assert.match(s, /TCG/);
  assert.match(s, /^Budget: +memory 256M of 21G committed \(host less 3G reserve, x1\)$/m);
  assert.match(s, /^ +vCPUs 1 of 8 committed \(4 per host CPU\); VMs 3 of 1000 defined$/m);
  assert.match(s, /^ {2}- Full Linux guests run on QEMU with TCG\.$/m);
});

test('measured sizes round to one decimal', () => {
  assert.equal(formatSizeApprox(24731708 * 1024), '23.6G');
  assert.equal(formatSizeApprox(150180 * 1024), '146.7M');
  assert.equal(formatSizeApprox(2 * 1024 ** 3), '2G');
  assert.equal(formatSizeApprox(0), '0B');
});

test('answers that are not error envelopes still become coded errors', async () => {
  const { errorFromResponse, resolveEndpoint } = await import('../../src/cli/client.js');
  const res = (status: number, body: string) => ({ status, headers: {}, body: Buffer.from(body) });
  const env = errorFromResponse(res(409, JSON.stringify({ type: 'error', error: { code: 'INVALID_STATE', message: 'busy', details: { state: 'running' } } })));
  assert.equal(env.code, 'INVALID_STATE');
  assert.equal(env.message, 'busy');
  assert.deepEqual(env.details, { state: 'running' });
  // A code this CLI does not know falls back on the HTTP status.
  assert.equal(errorFromResponse(res(404, JSON.stringify({ type: 'error', error: { code: 'GONE_FISHING', message: 'x' } }))).code, 'NOT_FOUND');
  // A framework error without our envelope.
  const fw = errorFromResponse(res(404, JSON.stringify({ message: 'Route GET:/1.0/nope not found', error: 'Not Found', statusCode: 404 })));
  assert.equal(fw.code, 'NOT_FOUND');
  assert.match(fw.message, /Route GET/);
  const html = errorFromResponse(res(502, '<html>Bad gateway</html>'));
  assert.equal(html.code, 'INTERNAL');
  assert.equal(html.message, 'the daemon answered HTTP 502: <html>Bad gateway</html>');
  assert.throws(() => resolveEndpoint({ remote: 'ftp://host' }), /http:\/\/ or https:\/\//);
  assert.equal(resolveEndpoint({ remote: 'https://h:8443/ignored/path' }).remote, 'https://h:8443');
  assert.equal(resolveEndpoint({ socket: '/tmp/x.sock' }).socket, '/tmp/x.sock');
});
