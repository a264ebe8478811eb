/** `hangar vnc` advice and the launch request's --boot/--iso, without a daemon. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { renderVncAdvice, vncAdvice } from '../../src/cli/commands/display.js';
import { isoArgument, launchRequest } from '../../src/cli/commands/vm.js';
import { buildProgram } from '../../src/cli/program.js';

test('vnc advice: a socat forward on the daemon host, an ssh -L tunnel from elsewhere, quoted when needed', () => {
  const a = vncAdvice('web', '/var/lib/hangar/vms/web/vnc.sock', 5901, 'h1.example');
  assert.equal(a.local, 'sudo socat TCP-LISTEN:5901,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:/var/lib/hangar/vms/web/vnc.sock');
  assert.equal(a.ssh, 'ssh -N -L 5901:/var/lib/hangar/vms/web/vnc.sock root@h1.example');
  assert.equal(a.viewer, 'vncviewer 127.0.0.1::5901');
  const local = renderVncAdvice(a, false, 'running');
  assert.match(local, /Forward it to a local TCP port/);
  assert.ok(local.includes(a.local));
  const remote = renderVncAdvice(a, true, 'stopped');
  assert.ok(remote.includes(a.ssh) && !remote.includes('socat'));
  assert.match(remote, /the VM is stopped; the socket exists while it runs/);
  assert.ok(vncAdvice('x', "/data dir/it's/vnc.sock", 5900, 'h').local.endsWith(`UNIX-CONNECT:'/data dir/it'\\''s/vnc.sock'`));
});

test('launch: --boot and --iso go into the request; a relative ISO path is made absolute', () => {
  assert.deepEqual(launchRequest('tiny', 'inst', { start: true, boot: 'uefi', iso: '/srv/iso/x.iso' }), { name: 'inst', image: 'tiny', boot: 'uefi', iso: '/srv/iso/x.iso' });
  assert.equal(launchRequest('tiny', 'inst', { start: true, iso: 'x.iso' }).iso, path.resolve('x.iso'));
  const launch = buildProgram().commands.find((c) => c.name() === 'launch')!;
  assert.ok(launch.options.some((o) => o.long === '--boot'));
  assert.ok(launch.options.some((o) => o.long === '--iso'));
  assert.ok(buildProgram().commands.some((c) => c.name() === 'vnc'));
});

test('--iso: absolute paths as given, "pool/volume" as a volume, other relative paths made absolute', () => {
  assert.equal(isoArgument('/srv/x.iso'), '/srv/x.iso');
  assert.equal(isoArgument('default/netinst'), 'default/netinst');
  assert.equal(isoArgument('x.iso'), path.resolve('x.iso'));
  assert.equal(isoArgument('./isos/x.iso'), path.resolve('isos/x.iso'));
  assert.equal(isoArgument('a/b/c.iso'), path.resolve('a/b/c.iso'));
  // A file that exists here wins over a volume name of the same shape.
  assert.equal(isoArgument('test/unit'), path.resolve('test/unit'));
});
