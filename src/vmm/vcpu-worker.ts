/**
 * One vCPU's thread: loops on KVM_RUN and forwards port-I/O and MMIO exits
 * to the device thread through its mailbox. It stops cooperatively: the
 * device thread sets the control word, sets kvm_run.immediate_exit and
 * sends this thread a signal, which makes a blocked KVM_RUN return EINTR
 * at once; the loop then reads the control word.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { EXIT, INTERNAL_SUBERROR, IO_DIRECTION, SYSTEM_EVENT } from '../kvm/abi.js';
import { Vcpu, kvmIrqLine } from '../kvm/kvm.js';
import { libc, errnoName } from '../kvm/libc.js';
import { KvmRunView, emulationFailureBytes } from '../kvm/run.js';
import { SerialFastPathClient } from './devices/serial-fast.js';
import { SERIAL_COM1_PORT } from './layout.js';
import { GuestRam } from './memory.js';
import { BlkFastPathClient } from './virtio/blk-fast.js';
import { VirtioInterruptState } from './virtio/interrupt-state.js';
import { INT_VRING, REG } from './virtio/mmio.js';
import { NetFastPathClient } from './virtio/net-fast.js';
import type { FastNotifyResult } from './virtio/queue-fast-path.js';
import {
  CMD_HOLD, CMD_PAUSE, CMD_RUN, CMD_STOP, CTL_CMD, CTL_RELEASED, COUNTER_EXITS, COUNTER_HANDLE_MS, COUNTER_FIRST_ENTRY_NS, COUNTER_FIRST_EXIT_ADDR,
  COUNTER_FIRST_EXIT_NS, COUNTER_FIRST_EXIT_REASON, COUNTER_MMIO, COUNTER_PIO, KIND_MMIO, KIND_PIO, KIND_VIRTIO_USED, MB_ADDR_HI, MB_ADDR_LO,
  MB_COUNT, MB_DATA_OFFSET, MB_DATA_SIZE, MB_IDLE, MB_KIND, MB_REQUEST, MB_SIZE, MB_STATE, MB_WRITE, type VcpuExitReason, type VcpuWorkerData,
  type WorkerMessage,
} from './vcpu-protocol.js';

const port = parentPort!;
/**
 * A thread started ahead of time (prewarmVcpuThread in vcpu-thread.ts) has no workerData: it has
 * loaded its modules (the expensive part of starting a vCPU thread) and now waits to be given
 * its vCPU in one 'init' message.
 */
const data = (workerData as VcpuWorkerData | null) ?? await new Promise<VcpuWorkerData>((resolve) => {
  port.once('message', (m: { t: 'init'; data: VcpuWorkerData }) => resolve(m.data));
});
const vcpu = new Vcpu(data.index, data.fd, data.runAddr, data.runSize);
const run = new KvmRunView(data.runAddr, data.runSize);
const ctl = new Int32Array(data.ctl);
const mb = new Int32Array(data.mailbox);
const mbData = new Uint8Array(data.mailbox, MB_DATA_OFFSET, MB_DATA_SIZE);
const counters = new Float64Array(data.counters);
const serialFast = data.serialFast ? new SerialFastPathClient(data.serialFast, SERIAL_COM1_PORT) : undefined;
/**
 * Queues served here on their QUEUE_NOTIFY write (virtio/blk-fast.ts, net-fast.ts), by register
 * address; value: [slot (drives, then NICs, as the device thread numbers them), client, base].
 */
const fastQueues = new Map<number, [number, { notify(value: number, raise?: () => void): FastNotifyResult }, number]>();
/** virtio transports whose InterruptStatus reads and InterruptACK writes this thread answers (virtio/interrupt-state.ts), by base. */
const irqState = new Map<number, VirtioInterruptState>();
/** The same, by the registers' own addresses. */
const irqStatusRegs = new Map<number, VirtioInterruptState>();
const irqAckRegs = new Map<number, VirtioInterruptState>();
if (data.virtioFast) {
  const vf = data.virtioFast;
  const ram = GuestRam.attach(vf.ram.hostAddr, vf.ram.size);
  for (const s of vf.irqs) {
    const { vmFd, gsi } = s;
    const line = { set: (level: boolean) => kvmIrqLine(vmFd, gsi, level), pulse: () => { kvmIrqLine(vmFd, gsi, true); kvmIrqLine(vmFd, gsi, false); } };
    const st = new VirtioInterruptState(line, s.edge, s.words);
    irqState.set(s.base, st);
    irqStatusRegs.set(s.base + REG.INTERRUPT_STATUS, st);
    irqAckRegs.set(s.base + REG.INTERRUPT_ACK, st);
  }
  vf.blk.forEach((share, slot) => fastQueues.set(share.notifyAddr, [slot, new BlkFastPathClient(share, ram), share.notifyAddr - REG.QUEUE_NOTIFY]));
  vf.net.forEach((share, i) => fastQueues.set(share.notifyAddr, [vf.blk.length + i, new NetFastPathClient(share, ram), share.notifyAddr - REG.QUEUE_NOTIFY]));
}
const fastMmio = fastQueues.size + irqState.size > 0;
const NO_BYTES = new Uint8Array(0);
const EINTR = 4, EAGAIN = 11;
/** True until the guest has exited to us once (start-up timing, see COUNTER_FIRST_EXIT_NS). */
let firstExitPending = true;

/** Records when and why the guest first gave the CPU back. */
function recordFirstExit(): void {
  counters[COUNTER_FIRST_EXIT_NS] = Number(process.hrtime.bigint());
  const reason = run.exitReason;
  counters[COUNTER_FIRST_EXIT_REASON] = reason;
  counters[COUNTER_FIRST_EXIT_ADDR] = reason === EXIT.IO ? run.ioPort : reason === EXIT.MMIO ? run.mmioPhysAddr : -1;
  firstExitPending = false;
}

function post(m: WorkerMessage): void {
  port.postMessage(m);
}

/** Hands one access to the device thread and waits for its answer. */
function forward(kind: number, write: boolean, addr: number, size: number, count: number, bytes: Uint8Array): void {
  const len = size * count;
  if (write) mbData.set(bytes.subarray(0, len));
  mb[MB_KIND] = kind;
  mb[MB_WRITE] = write ? 1 : 0;
  mb[MB_ADDR_LO] = addr | 0;
  mb[MB_ADDR_HI] = Math.floor(addr / 2 ** 32) | 0;
  mb[MB_SIZE] = size;
  mb[MB_COUNT] = count;
  Atomics.store(mb, MB_STATE, MB_REQUEST);
  post({ t: 'io', index: data.index });
  while (Atomics.load(mb, MB_STATE) === MB_REQUEST) Atomics.wait(mb, MB_STATE, MB_REQUEST);
  if (!write) bytes.set(mbData.subarray(0, len));
  Atomics.store(mb, MB_STATE, MB_IDLE);
}

function readLe32(b: Uint8Array): number {
  return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
}

/**
 * A 4-byte MMIO access this thread may answer itself: a fast-path queue's QUEUE_NOTIFY write,
 * or a virtio transport's InterruptStatus read or InterruptACK write. False when it is none of
 * these, or the fast path declined (device not running, another queue): forward it.
 */
function serveFastMmio(addr: number, write: boolean, bytes: Uint8Array): boolean {
  if (!write) {
    const st = irqStatusRegs.get(addr);
    if (!st) return false;
    const v = st.status;
    bytes[0] = v & 0xff; bytes[1] = (v >>> 8) & 0xff; bytes[2] = (v >>> 16) & 0xff; bytes[3] = (v >>> 24) & 0xff;
    st.countFast('read');
    return true;
  }
  const ack = irqAckRegs.get(addr);
  if (ack) {
    ack.ack(readLe32(bytes));
    ack.countFast('ack');
    return true;
  }
  const entry = fastQueues.get(addr);
  if (!entry) return false;
  const [slot, client, base] = entry;
  const st = irqState.get(base);
  const r = client.notify(readLe32(bytes), st ? () => st.raise(INT_VRING) : undefined);
  if (r.kind === 'forward') return false;
  // The interrupt is up before the guest runs on: raised here, or (without the shared interrupt
  // state) by the device thread through a synchronous hand-off. A failure is reported in order
  // with everything this thread sends after it.
  if (r.kind === 'served') { if (r.interrupt) forward(KIND_VIRTIO_USED, true, slot, 0, 0, NO_BYTES); } else post({ t: 'virtio-fail', index: data.index, slot, message: r.message, details: r.details });
  return true;
}

function finish(reason: VcpuExitReason, detail: string, extra: Partial<Extract<WorkerMessage, { t: 'exit' }>> = {}): void {
  post({ t: 'exit', index: data.index, reason, detail, ...extra });
}

function describeCrash(): Partial<Extract<WorkerMessage, { t: 'exit' }>> {
  try {
    const r = vcpu.getRegs();
    const s = vcpu.getSregs();
    return { rip: r.rip.toString(16), cr3: s.cr3.toString(16), paging: (s.cr0 & 0x80000000n) !== 0n };
  } catch {
    return {};
  }
}

/**
 * A port-I/O or MMIO exit is finished by KVM only on the next KVM_RUN (an IN or an MMIO
 * read gets its value into the guest's register then). Before this vCPU parks for a pause,
 * enter once with immediate_exit set: KVM completes what is pending and returns EINTR
 * without running the guest, so a snapshot taken now holds finished instructions only.
 */
function completePendingExit(): void {
  run.immediateExit = true;
  vcpu.run();
  run.immediateExit = false;
}

function loop(): void {
  /** When the last exit came back from KVM_RUN (performance.now()), while it is being handled. */
  let exitAt = -1;
  for (;;) {
    const cmd = Atomics.load(ctl, CTL_CMD);
    if (cmd === CMD_STOP) { finish('stopped', 'stopped by the VMM'); return; }
    if (cmd === CMD_HOLD) { Atomics.wait(ctl, CTL_CMD, CMD_HOLD); continue; }
    if (cmd === CMD_PAUSE) {
      completePendingExit();
      post({ t: 'paused', index: data.index });
      while (Atomics.load(ctl, CTL_CMD) === CMD_PAUSE) Atomics.wait(ctl, CTL_CMD, CMD_PAUSE);
      if (Atomics.load(ctl, CTL_CMD) === CMD_RUN) post({ t: 'resumed', index: data.index });
      continue;
    }
    if (firstExitPending && counters[COUNTER_FIRST_ENTRY_NS] === 0) counters[COUNTER_FIRST_ENTRY_NS] = Number(process.hrtime.bigint());
    if (exitAt >= 0) counters[COUNTER_HANDLE_MS] = counters[COUNTER_HANDLE_MS]! + (performance.now() - exitAt);
    const r = vcpu.run();
    exitAt = performance.now();
    if (firstExitPending && r >= 0) recordFirstExit();
    if (r < 0) {
      const e = -r;
      if (e === EINTR || e === EAGAIN) { run.immediateExit = false; continue; }
      finish('crashed', `KVM_RUN failed: ${errnoName(e)}`, describeCrash());
      return;
    }
    counters[COUNTER_EXITS] = counters[COUNTER_EXITS]! + 1;
    switch (run.exitReason) {
      case EXIT.IO: {
        counters[COUNTER_PIO] = counters[COUNTER_PIO]! + 1;
        const size = run.ioSize, count = run.ioCount, off = run.ioDataOffset;
        if (size * count > MB_DATA_SIZE || off + size * count > data.runSize) { finish('crashed', `port I/O exit with impossible size ${size}×${count}`); return; }
        const io = run.bytes.subarray(off, off + size * count);
        if (serialFast?.handle(run.ioPort, run.ioDirection === IO_DIRECTION.OUT, size, count, io)) break; // console bytes: no round trip
        forward(KIND_PIO, run.ioDirection === IO_DIRECTION.OUT, run.ioPort, size, count, io);
        break;
      }
      case EXIT.MMIO: {
        counters[COUNTER_MMIO] = counters[COUNTER_MMIO]! + 1;
        const len = Math.min(8, run.mmioLen);
        if (len === 4 && fastMmio && serveFastMmio(run.mmioPhysAddr, run.mmioIsWrite, run.mmioData())) break;
        forward(KIND_MMIO, run.mmioIsWrite, run.mmioPhysAddr, len, 1, run.mmioData());
        break;
      }
      case EXIT.INTR:
        break;
      case EXIT.HLT:
        finish('poweroff', 'vCPU halted without an in-kernel irqchip');
        return;
      case EXIT.SHUTDOWN:
        finish('reboot', 'guest triple fault or shutdown (KVM_EXIT_SHUTDOWN)');
        return;
      case EXIT.SYSTEM_EVENT: {
        const t = run.systemEventType;
        if (t === SYSTEM_EVENT.SHUTDOWN) finish('poweroff', 'guest requested power off (system event)');
        else if (t === SYSTEM_EVENT.RESET) finish('reboot', 'guest requested reset (system event)');
        else finish('crashed', `guest crashed (system event ${t})`);
        return;
      }
      case EXIT.INTERNAL_ERROR: {
        const sub = run.internalSuberror;
        const d = run.internalData();
        const insn = sub === INTERNAL_SUBERROR.EMULATION ? emulationFailureBytes(d) : [];
        const name = sub === INTERNAL_SUBERROR.EMULATION ? 'emulation failure' : sub === INTERNAL_SUBERROR.DELIVERY_EV ? 'event delivery failure' : `suberror ${sub}`;
        finish('crashed', `KVM internal error: ${name}`, { ...describeCrash(), insn });
        return;
      }
      case EXIT.FAIL_ENTRY:
        finish('crashed', `KVM could not enter the guest (hardware entry failure reason 0x${run.failEntryReason.toString(16)})`, describeCrash());
        return;
      default:
        finish('crashed', `unexpected vCPU exit ${run.exitName}`, describeCrash());
        return;
    }
  }
}

post({ t: 'ready', index: data.index, thread: String(libc.pthreadSelf()) });
loop();
// Stay alive (and signal-safe) until the device thread has recorded our exit.
while (Atomics.load(ctl, CTL_RELEASED) === 0) Atomics.wait(ctl, CTL_RELEASED, 0, 1000);
// Drop the message port so the thread can end.
port.close();
void CMD_RUN;
