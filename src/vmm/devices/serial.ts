/**
 * A 16550A-compatible UART (8250 family) on 8 I/O ports: console output,
 * interrupt-driven console input, the loopback mode Linux's driver probes
 * with, and a 16-byte receive FIFO fed from a bounded host-side queue.
 * Transmission is instantaneous, so the transmitter is always empty.
 *
 * THR writes and LSR reads can be served on the vCPU threads (serial-fast.ts,
 * enabled by fastPath()): this model then drains the bytes they transmitted
 * before it handles any register, raises the THR-empty interrupt for them,
 * and keeps the fast path's mirror (on/off, data ready) current.
 */
import type { DeviceMetrics, IrqLine, PioDevice } from './device.js';
import { SerialFastPathHost } from './serial-fast.js';
import { bool, bytes, int, obj, onlyKeys } from '../snapshot/check.js';

const RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;
const IER_RDI = 0x01, IER_THRI = 0x02, IER_RLSI = 0x04, IER_MSI = 0x08;
const IIR_NONE = 0x01, IIR_MSI = 0x00, IIR_THRI = 0x02, IIR_RDI = 0x04, IIR_FIFO = 0xc0;
const LCR_DLAB = 0x80;
const LSR_DR = 0x01, LSR_THRE = 0x20, LSR_TEMT = 0x40;
const MCR_LOOP = 0x10;
const FCR_ENABLE = 0x01, FCR_CLEAR_RX = 0x02;
/** Host bytes waiting for the guest beyond this are dropped (and counted). */
const RX_QUEUE_MAX = 64 * 1024;

export interface SerialState {
  ier: number;
  lcr: number;
  mcr: number;
  scr: number;
  dll: number;
  dlm: number;
  fifoEnabled: boolean;
  /** A THR-empty interrupt is owed to the guest (cleared by reading IIR or writing THR). */
  threPending: boolean;
  rx: number[];
  msrDelta: number;
}

export class Serial implements PioDevice {
  readonly name: string;
  state: SerialState = { ier: 0, lcr: 0x03, mcr: 0x08, scr: 0, dll: 0x0c, dlm: 0, fifoEnabled: false, threPending: false, rx: [], msrDelta: 0 };
  private txBytes = 0;
  private rxBytes = 0;
  private rxDropped = 0;
  private interrupts = 0;
  private lastLevel = false;

  private readonly fast: SerialFastPathHost;

  constructor(private readonly irq: IrqLine, private readonly onOutput: (bytes: Uint8Array) => void, name = 'serial0') {
    this.name = name;
    this.fast = new SerialFastPathHost((bytes) => this.transmittedElsewhere(bytes));
    this.syncFastPath();
  }

  /**
   * The shared memory vCPU threads serve THR and LSR from (SerialFastPathClient); from now on
   * this model listens for the bytes they transmit.
   */
  fastPath(): SharedArrayBuffer {
    this.fast.listen();
    return this.fast.sab;
  }

  /** Host → guest: queues console input and raises the receive interrupt; returns how many bytes fit. */
  input(bytes: Uint8Array): number {
    // What does not fit stays with the caller, which stops reading its source until it does.
    const n = Math.min(bytes.length, Math.max(0, RX_QUEUE_MAX - this.state.rx.length));
    for (let i = 0; i < n; i++) this.state.rx.push(bytes[i]!);
    // Mirror first: a vCPU may take the interrupt at once and poll LSR on its own thread.
    this.syncFastPath();
    this.updateIrq();
    return n;
  }

  pioRead(offset: number, data: Uint8Array): void {
    this.fast.drain(); // bytes the fast path took came first
    data.fill(0);
    data[0] = this.readReg(offset);
    this.syncFastPath();
    this.updateIrq();
  }

  pioWrite(offset: number, data: Uint8Array): void {
    this.fast.drain();
    this.writeReg(offset, data[0] ?? 0);
    this.syncFastPath();
    this.updateIrq();
  }

  /** A copy of the UART's registers and receive queue, for a snapshot (drains the fast path first). */
  saveState(): SerialState {
    this.fast.drain();
    return { ...this.state, rx: [...this.state.rx] };
  }

  /** Puts the UART in a snapshot's state (checked field by field: the file is untrusted), then drives its IRQ line to match. */
  restoreState(v: unknown): void {
    const w = `device ${this.name}`;
    const o = obj(v, w);
    onlyKeys(o, ['ier', 'lcr', 'mcr', 'scr', 'dll', 'dlm', 'fifoEnabled', 'threPending', 'rx', 'msrDelta'], w);
    this.state = {
      ier: int(o.ier, 0, 0x0f, `${w} ier`), lcr: int(o.lcr, 0, 0xff, `${w} lcr`), mcr: int(o.mcr, 0, 0x1f, `${w} mcr`), scr: int(o.scr, 0, 0xff, `${w} scr`),
      dll: int(o.dll, 0, 0xff, `${w} dll`), dlm: int(o.dlm, 0, 0xff, `${w} dlm`), fifoEnabled: bool(o.fifoEnabled, `${w} fifoEnabled`),
      threPending: bool(o.threPending, `${w} threPending`), rx: bytes(o.rx, RX_QUEUE_MAX, `${w} rx`), msrDelta: int(o.msrDelta, 0, 0x0f, `${w} msrDelta`),
    };
    this.syncFastPath();
    this.updateIrq();
  }

  /** Takes what the vCPU threads transmitted and not yet handed over (call when the VM ends, before the console closes). */
  flushFastPath(): void {
    this.fast.drain();
  }

  /** Bytes the guest wrote to THR through the fast path: out to the console, and the transmitter is empty again. */
  private transmittedElsewhere(bytes: Uint8Array): void {
    this.txBytes += bytes.length;
    this.onOutput(bytes);
    this.state.threPending = true;
    this.updateIrq();
  }

  /** THR may go the fast way unless the divisor latch or loopback redirects it. */
  private syncFastPath(): void {
    const s = this.state;
    this.fast.mirror((s.lcr & LCR_DLAB) === 0 && (s.mcr & MCR_LOOP) === 0, s.rx.length > 0);
  }

  private readReg(off: number): number {
    const s = this.state;
    const dlab = (s.lcr & LCR_DLAB) !== 0;
    switch (off) {
      case RBR_THR:
        if (dlab) return s.dll;
        if (s.rx.length > 0) { this.rxBytes++; return s.rx.shift()!; }
        return 0;
      case IER: return dlab ? s.dlm : s.ier;
      case IIR_FCR: {
        const id = this.pendingId();
        if (id === IIR_THRI) s.threPending = false; // reading IIR acknowledges THRE
        return id | (s.fifoEnabled ? IIR_FIFO : 0);
      }
      case LCR: return s.lcr;
      case MCR: return s.mcr;
      case LSR: return (s.rx.length > 0 ? LSR_DR : 0) | LSR_THRE | LSR_TEMT;
      case MSR: {
        let msr: number;
        if (s.mcr & MCR_LOOP) {
          // Loopback: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
          msr = ((s.mcr & 0x02) << 3) | ((s.mcr & 0x01) << 5) | ((s.mcr & 0x04) << 4) | ((s.mcr & 0x08) << 4);
        } else {
          msr = 0xb0; // DCD, DSR, CTS asserted: a cable is always attached.
        }
        msr |= s.msrDelta;
        s.msrDelta = 0;
        return msr;
      }
      case SCR: return s.scr;
      default: return 0xff;
    }
  }

  private writeReg(off: number, v: number): void {
    const s = this.state;
    const dlab = (s.lcr & LCR_DLAB) !== 0;
    switch (off) {
      case RBR_THR:
        if (dlab) { s.dll = v; return; }
        if (s.mcr & MCR_LOOP) {
          if (s.rx.length < RX_QUEUE_MAX) s.rx.push(v);
        } else {
          this.txBytes++;
          this.onOutput(Uint8Array.of(v));
        }
        s.threPending = true;
        return;
      case IER:
        if (dlab) { s.dlm = v; return; }
        // Enabling the THR interrupt while the transmitter is empty owes one at once.
        if ((v & IER_THRI) && !(s.ier & IER_THRI)) s.threPending = true;
        s.ier = v & 0x0f;
        return;
      case IIR_FCR:
        s.fifoEnabled = (v & FCR_ENABLE) !== 0;
        if (v & FCR_CLEAR_RX) s.rx.length = 0;
        return;
      case LCR: s.lcr = v; return;
      case MCR: s.mcr = v & 0x1f; return;
      case SCR: s.scr = v; return;
      default: return;
    }
  }

  private pendingId(): number {
    const s = this.state;
    if ((s.ier & IER_RDI) && s.rx.length > 0) return IIR_RDI;
    if ((s.ier & IER_THRI) && s.threPending) return IIR_THRI;
    if ((s.ier & IER_MSI) && s.msrDelta) return IIR_MSI;
    void IER_RLSI;
    return IIR_NONE;
  }

  private updateIrq(): void {
    const level = this.pendingId() !== IIR_NONE;
    if (level && !this.lastLevel) this.interrupts++;
    this.lastLevel = level;
    this.irq.set(level);
  }

  metrics(): DeviceMetrics {
    const fast = this.fast.counters();
    return { txBytes: this.txBytes, rxBytes: this.rxBytes, rxDropped: this.rxDropped, rxQueued: this.state.rx.length, interrupts: this.interrupts, fastTxBytes: fast.fastTx, fastLsrReads: fast.fastLsr };
  }
}
