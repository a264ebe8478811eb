#!/usr/bin/env node
/**
 * hangar-vmm: Hangar's microVM monitor, one process per VM.
 *
 *   hangar-vmm --api-sock PATH [--id ID] [--console-sock PATH] [--console-log PATH] [--exit-file PATH]
 *   hangar-vmm --config vm.json [--console stdio] [--api-sock PATH] ...
 *
 * With --config the VM starts at once; with only --api-sock it waits for
 * PUT /actions {"action_type":"InstanceStart"}. The process exits when the
 * guest powers off, resets or crashes, or on Stop / SIGTERM / SIGINT, with
 * the exit codes of exit-codes.ts and one line on stderr saying why.
 */
// What this file imports statically is loaded before the control API can answer, so it is kept to the API,
// the console and the small modules that record what the command line says. The machine (KVM through koffi,
// builder, devices, virtio), pino and TypeBox load later, by import(): importing one of them here — even
// through a helper that imports it — costs a few hundred ms of start-up (test/e2e/vmm-startup-modules.test.ts).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { Logger } from '../common/log.js';
import { toHangarError } from '../common/errors.js';
import { ControlServer, loadValidators } from './api.js';
import { ConsoleHub } from './console.js';
import { consoleLogLimitFromArgs } from '../common/console-log/limits.js';
import { VmmController } from './controller.js';
import { exitCodeFor, VMM_EXIT, type VmmExitRecord } from './exit-codes.js';
import type { MachineExit } from './machine.js';
import { setInheritedKvmFd } from '../kvm/inherited-fd.js';
import { setInheritedTap } from './virtio/inherited-taps.js';
import { isTapName, TAP_NAME_RULE } from '../api/name-rules.js';
import { seccompModeFromEnv, type SeccompMode } from '../kvm/seccomp-mode.js';

const USAGE = `usage: hangar-vmm (--api-sock PATH | --config FILE) [--console stdio|none] [--console-sock PATH]
                  [--console-log PATH [--console-log-size BYTES] [--console-log-files N]] [--exit-file PATH] [--id ID] [--log-level LEVEL]
                  [--kvm-fd N] [--tap-fd NAME=FD]... [--no-seccomp]`;

function usage(msg: string): never {
  process.stderr.write(`hangar-vmm: ${msg}\n${USAGE}\n`);
  process.exit(VMM_EXIT.USAGE);
}

/** --tap-fd NAME=FD: an inherited descriptor attached to TAP NAME (a /dev/net/tun descriptor, character device 10:200). */
function tapFdArg(v: string): void {
  const m = /^([^=]+)=([0-9]{1,4})$/.exec(v);
  if (!m) usage('--tap-fd wants NAME=FD');
  if (!isTapName(m[1])) usage(`--tap-fd: "${m[1]}" is not a valid interface name (${TAP_NAME_RULE})`);
  const fd = Number(m[2]);
  if (fd < 3) usage('--tap-fd: the descriptor must be 3 or more');
  let st: fs.Stats;
  try { st = fs.fstatSync(fd); } catch { usage(`--tap-fd ${v}: no such open descriptor`); }
  if (!st.isCharacterDevice() || st.rdev !== (10 << 8 | 200)) usage(`--tap-fd ${v}: not a TAP descriptor`);
  setInheritedTap(m[1]!, fd);
}

/** --kvm-fd: must be an open descriptor of /dev/kvm (character device 10:232). */
function kvmFdArg(v: string): number {
  const fd = Number(v);
  if (!/^[0-9]{1,4}$/.test(v) || fd < 3) usage('--kvm-fd must be a descriptor number of 3 or more');
  let st: fs.Stats;
  try { st = fs.fstatSync(fd); } catch { usage(`--kvm-fd ${fd}: no such open descriptor`); }
  if (!st.isCharacterDevice() || st.rdev !== (10 << 8 | 232)) usage(`--kvm-fd ${fd} is not /dev/kvm`);
  return fd;
}

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      options: {
        'api-sock': { type: 'string' },
        config: { type: 'string' },
        console: { type: 'string' },
        'console-sock': { type: 'string' },
        'console-log': { type: 'string' },
        'console-log-size': { type: 'string' },
        'console-log-files': { type: 'string' },
        'exit-file': { type: 'string' },
        id: { type: 'string' },
        'log-level': { type: 'string' },
        'kvm-fd': { type: 'string' },
        'tap-fd': { type: 'string', multiple: true },
        'no-seccomp': { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    }).values;
  } catch (e) {
    usage((e as Error).message);
  }
  if (args.help) { process.stdout.write(`${USAGE}\n`); process.exit(0); }
  if (!args['api-sock'] && !args.config) usage('one of --api-sock or --config is required');
  if (args.console !== undefined && args.console !== 'stdio' && args.console !== 'none') usage('--console must be stdio or none');

  const level = args['log-level'] ?? process.env.HANGAR_LOG_LEVEL ?? 'warn';
  // The logging library (pino, ~18 ms and a few MiB to load) and the machine model (KVM FFI,
  // boot loaders, devices) are not needed to answer the control API: they load after it listens.
  let logger: Promise<Logger> | undefined;
  const loadLogger = (): Promise<Logger> => (logger ??= import('../common/log.js').then((m) => m.createLogger('hangar-vmm', level)));
  const id = args.id ?? 'vm';
  const hub = new ConsoleHub();
  const ctl = new VmmController(id, loadLogger, hub);
  if (args['kvm-fd'] !== undefined) setInheritedKvmFd(kvmFdArg(args['kvm-fd']));
  for (const t of args['tap-fd'] ?? []) tapFdArg(t);
  // The seccomp filter goes on once the vCPU threads run (src/kvm/seccomp.ts); HANGAR_VMM_SECCOMP=0 or --no-seccomp: off.
  let seccomp: SeccompMode = 'off';
  try { if (!args['no-seccomp']) seccomp = seccompModeFromEnv(); } catch (e) { usage((e as Error).message); }
  // Loaded ahead (preload, or before a --config start), so installing it costs no turn of the event loop.
  let install: ((mode: SeccompMode) => void) | undefined;
  const loadSeccomp = (): Promise<void> => import('../kvm/seccomp.js').then((m) => { install = m.installSeccomp; });
  if (seccomp !== 'off') ctl.onRunning = async () => { if (!install) await loadSeccomp(); install!(seccomp); };
  const api = new ControlServer(ctl);
  const exitFile = args['exit-file'];

  let exiting = false;
  const finish = (rec: VmmExitRecord): void => {
    if (exiting) return;
    exiting = true;
    hub.close();
    api.close();
    if (exitFile) { try { fs.writeFileSync(exitFile, JSON.stringify(rec) + '\n'); } catch { /* best effort */ } }
    process.stderr.write(`hangar-vmm: ${rec.reason}: ${rec.detail}\n`);
    try { ctl.machine?.close(); } catch { /* exiting anyway */ }
    process.exitCode = rec.code;
    // Worker threads are gone; give in-flight API answers (e.g. to Stop) a moment to flush, then exit
    // even if a client keeps its connection open.
    setTimeout(() => process.exit(rec.code), 30);
  };

  ctl.onExit((e: MachineExit) => {
    const rec: VmmExitRecord = { code: exitCodeFor(e.reason), reason: e.reason, detail: e.detail };
    if (e.rip) rec.rip = e.rip;
    if (e.insn) rec.insn = e.insn;
    finish(rec);
  });

  const onSignal = (sig: string) => {
    if (ctl.machine && ctl.machine.state !== 'Stopped' && ctl.machine.state !== 'NotStarted') void ctl.machine.stop(`stopped by ${sig}`);
    else finish({ code: VMM_EXIT.STOPPED, reason: 'stopped', detail: `stopped by ${sig} before the guest started` });
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  try {
    // The console log is rotated here, in the VMM: it keeps being written, within its bound, while the daemon is down.
    if (args['console-log']) hub.openLog(args['console-log'], consoleLogLimitFromArgs(args['console-log-size'], args['console-log-files']));
    if (args['console-sock']) await hub.listen(args['console-sock']);
    if (args.console === 'stdio') hub.attachStdio();
    if (args.config) {
      const { parseConfigFile } = await loadValidators();
      const cfg = parseConfigFile(JSON.parse(fs.readFileSync(args.config, 'utf8')));
      if (cfg['machine-config']) ctl.setMachineConfig(cfg['machine-config']);
      ctl.setBootSource(cfg['boot-source']);
      for (const d of cfg.drives ?? []) ctl.putDrive(d);
      for (const n of cfg['network-interfaces'] ?? []) ctl.putNet(n);
      if (cfg.entropy) ctl.setEntropy(true);
    }
    if (args['api-sock']) await api.listen(args['api-sock']);
    if (args.config) {
      if (seccomp !== 'off') await loadSeccomp();
      await ctl.start();
    } else {
      api.afterFirstAnswer(() => { preload(loadLogger); if (seccomp !== 'off') loadSeccomp().catch(() => {}); });
    }
  } catch (e) {
    const he = toHangarError(e);
    finish({ code: VMM_EXIT.ERROR, reason: 'error', detail: `${he.code}: ${he.message}` });
  }
}

/**
 * Loads what configuring and InstanceStart (or a snapshot load) will need — the body validators, the logger,
 * the machine model, and one vCPU thread with
 * its own modules loaded (prewarmVcpuThread in vcpu-thread.ts) — while the client is still configuring the VM,
 * after the first API answer so that answer does not wait for it. This takes them off the
 * InstanceStart → first guest instruction path. Failures are ignored here: InstanceStart
 * loads the same modules again (and starts a fresh thread) and reports the error.
 */
function preload(loadLogger: () => Promise<Logger>): void {
  loadValidators().catch(() => {});
  import('./vcpu-thread.js').then((m) => m.prewarmVcpuThread()).catch(() => {});
  loadLogger().catch(() => {});
  import('./builder.js').catch(() => {});
  // A client may load a snapshot instead of starting: its restore path too (small; the rest is builder's).
  import('./snapshot/restore.js').catch(() => {});
}

void main();
