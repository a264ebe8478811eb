/** Exit-reason mapping, /proc readers and version parsing of the QEMU engine. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { exitReasonFor } from '../../src/engines/qemu/engine.js';
import { processAlive, processArgs, processCpuSeconds, processRssBytes } from '../../src/engines/base/procfs.js';
import { parseQemuVersion } from '../../src/engines/qemu/version.js';

test('SHUTDOWN reasons map to exit reasons; a kill we asked for wins; no event means crashed', () => {
  assert.equal(exitReasonFor('guest-shutdown', false, null).reason, 'poweroff');
  assert.equal(exitReasonFor('guest-reset', false, null).reason, 'reboot');
  assert.equal(exitReasonFor('host-qmp-quit', false, null).reason, 'stopped');
  assert.equal(exitReasonFor('host-qmp-system-reset', false, null).reason, 'reboot');
  assert.equal(exitReasonFor('host-signal', false, null).reason, 'killed');
  assert.equal(exitReasonFor('guest-panic', false, null).reason, 'crashed');
  assert.equal(exitReasonFor('something-new', false, null).reason, 'crashed');
  assert.equal(exitReasonFor(null, true, 'SIGKILL').reason, 'killed');
  assert.equal(exitReasonFor('guest-shutdown', true, null).reason, 'killed');
  const crash = exitReasonFor(null, false, 'SIGSEGV');
  assert.equal(crash.reason, 'crashed');
  assert.match(crash.detail, /SIGSEGV/);
});

test('procfs readers on this process and on a finished one', () => {
  assert.equal(processAlive(process.pid), true);
  assert.ok(processRssBytes(process.pid) > 1024 * 1024);
  assert.ok(processCpuSeconds(process.pid) >= 0);
  assert.deepEqual(processArgs(process.pid), fs.readFileSync('/proc/self/cmdline', 'utf8').split('\0').slice(0, -1));
  const gone = spawnSync(process.execPath, ['-e', '']).pid!;
  assert.equal(processAlive(gone), false);
  assert.equal(processArgs(gone), null);
  assert.equal(processRssBytes(gone), 0);
  for (const bad of [0, -1, 1.5, Number.NaN]) assert.equal(processAlive(bad), false);
});

test('qemu --version output is parsed', () => {
  assert.equal(parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright'), '7.2.22');
  assert.equal(parseQemuVersion('QEMU emulator version 9.1.0\n'), '9.1.0');
  assert.equal(parseQemuVersion('something else'), null);
});
