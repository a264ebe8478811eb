/**
 * hangar-vmm benchmarks (run on compiled JS: node dist/bench/vmm-bench.js):
 *  - process start → control socket answering (wall and CPU ms), beside a bare Node HTTP
 *    server on a Unix socket started with the same flags (the runtime's own floor);
 *  - InstanceStart → the guest's first instruction (guests/first-insn.c, whose first
 *    instruction exits to the VMM; the VMM timestamps it, see GET /metrics timing_ms);
 *  - InstanceStart → first serial byte of a test guest;
 *  - VMM memory beyond guest RAM (RSS, PSS and anonymous memory, minus the guest RAM mapping's RSS);
 *  - port-I/O and MMIO exits per second on one vCPU.
 * Writes the `vmm` section of docs/benchmarks.md with Firecracker's published figures beside ours.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { execFileSync, spawn } from 'node:child_process';
import { percentile, writeSection } from './report.js';
import { api, bootGuest, buildGuest, ConsoleClient, startVmm, vmmMain, kvmUsable } from '../test/helpers/vmm.js';
import { probeKvm } from '../src/kvm/probe.js';
import { VMM_NODE_FLAGS } from '../src/vmm/process-flags.js';

const RUNS = Number(process.env.VMM_BENCH_RUNS ?? 10);
/** Process starts are cheap and noisy: more runs. */
const START_RUNS = Number(process.env.VMM_BENCH_START_RUNS ?? Math.max(RUNS, 30));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU time of a running process in ms: the sum over its live threads of /proc/…/schedstat (ns, not 10 ms ticks). */
function cpuMs(pid: number): number {
  let ns = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try { ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]); } catch { /* thread ended */ }
  }
  return ns / 1e6;
}

/** Spawn → GET / answered, measured from outside, plus the CPU the process used until then. */
function rssMib(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/**
 * Proportional set size of a process, in bytes: shared pages (Node's binary and libraries) count
 * divided by how many processes map them, so N VMMs on a host use about N × this.
 */
function pssBytes(pid: number): number {
  return Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) * 1024;
}

/** Anonymous (private, not file-backed) resident memory of a process, in bytes. */
function anonBytes(pid: number): number {
  return Number(/Anonymous:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) * 1024;
}

/**
 * Floors from the runtime, started with the same flags: the least a Node process answering HTTP on a
 * Unix socket costs (node:http only), the same with node:net writing a canned HTTP answer (no HTTP
 * parser loaded), and Node doing nothing at all (`node -e 0`, spawn → exit).
 */
const BARE_HTTP = `require('node:http').createServer((q, s) => s.end('{}')).listen(process.argv[1])`;
const BARE_NET = `require('node:net').createServer((s) => s.end('HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\n{}')).listen(process.argv[1])`;

/** What answers on the socket: hangar-vmm, a bare Node server, or QEMU's monitor (microvm, KVM, paused, no devices). */
type Starter = 'vmm' | 'http' | 'net' | 'qemu';

function starterArgs(kind: Starter, sock: string): { cmd: string; args: string[] } {
  switch (kind) {
    case 'vmm': return { cmd: process.execPath, args: [...VMM_NODE_FLAGS, vmmMain(), '--id', 'bench', '--api-sock', sock, '--console-sock', `${sock}.console`, '--console-log', `${sock}.log`, '--exit-file', `${sock}.exit`] };
    case 'http': return { cmd: process.execPath, args: [...VMM_NODE_FLAGS, '-e', BARE_HTTP, sock] };
    case 'net': return { cmd: process.execPath, args: [...VMM_NODE_FLAGS, '-e', BARE_NET, sock] };
    case 'qemu': return { cmd: 'qemu-system-x86_64', args: ['-M', 'microvm', '-accel', 'kvm', '-nodefaults', '-display', 'none', '-S', '-qmp', `unix:${sock},server=on,wait=off`] };
  }
}

/** One QMP exchange: the greeting, then qmp_capabilities answered. */
function qmpAnswers(sock: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(sock);
    let buf = '';
    let sent = false;
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      if (!sent && buf.includes('"QMP"')) { sent = true; s.write('{"execute":"qmp_capabilities"}\n'); }
      if (buf.includes('"return"')) { s.destroy(); resolve(true); }
    });
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(buf.includes('"return"')));
  });
}

interface Ready { wall: number[]; cpu: number[]; rss: number[] }

/**
 * Spawn → first answer on its socket (GET / answered 200, or QMP's answer), measured from
 * outside with a 1 ms poll, plus the CPU the process used and its RSS until then.
 * The kinds take turns within each run, so a change in the host's load hits them alike.
 */
async function processReady(kinds: Starter[], runs: number): Promise<Record<Starter, Ready> & { nodeExit: number[] }> {
  const out = { nodeExit: [] as number[] } as Record<Starter, Ready> & { nodeExit: number[] };
  for (const k of kinds) out[k] = { wall: [], cpu: [], rss: [] };
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    const nop = spawn(process.execPath, [...VMM_NODE_FLAGS, '-e', '0'], { stdio: 'ignore' });
    await new Promise((r) => nop.once('exit', r));
    out.nodeExit.push(Number(process.hrtime.bigint() - t) / 1e6);
    for (const kind of kinds) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-bench-'));
      const sock = path.join(dir, 'api.sock');
      const { cmd, args } = starterArgs(kind, sock);
      const t0 = process.hrtime.bigint();
      const child = spawn(cmd, args, { stdio: 'ignore' });
      for (;;) {
        if (fs.existsSync(sock)) {
          if (kind === 'qemu') { if (await qmpAnswers(sock)) break; } else {
            try { const r = await api(sock, 'GET', '/'); if (r.status === 200) break; } catch { /* not yet */ }
          }
        }
        if (child.exitCode !== null) throw new Error(`${cmd} exited (${child.exitCode}) before answering`);
        await sleep(1);
      }
      out[kind].wall.push(Number(process.hrtime.bigint() - t0) / 1e6);
      out[kind].cpu.push(cpuMs(child.pid!));
      out[kind].rss.push(rssMib(child.pid!));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  return out;
}

/** QEMU is there and can use KVM: its microvm start is the comparison on this host. */
function qemuUsable(): boolean {
  try { execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

/**
 * InstanceStart → the first guest instruction, from the VMM's own timestamps (GET /metrics):
 * InstanceStart received → the boot vCPU's first KVM_RUN call (VM built, kernel loaded, vCPU
 * thread started) → KVM_RUN's first return, which for guests/first-insn.c is its first
 * instruction (`out` to port 0x80) exiting. Checked: that first exit must be that port write.
 * idleMs = 0: configured and started as soon as the socket exists (cold); > 0: after the VMM
 * answered once and sat idle that long (warm: it preloads its modules and one vCPU thread).
 */
async function firstInstruction(elf: string, idleMs: number): Promise<{ toEntry: number[]; toExit: number[]; entryToExit: number[] }> {
  const toEntry: number[] = [], toExit: number[] = [], entryToExit: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const vmm = await startVmm();
    try {
      const con = await ConsoleClient.connect(vmm.consoleSock);
      // "warm": the VMM has answered once and then sat idle, as a pre-started VMM would.
      if (idleMs > 0) { await api(vmm.apiSock, 'GET', '/'); await sleep(idleMs); }
      await bootGuest(vmm, elf, { memMib: 128 });
      await con.waitFor('first-insn ready\n');
      const m = (await api(vmm.apiSock, 'GET', '/metrics')).body as {
        timing_ms: { instance_start: number; first_vcpu_entry: number; first_guest_exit: number };
        vm: { vcpus: Array<{ firstExitReason: string; firstExitAddr: number }> };
      };
      const v0 = m.vm.vcpus[0]!;
      if (v0.firstExitReason !== 'IO' || v0.firstExitAddr !== 0x80) throw new Error(`first exit was ${v0.firstExitReason} at ${v0.firstExitAddr}, not the guest's first instruction`);
      const t = m.timing_ms;
      toEntry.push(t.first_vcpu_entry - t.instance_start);
      toExit.push(t.first_guest_exit - t.instance_start);
      entryToExit.push(t.first_guest_exit - t.first_vcpu_entry);
      con.write('\n');
      await vmm.exited;
      con.close();
    } finally {
      await vmm.cleanup();
    }
  }
  return { toEntry, toExit, entryToExit };
}

/** PUT InstanceStart → first console byte of the echo guest; also the API call's own latency, and memory. */
async function bootToSerial(echoElf: string): Promise<{ startApi: number[]; firstByte: number[]; rssBeyond: number[]; pssBeyond: number[]; anonBeyond: number[]; rss: number[] }> {
  const startApi: number[] = [], firstByte: number[] = [], rssBeyond: number[] = [], pssBeyond: number[] = [], anonBeyond: number[] = [], rss: number[] = [];
  const memMib = 128;
  for (let i = 0; i < RUNS; i++) {
    const vmm = await startVmm();
    try {
      const con = await ConsoleClient.connect(vmm.consoleSock);
      await api(vmm.apiSock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: memMib });
      await api(vmm.apiSock, 'PUT', '/boot-source', { kernel_image_path: echoElf, boot_args: 'console=ttyS0' });
      let first = 0n;
      con.sock.once('data', () => { first = process.hrtime.bigint(); });
      const t0 = process.hrtime.bigint();
      await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'InstanceStart' });
      startApi.push(Number(process.hrtime.bigint() - t0) / 1e6);
      await con.waitFor('echo ready\n');
      firstByte.push(Number(first - t0) / 1e6);
      await sleep(200);
      // RSS of the whole process minus the guest RAM pages resident (the VMM counts them with mincore()).
      const total = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${vmm.child.pid}/status`, 'utf8'))![1]) * 1024;
      const met = (await api(vmm.apiSock, 'GET', '/metrics')).body as { vm: { guestRamResidentBytes: number } };
      rss.push(total / 2 ** 20);
      rssBeyond.push((total - met.vm.guestRamResidentBytes) / 2 ** 20);
      anonBeyond.push((anonBytes(vmm.child.pid!) - met.vm.guestRamResidentBytes) / 2 ** 20);
      // Guest RAM is private anonymous memory: its PSS is its RSS.
      pssBeyond.push((pssBytes(vmm.child.pid!) - met.vm.guestRamResidentBytes) / 2 ** 20);
      con.write('poweroff\n');
      await vmm.exited;
      con.close();
    } finally {
      await vmm.cleanup();
    }
  }
  return { startApi, firstByte, rssBeyond, pssBeyond, anonBeyond, rss };
}

function tscMhz(): number {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** N port writes from ring 0 and N MMIO writes from ring 3 to unclaimed addresses; rates from the guest's TSC. */
async function exitRates(exitsElf: string, n: number): Promise<{ pio: number; mmio: number }> {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, exitsElf, { bootArgs: `console=ttyS0 exits=${n}` });
    await con.waitFor(/cycles pio=\d+ mmio=\d+\n/, 120_000);
    const m = /cycles pio=(\d+) mmio=(\d+)\n/.exec(con.text)!;
    const mhz = tscMhz();
    await vmm.exited;
    con.close();
    return { pio: n / (Number(m[1]) / (mhz * 1e6)), mmio: n / (Number(m[2]) / (mhz * 1e6)) };
  } finally {
    await vmm.cleanup();
  }
}

/** The same MMIO stores with an ioeventfd on the address: KVM completes them without leaving the kernel. */
async function ioeventfdRate(exitsElf: string, n: number): Promise<number> {
  const { buildMachine } = await import('../src/vmm/builder.js');
  const { createLogger } = await import('../src/common/log.js');
  const { VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE } = await import('../src/vmm/layout.js');
  let out = '';
  const m = await buildMachine({ vcpus: 1, memBytes: 32 * 2 ** 20, kernel: exitsElf, cmdline: `console=ttyS0 exits=${n}` }, createLogger('bench', 'silent'), (b) => { out += Buffer.from(b).toString('latin1'); });
  const h = m.devices.ioEventFd(VIRTIO_MMIO_BASE + 7 * VIRTIO_MMIO_SIZE, 4, undefined, () => {});
  await m.start();
  await m.exited;
  h?.close();
  m.close();
  const mm = /cycles pio=(\d+) mmio=(\d+)\n/.exec(out);
  if (!h || !mm) return NaN;
  return n / (Number(mm[2]) / (tscMhz() * 1e6));
}

/** The host's load average, 1/5/15 min. */
const loadAvg = () => os.loadavg().map((l) => l.toFixed(2)).join(' / ');

const fmt = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');
const p = (s: number[], q: number, d = 1) => fmt(percentile(s, q), d);

async function main(): Promise<void> {
  if (!kvmUsable) {
    writeSection('vmm', '## hangar-vmm\n\nNot measured: no usable /dev/kvm on this host.');
    return;
  }
  const loadBefore = loadAvg();
  const probe = await probeKvm();
  const echo = buildGuest('echo');
  const exits = buildGuest('exits');
  const firstInsnElf = buildGuest('first-insn');
  const starts = await processReady(qemuUsable() ? ['vmm', 'http', 'net', 'qemu'] : ['vmm', 'http', 'net'], START_RUNS);
  const ready = starts.vmm;
  const bare = starts.http;
  const first = await firstInstruction(firstInsnElf, 0);
  const warm = await firstInstruction(firstInsnElf, 300);
  const boot = await bootToSerial(echo);
  const n = Number(process.env.VMM_BENCH_EXITS ?? 20000);
  const rates = await exitRates(exits, n);
  const ioev = await ioeventfdRate(exits, n);
  const loadAfter = loadAvg();
  const md = `## hangar-vmm (micro engine)

KVM on this host: **${probe.kind}** (${probe.detail}).
${RUNS} runs each; p50 / p95. Host load average (1/5/15 min) before: ${loadBefore}, after: ${loadAfter}: the host is
shared, and start-up wall times swing with its load; the CPU figures much less.

| figure | hangar-vmm p50 | p95 | Firecracker (published) |
|---|---|---|---|
| process start → control socket answering (wall; ${START_RUNS} runs) | ${p(ready.wall, 50)} ms | ${p(ready.wall, 95)} ms | ~12 ms wall |
| … CPU used by the VMM until then (all its threads) | ${p(ready.cpu, 50)} ms | ${p(ready.cpu, 95)} ms | ≤ 8 CPU ms |
| … RSS then | ${p(ready.rss, 50)} MiB | ${p(ready.rss, 95)} MiB | — |
| floor: bare Node HTTP server on a Unix socket, same flags (wall / CPU / RSS) | ${p(bare.wall, 50)} ms / ${p(bare.cpu, 50)} ms / ${p(bare.rss, 50)} MiB | ${p(bare.wall, 95)} ms / ${p(bare.cpu, 95)} ms / ${p(bare.rss, 95)} MiB | — |
| floor: bare Node \`net\` server writing a canned HTTP answer (wall / CPU) | ${p(starts.net.wall, 50)} ms / ${p(starts.net.cpu, 50)} ms | ${p(starts.net.wall, 95)} ms / ${p(starts.net.cpu, 95)} ms | — |
| floor: \`node -e 0\`, spawn → exit | ${p(starts.nodeExit, 50)} ms | ${p(starts.nodeExit, 95)} ms | — |
| for comparison: QEMU \`-M microvm -accel kvm -nodefaults -S\`, spawn → QMP answer (wall / CPU / RSS) | ${starts.qemu ? `${p(starts.qemu.wall, 50)} ms / ${p(starts.qemu.cpu, 50)} ms / ${p(starts.qemu.rss, 50)} MiB` : 'no QEMU'} | ${starts.qemu ? `${p(starts.qemu.wall, 95)} ms / ${p(starts.qemu.cpu, 95)} ms / ${p(starts.qemu.rss, 95)} MiB` : ''} | — |
| InstanceStart → first guest instruction, cold VMM (configured as soon as its socket exists; VMM's clock) | ${p(first.toExit, 50, 2)} ms | ${p(first.toExit, 95, 2)} ms | — |
| … of which InstanceStart → first KVM_RUN (VM built, kernel loaded, vCPU thread up) | ${p(first.toEntry, 50, 2)} ms | ${p(first.toEntry, 95, 2)} ms | — |
| … of which first KVM_RUN → first exit back in the vCPU thread | ${p(first.entryToExit, 50, 3)} ms | ${p(first.entryToExit, 95, 3)} ms | — |
| InstanceStart → first guest instruction, warm VMM (idle 300 ms after its first answer) | ${p(warm.toExit, 50, 2)} ms | ${p(warm.toExit, 95, 2)} ms | — |
| … of which InstanceStart → first KVM_RUN | ${p(warm.toEntry, 50, 2)} ms | ${p(warm.toEntry, 95, 2)} ms | — |
| PUT InstanceStart answered (client's clock) | ${p(boot.startApi, 50)} ms | ${p(boot.startApi, 95)} ms | — |
| InstanceStart → first serial byte of a test guest (client's clock; ring-0 setup emulated here) | ${p(boot.firstByte, 50)} ms | ${p(boot.firstByte, 95)} ms | ≤ 125 ms to guest /sbin/init (minimal Linux) |
| VMM memory beyond guest RAM (RSS − guest RAM mapping RSS) | ${p(boot.rssBeyond, 50)} MiB | ${p(boot.rssBeyond, 95)} MiB | ≤ 5 MiB |
| VMM memory beyond guest RAM by PSS (shared pages divided among the processes mapping them) | ${p(boot.pssBeyond, 50)} MiB | ${p(boot.pssBeyond, 95)} MiB | ≤ 5 MiB |
| … of it anonymous memory, i.e. not Node's binary shared with other processes | ${p(boot.anonBeyond, 50)} MiB | ${p(boot.anonBeyond, 95)} MiB | — |
| whole process RSS, 128 MiB guest (test guest touches little RAM) | ${p(boot.rss, 50)} MiB | ${p(boot.rss, 95)} MiB | — |
| port-I/O exits/s, 1 vCPU (\`out\` from ring 0, unclaimed port) | ${fmt(rates.pio, 0)} /s | | — |
| MMIO exits/s, 1 vCPU (store from ring 3, unclaimed address) | ${fmt(rates.mmio, 0)} /s | | — |
| MMIO stores/s with an ioeventfd on the address (no exit to user space) | ${fmt(ioev, 0)} /s | | — |

VMM process flags: \`${VMM_NODE_FLAGS.join(' ') || '(none)'}\` (src/vmm/process-flags.ts).

"First guest instruction" is measured inside the VMM: from receiving
InstanceStart to the return of the boot vCPU's first \`KVM_RUN\` (monotonic
clock, read in the vCPU thread), for a guest whose entry point is an \`out\`
to port 0x80, so that return is the first instruction exiting (the bench
checks the exit was that port write). It includes the exit's trip back to
the vCPU thread, not the device model's answer. On this host the \`out\` runs
in the nested host's ring-0 emulator. A cold VMM is configured the moment its
socket exists, so InstanceStart waits for modules and a vCPU thread still
loading; a warm one (idle after its first API answer) has preloaded the machine
model and one vCPU thread (src/vmm/main.ts), so InstanceStart only builds the VM.

Notes: the VMM is a Node.js process, so most of its start-up time and
memory is the runtime itself (compare the bare Node line; most of the RSS
is Node's own binary, shared between processes), plus one V8 isolate per
vCPU worker thread. Each
port-I/O or MMIO exit that reaches a device model is a round trip from the
vCPU thread to the device thread (SharedArrayBuffer mailbox + Atomics.wait);
virtio queue notifications pay it too (MMIO exits on QueueNotify); an ioeventfd
lets KVM complete the store without it (the ioeventfd line), but virtio uses one
only with HANGAR_VIRTIO_IOEVENTFD=1 (docs/virtio.md says why).
On a nested KVM that emulates guest ring 0, the port-I/O figure includes the
emulation of the \`out\` instruction itself.`;
  const file = writeSection('vmm', md);
  process.stdout.write(`${md}\n\nwritten to ${file}\n`);
}

void main();
