/**
 * Just enough of the i8042 keyboard controller for a guest to reset the
 * machine (command 0xFE on port 0x64, Linux's `reboot=k`) and for the host
 * to send Ctrl-Alt-Del (scancodes on port 0x60 with IRQ 1). Linux's probe
 * sees a controller with its self-test passing and a keyboard port.
 */
import type { DeviceMetrics, IrqLine, PioDevice } from './device.js';
import { bytes, int, obj, onlyKeys, stateError } from '../snapshot/check.js';

const STATUS_OBF = 0x01, STATUS_SYS = 0x04, STATUS_CMD = 0x08;
const CMD_READ_CTR = 0x20, CMD_WRITE_CTR = 0x60, CMD_SELF_TEST = 0xaa, CMD_KBD_TEST = 0xab;
const CMD_KBD_DISABLE = 0xad, CMD_KBD_ENABLE = 0xae, CMD_READ_OUTPUT = 0xd0, CMD_WRITE_OUTPUT = 0xd1, CMD_RESET = 0xfe;
const CTR_KBD_INT = 0x01;
/**
 * Bytes the controller holds for the guest. Real hardware has a one-byte output
 * buffer behind a keyboard with a 16-byte FIFO; beyond that, new bytes are lost
 * (and counted), so a guest writing in a loop cannot grow the VMM's memory.
 */
export const I8042_OUTPUT_MAX = 16;
/** Set 1 scancodes: Ctrl, Alt, Del pressed then released. */
const CTRL_ALT_DEL = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];

export interface I8042State {
  ctr: number;
  status: number;
  pendingCommand: number | null;
  out: number[];
}

export class I8042 implements PioDevice {
  readonly name = 'i8042';
  state: I8042State = { ctr: CTR_KBD_INT | 0x40, status: STATUS_SYS, pendingCommand: null, out: [] };
  private resets = 0;
  private dropped = 0;

  /** `onReset` is called when the guest asks the controller to pulse the CPU reset line. */
  constructor(private readonly irq: IrqLine, private readonly onReset: () => void) {}

  /** Queues Ctrl-Alt-Del for the guest's keyboard driver. */
  sendCtrlAltDel(): void {
    for (const b of CTRL_ALT_DEL) this.queue(b);
    this.notify();
  }

  /** A copy of the controller's state, for a snapshot. */
  saveState(): I8042State {
    return { ...this.state, out: [...this.state.out] };
  }

  /** Puts the controller in a snapshot's state (checked: the file is untrusted). No interrupt is raised: one owed was saved in the irqchip. */
  restoreState(v: unknown): void {
    const w = 'device i8042';
    const o = obj(v, w);
    onlyKeys(o, ['ctr', 'status', 'pendingCommand', 'out'], w);
    const pending = o.pendingCommand === null ? null : int(o.pendingCommand, 0, 0xff, `${w} pendingCommand`);
    if (pending !== null && pending !== CMD_WRITE_CTR && pending !== CMD_WRITE_OUTPUT) throw stateError(`${w} pendingCommand`, `0x${pending.toString(16)} is not a command that takes a data byte`);
    this.state = { ctr: int(o.ctr, 0, 0xff, `${w} ctr`), status: int(o.status, 0, 0xff, `${w} status`), pendingCommand: pending, out: bytes(o.out, I8042_OUTPUT_MAX, `${w} out`) };
  }

  /** Offset 0 is port 0x60 (data), offset 4 is port 0x64 (status/command). */
  pioRead(offset: number, data: Uint8Array): void {
    data.fill(0);
    const s = this.state;
    if (offset === 0) {
      data[0] = s.out.shift() ?? 0;
      this.notify();
    } else if (offset === 4) {
      data[0] = s.status | (s.out.length > 0 ? STATUS_OBF : 0);
    } else {
      data[0] = 0xff;
    }
  }

  pioWrite(offset: number, data: Uint8Array): void {
    const v = data[0] ?? 0;
    const s = this.state;
    if (offset === 4) {
      s.status |= STATUS_CMD;
      switch (v) {
        case CMD_RESET: this.resets++; this.onReset(); return;
        case CMD_READ_CTR: this.queue(s.ctr); break;
        case CMD_WRITE_CTR: case CMD_WRITE_OUTPUT: s.pendingCommand = v; break;
        case CMD_SELF_TEST: this.queue(0x55); break;
        case CMD_KBD_TEST: this.queue(0x00); break;
        case CMD_READ_OUTPUT: this.queue(0x01); break;
        case CMD_KBD_DISABLE: s.ctr |= 0x10; break;
        case CMD_KBD_ENABLE: s.ctr &= ~0x10; break;
        default: break;
      }
      this.notify();
    } else if (offset === 0) {
      s.status &= ~STATUS_CMD;
      if (s.pendingCommand === CMD_WRITE_CTR) s.ctr = v;
      else if (s.pendingCommand === CMD_WRITE_OUTPUT) { if ((v & 0x01) === 0) { this.resets++; this.onReset(); } }
      else this.queue(0xfa); // keyboard command: acknowledge
      s.pendingCommand = null;
      this.notify();
    }
  }

  /** One byte for the guest to read from port 0x60, unless the output FIFO is full. */
  private queue(b: number): void {
    if (this.state.out.length >= I8042_OUTPUT_MAX) { this.dropped++; return; }
    this.state.out.push(b & 0xff);
  }

  private notify(): void {
    if (this.state.out.length > 0 && (this.state.ctr & CTR_KBD_INT)) this.irq.pulse();
  }

  metrics(): DeviceMetrics {
    return { resets: this.resets, queued: this.state.out.length, dropped: this.dropped };
  }
}
