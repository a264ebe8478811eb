/**
 * Fuzzing the port-I/O devices (COM1 UART, i8042, power, POST and ACPI
 * sleep ports) through the port bus as a guest reaches them: random
 * sequences of reads and writes of 1, 2 and 4 bytes at their ports and next
 * to them, mixed with host console input. No access may make a device throw
 * (the bus would count it), the devices' queues stay within their bounds,
 * and power requests arrive only as the three documented kinds. Seeds are
 * fixed; HANGAR_FUZZ_SCALE=N runs N times as many sequences.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PioBus } from '../../src/vmm/bus.js';
import { I8042, I8042_OUTPUT_MAX } from '../../src/vmm/devices/i8042.js';
import { AcpiSleepRegisters, PostPort, PowerPort } from '../../src/vmm/devices/power.js';
import { Serial } from '../../src/vmm/devices/serial.js';
import * as L from '../../src/vmm/layout.js';
import { forSeeds, type Rng } from '../helpers/fuzz.js';

/** What the UART may hold for the guest: its host-side receive queue (serial.ts). */
const SERIAL_RX_MAX = 64 * 1024;

function machine() {
  const irq = { gsi: 0, pulses: 0, pulse() { this.pulses++; }, set() {} };
  const events: string[] = [];
  let out = 0;
  const serial = new Serial(irq, (b) => { out += b.length; });
  const i8042 = new I8042(irq, () => events.push('reset'));
  const bus = new PioBus((dev, err) => { throw new Error(`${dev} threw: ${String(err)}`); });
  bus.register(L.SERIAL_COM1_PORT, L.SERIAL_PORT_COUNT, serial);
  bus.register(L.I8042_DATA_PORT, 5, i8042);
  bus.register(L.POWER_PORT, 1, new PowerPort((what) => events.push(what)));
  bus.register(L.POST_PORT, 1, new PostPort());
  bus.register(L.ACPI_SLEEP_CONTROL_PORT, 2, new AcpiSleepRegisters(() => events.push('s5')));
  return { bus, serial, i8042, events, output: () => out };
}

const PORTS = [L.SERIAL_COM1_PORT, L.I8042_DATA_PORT, L.POWER_PORT, L.POST_PORT, L.ACPI_SLEEP_CONTROL_PORT];

function port(r: Rng): number {
  switch (r.int(6)) {
    case 0: return r.int(0x10000);
    case 1: return r.pick(PORTS) - 1;
    default: return r.pick(PORTS) + r.int(8);
  }
}

test('random port-I/O sequences: no device throws, queues stay bounded, only documented power requests', async () => {
  const n = await forSeeds(0x7017, 60, (r) => {
    const m = machine();
    for (let i = 0; i < 3000; i++) {
      const size = r.pick([1, 1, 1, 2, 4]);
      const data = r.bytes(size);
      if (r.int(3) === 0) m.bus.read(port(r), data); else m.bus.write(port(r), data);
      if (r.int(50) === 0) m.serial.input(r.bytes(r.int(4096)));
      if (r.int(500) === 0) m.i8042.sendCtrlAltDel();
    }
    assert.equal(m.bus.deviceErrors, 0);
    assert.ok((m.i8042.metrics().queued ?? 0) <= I8042_OUTPUT_MAX, 'i8042 output queue bounded');
    assert.ok(m.serial.state.rx.length <= SERIAL_RX_MAX, 'UART receive queue bounded');
    for (const e of m.events) assert.ok(['poweroff', 'reset', 'panic', 's5'].includes(e), e);
  });
  assert.ok(n >= 60);
});

test('a guest hammering the i8042 and UART with writes keeps memory flat', () => {
  const m = machine();
  const ack = Uint8Array.of(0);
  for (let i = 0; i < 500_000; i++) {
    m.bus.write(L.I8042_DATA_PORT, ack);
    m.bus.write(L.I8042_DATA_PORT + 4, Uint8Array.of(0xaa));
    if (i % 8 === 0) m.serial.input(Uint8Array.of(i & 0xff));
  }
  assert.equal(m.i8042.metrics().queued, I8042_OUTPUT_MAX);
  assert.ok(m.serial.state.rx.length <= SERIAL_RX_MAX);
  // Reading the data port stays cheap: the queue it shifts from is 16 bytes long.
  const d = new Uint8Array(1);
  for (let i = 0; i < I8042_OUTPUT_MAX + 4; i++) m.bus.read(L.I8042_DATA_PORT, d);
  assert.equal(m.i8042.metrics().queued, 0);
});
