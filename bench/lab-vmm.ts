/**
 * hangar-vmm as the KVM-lab benchmarks start it inside L1 (bench/lab-guest-io-bench.ts,
 * bench/lab-net-bench.ts): its configuration written to a file, the process spawned with the
 * VMM's Node flags, and its console socket connected once it exists.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { VMM_NODE_FLAGS } from '../src/vmm/process-flags.js';

export interface LabVmm {
  child: ChildProcess;
  apiSock: string;
  /** Types into the guest's console. */
  write(s: string): void;
}

export async function startLabVmm(opts: {
  /** The project's root (dist/ is run from there). */
  root: string;
  /** Where the config and the sockets go. */
  dir: string;
  /** The VM, in hangar-vmm's --config format. */
  config: object;
  env: NodeJS.ProcessEnv;
  /** Extra Node flags (a profiler's). */
  nodeFlags?: string[];
  /** How long the console socket may take to appear. */
  timeoutMs: number;
  /** Everything the console shows, as it comes (latin1). */
  onConsole(text: string): void;
}): Promise<LabVmm> {
  const cfg = path.join(opts.dir, 'vm.json');
  const apiSock = path.join(opts.dir, 'api.sock');
  const conSock = path.join(opts.dir, 'console.sock');
  for (const f of [apiSock, conSock]) fs.rmSync(f, { force: true });
  fs.writeFileSync(cfg, JSON.stringify(opts.config));
  const child = spawn(process.execPath, [...VMM_NODE_FLAGS, ...(opts.nodeFlags ?? []), path.join(opts.root, 'dist', 'src', 'vmm', 'main.js'),
    '--config', cfg, '--api-sock', apiSock, '--console-sock', conSock], { stdio: ['ignore', 'ignore', 'inherit'], env: opts.env });
  const t0 = Date.now();
  while (!fs.existsSync(conSock)) {
    if (child.exitCode !== null) throw new Error(`hangar-vmm exited (${child.exitCode})`);
    if (Date.now() - t0 > opts.timeoutMs) throw new Error('hangar-vmm opened no console socket');
    await new Promise((r) => setTimeout(r, 20));
  }
  const s = net.connect(conSock);
  s.on('data', (d: Buffer) => opts.onConsole(d.toString('latin1')));
  s.on('error', () => {});
  child.once('exit', () => s.destroy());
  return { child, apiSock, write: (x) => { s.write(x); } };
}

/** The guest network every lab benchmark uses: a TAP in L1, L1's address on it, the guest's address and MAC (the lab's seed gives 10.0.2.2 to that MAC). */
export const LAB_TAP = 'labtap0';
export const LAB_L1_ADDR = '10.0.2.1';
export const LAB_GUEST_ADDR = '10.0.2.2';
export const LAB_GUEST_MAC = '02:00:00:0a:00:02';
/** QEMU as scripts/kvm-lab.sh --with-qemu puts it in L1. */
export const LAB_QEMU = '/opt/qemu/bin/qemu';
