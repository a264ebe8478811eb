/**
 * Runs a machine's vCPUs: one worker thread per vCPU loops on KVM_RUN
 * (vcpu-worker.ts) and forwards port-I/O and MMIO exits through its
 * SharedArrayBuffer mailbox (vcpu-protocol.ts); this side answers them on
 * the device thread from the buses, so device models need no locking.
 *
 * Commands go through each vCPU's control word: RUN, PAUSE, STOP. A kick
 * (kvm_run.immediate_exit plus a signal to the thread) makes a vCPU leave
 * KVM_RUN promptly to read it. Pausing is a barrier: it completes when every
 * vCPU has reported 'paused' or has exited; ending releases it too.
 */
import type { Worker } from 'node:worker_threads';
import { EXIT_NAMES } from '../kvm/abi.js';
import type { Vcpu } from '../kvm/kvm.js';
import { libc } from '../kvm/libc.js';
import { KvmRunView } from '../kvm/run.js';
import type { MmioBus, PioBus } from './bus.js';
import type { MachineExit } from './machine.js';
import type { GuestRam } from './memory.js';
import { translate } from './pagewalk.js';
import type { BlkFastShare } from './virtio/blk-fast.js';
import type { VirtioIrqShare } from './virtio/interrupt-state.js';
import type { NetFastShare } from './virtio/net-fast.js';
import { VirtqueueError } from './virtio/queue.js';
import { startVcpuThread } from './vcpu-thread.js';
import {
  CMD_PAUSE, CMD_RUN, CMD_STOP, COUNTER_EXITS, COUNTER_HANDLE_MS, COUNTER_FIRST_ENTRY_NS, COUNTER_FIRST_EXIT_ADDR, COUNTER_FIRST_EXIT_NS, COUNTER_FIRST_EXIT_REASON, COUNTER_MMIO, COUNTER_PIO, COUNTER_WORDS, CTL_CMD, CTL_RELEASED, CTL_WORDS, KIND_PIO, KIND_VIRTIO_USED, MB_ADDR_HI, MB_ADDR_LO,
  MB_BYTES, MB_COUNT, MB_DATA_OFFSET, MB_DATA_SIZE, MB_KIND, MB_RESPONSE, MB_SIZE, MB_STATE, MB_WRITE, type VcpuWorkerData, type WorkerMessage,
} from './vcpu-protocol.js';

interface VcpuSlot {
  vcpu: Vcpu;
  run: KvmRunView;
  ctl: Int32Array;
  mb: Int32Array;
  mbData: Uint8Array;
  counters: Float64Array;
  worker?: Worker;
  thread?: bigint;
  paused: boolean;
  exited: boolean;
}

/** Start-up timestamps of one vCPU (monotonic ns, as process.hrtime.bigint()); see firstRun(). */
export interface FirstRun {
  entryNs?: bigint;
  exitNs?: bigint;
  exitReason?: number;
  exitAddr?: number;
}

/** A device whose queue the vCPU threads serve (virtio/blk-fast.ts, net-fast.ts), and where their messages about it go. */
export interface FastVirtioQueue<S = BlkFastShare | NetFastShare> {
  share: S;
  /** The driver wants an interrupt for requests a vCPU thread served. */
  used(): void;
  /** A vCPU thread found the ring broken. */
  fail(err: VirtqueueError): void;
}

export interface VcpuRunnerEvents {
  /** A vCPU left its loop for a reason other than a STOP command, or its thread failed. */
  exit(exit: MachineExit): void;
  /** Every vCPU thread is gone (after stop(), or after each one exited by itself). */
  allExited(): void;
}

const KICK_SIGNAL = 'SIGUSR2';
const SIGUSR2 = 12;
let kickHandlerInstalled = false;

export class VcpuRunner {
  private readonly slots: VcpuSlot[] = [];
  private pauseWaiters: Array<() => void> = [];
  private stopping = false;
  private stragglers?: NodeJS.Timeout;
  /** Fast-path devices as the vCPU threads number them: drives, then NICs. */
  private fastQueues: FastVirtioQueue[] = [];

  constructor(private readonly buses: { mmio: MmioBus; pio: PioBus }, private readonly mem: GuestRam, private readonly events: VcpuRunnerEvents) {}

  /** Takes one created (and boot-configured) vCPU; its thread starts with start(). */
  add(vcpu: Vcpu): void {
    const mbSab = new SharedArrayBuffer(MB_BYTES);
    const slot: VcpuSlot = {
      vcpu, run: new KvmRunView(vcpu.runAddr, vcpu.runSize), ctl: new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4)), mb: new Int32Array(mbSab),
      mbData: new Uint8Array(mbSab, MB_DATA_OFFSET, MB_DATA_SIZE), counters: new Float64Array(new SharedArrayBuffer(COUNTER_WORDS * 8)), paused: false, exited: false,
    };
    slot.counters.fill(-1, COUNTER_FIRST_EXIT_REASON, COUNTER_FIRST_EXIT_ADDR + 1);
    this.slots.push(slot);
  }

  /** The vCPUs in index order (their state is read and written for snapshots while every thread is parked). */
  vcpuList(): Vcpu[] {
    return this.slots.map((s) => s.vcpu);
  }

  get count(): number {
    return this.slots.length;
  }

  /** Starts every vCPU thread, holding; resolves when all are ready. release() lets them run. */
  /** `shared`: memory every vCPU thread gets besides its own (COM1's fast path, devices/serial-fast.ts). */
  /**
   * `fast`: drives and NICs whose queues the vCPU threads serve themselves (virtio/blk-fast.ts,
   * net-fast.ts), and the virtio transports whose interrupt registers they answer (interrupt-state.ts).
   */
  async start(
    shared: Pick<VcpuWorkerData, 'serialFast'> = {},
    fast: { blk?: FastVirtioQueue<BlkFastShare>[]; net?: FastVirtioQueue<NetFastShare>[]; irqs?: VirtioIrqShare[] } = {},
  ): Promise<void> {
    const blk = fast.blk ?? [], net = fast.net ?? [], irqs = fast.irqs ?? [];
    this.fastQueues = [...blk, ...net];
    const virtioFast: VcpuWorkerData['virtioFast'] = blk.length + net.length + irqs.length > 0
      ? { ram: { hostAddr: this.mem.hostAddr, size: this.mem.size }, blk: blk.map((b) => b.share), net: net.map((n) => n.share), irqs }
      : undefined;
    if (!kickHandlerInstalled) {
      // A handler must exist so the kick signal interrupts KVM_RUN instead of killing the process.
      process.on(KICK_SIGNAL, () => {});
      kickHandlerInstalled = true;
    }
    await Promise.all(this.slots.map((s, index) => {
      const data: VcpuWorkerData = {
        index, fd: s.vcpu.fd, runAddr: s.vcpu.runAddr, runSize: s.vcpu.runSize,
        ctl: s.ctl.buffer as SharedArrayBuffer, mailbox: s.mb.buffer as SharedArrayBuffer, counters: s.counters.buffer as SharedArrayBuffer,
        ...shared, ...(virtioFast ? { virtioFast } : {}),
      };
      const w = startVcpuThread(data);
      s.worker = w;
      return new Promise<void>((resolve, reject) => {
        w.on('message', (m: WorkerMessage) => {
          if (m.t === 'ready') { s.thread = BigInt(m.thread); resolve(); } else this.onWorkerMessage(s, m);
        });
        w.once('error', (e) => {
          reject(e);
          this.events.exit({ reason: 'crashed', detail: `vCPU ${index} thread failed: ${e.message}`, vcpu: index });
        });
        w.once('exit', () => {
          if (!s.exited) { s.exited = true; this.checkAllExited(); }
        });
      });
    }));
  }

  /** Lets every vCPU run (first start, or resume after a pause). */
  release(): void {
    for (const s of this.slots) { s.paused = false; Atomics.store(s.ctl, CTL_CMD, CMD_RUN); Atomics.notify(s.ctl, CTL_CMD); }
  }

  /** Asks every vCPU to pause; resolves once all have paused or exited (or the machine is ending). */
  pause(): Promise<void> {
    const done = new Promise<void>((r) => this.pauseWaiters.push(r));
    this.setCommand(CMD_PAUSE);
    this.checkAllPaused();
    return done;
  }

  /** Stops every vCPU thread for good; allExited fires once they are all gone. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.setCommand(CMD_STOP);
    this.releasePauseWaiters();
    if (this.slots.every((s) => !s.worker)) { this.events.allExited(); return; }
    // Stragglers: re-kick until all threads are out (a signal can land just before KVM_RUN is entered).
    this.stragglers = setInterval(() => this.kick(), 50);
    this.stragglers.unref();
    this.checkAllExited();
  }

  private onWorkerMessage(s: VcpuSlot, m: WorkerMessage): void {
    switch (m.t) {
      case 'io': this.serviceMailbox(s); break;
      case 'paused': s.paused = true; this.checkAllPaused(); break;
      case 'resumed': s.paused = false; break;
      case 'virtio-fail': this.fastQueues[m.slot]?.fail(new VirtqueueError(m.message, m.details)); break;
      case 'exit': {
        s.exited = true;
        // From here on this thread is never kicked again; let it end.
        Atomics.store(s.ctl, CTL_RELEASED, 1);
        Atomics.notify(s.ctl, CTL_RELEASED);
        if (m.reason !== 'stopped') {
          const exit: MachineExit = { reason: m.reason, detail: m.detail, vcpu: m.index };
          if (m.rip) exit.rip = m.rip;
          let insn = m.insn ?? [];
          if (insn.length === 0 && m.rip && m.cr3 !== undefined) insn = this.readInstruction(BigInt('0x' + m.rip), BigInt('0x' + m.cr3), m.paging ?? true);
          if (insn.length > 0) exit.insn = insn;
          if (m.reason === 'crashed' && m.rip) {
            exit.detail += ` at rip 0x${m.rip}` + (insn.length ? ` (instruction bytes: ${insn.map((b) => b.toString(16).padStart(2, '0')).join(' ')})` : '');
          }
          this.events.exit(exit);
        }
        this.checkAllPaused();
        this.checkAllExited();
        break;
      }
      default: break;
    }
  }

  private readInstruction(rip: bigint, cr3: bigint, paging: boolean): number[] {
    const gpa = paging ? translate(this.mem, cr3, rip) : rip;
    if (gpa === null) return [];
    const n = Math.max(0, Math.min(15, this.mem.size - Number(gpa)));
    try { return [...this.mem.slice(gpa, n)]; } catch { return []; }
  }

  /** Answers one forwarded access: dispatch to the bus, store the result, wake the vCPU. */
  private serviceMailbox(s: VcpuSlot): void {
    const mb = s.mb;
    if (Atomics.load(mb, MB_STATE) !== 1) return;
    const write = mb[MB_WRITE] === 1;
    const addr = (mb[MB_ADDR_LO]! >>> 0) + (mb[MB_ADDR_HI]! >>> 0) * 2 ** 32;
    const size = mb[MB_SIZE]!;
    const count = mb[MB_COUNT]!;
    if (mb[MB_KIND] === KIND_VIRTIO_USED) {
      this.fastQueues[addr]?.used();
    } else if (mb[MB_KIND] === KIND_PIO) {
      for (let i = 0; i < count; i++) {
        const d = s.mbData.subarray(i * size, (i + 1) * size);
        if (write) this.buses.pio.write(addr, d); else this.buses.pio.read(addr, d);
      }
    } else {
      const d = s.mbData.subarray(0, size);
      if (write) this.buses.mmio.write(addr, d); else this.buses.mmio.read(addr, d);
    }
    Atomics.store(mb, MB_STATE, MB_RESPONSE);
    Atomics.notify(mb, MB_STATE);
  }

  /** Makes every vCPU leave KVM_RUN promptly: immediate_exit covers the race where it was about to enter. */
  private kick(): void {
    for (const s of this.slots) {
      if (s.exited) continue;
      s.run.immediateExit = true;
      if (s.thread !== undefined) libc.pthreadKill(s.thread, SIGUSR2);
      Atomics.notify(s.ctl, CTL_CMD);
    }
  }

  private setCommand(cmd: number): void {
    for (const s of this.slots) { Atomics.store(s.ctl, CTL_CMD, cmd); Atomics.notify(s.ctl, CTL_CMD); }
    this.kick();
  }

  private checkAllPaused(): void {
    if (this.pauseWaiters.length > 0 && this.slots.every((x) => x.paused || x.exited)) this.releasePauseWaiters();
  }

  private releasePauseWaiters(): void {
    const w = this.pauseWaiters;
    this.pauseWaiters = [];
    w.forEach((f) => f());
  }

  private checkAllExited(): void {
    if (!this.stopping || !this.slots.every((s) => s.exited || !s.worker)) return;
    if (this.stragglers) { clearInterval(this.stragglers); this.stragglers = undefined; }
    this.events.allExited();
  }

  /**
   * Start-up timestamps of one vCPU: its first KVM_RUN call, and the first time KVM_RUN came
   * back with an exit, with that exit's reason (KVM_EXIT_*) and port or address. Undefined
   * while it has not happened.
   */
  firstRun(index: number): FirstRun {
    const c = this.slots[index]?.counters;
    if (!c) return {};
    const at = (w: number) => (c[w]! > 0 ? BigInt(c[w]!) : undefined);
    const r: FirstRun = {};
    const entryNs = at(COUNTER_FIRST_ENTRY_NS), exitNs = at(COUNTER_FIRST_EXIT_NS);
    if (entryNs !== undefined) r.entryNs = entryNs;
    if (exitNs !== undefined) { r.exitNs = exitNs; r.exitReason = c[COUNTER_FIRST_EXIT_REASON]!; r.exitAddr = c[COUNTER_FIRST_EXIT_ADDR]!; }
    return r;
  }

  metrics(): Array<Record<string, unknown>> {
    return this.slots.map((s, i) => {
      const f = this.firstRun(i);
      return {
        index: i, exits: s.counters[COUNTER_EXITS], pioExits: s.counters[COUNTER_PIO], mmioExits: s.counters[COUNTER_MMIO],
        exitHandlingMs: Math.round(s.counters[COUNTER_HANDLE_MS]!),
        firstExitReason: f.exitReason === undefined ? null : (EXIT_NAMES[f.exitReason] ?? `EXIT_${f.exitReason}`), firstExitAddr: f.exitAddr ?? null,
      };
    });
  }

  /** Closes the vCPU fds; call once every thread is gone. */
  close(): void {
    if (this.stragglers) { clearInterval(this.stragglers); this.stragglers = undefined; }
    for (const s of this.slots) s.vcpu.close();
  }
}
