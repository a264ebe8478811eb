/**
 * UART console throughput on hangar-vmm: guests/uart-bench.c writes 20 000
 * bytes the way Linux's 8250 console does (poll LSR, write THR, per byte);
 * this measures the time between its two markers on the console socket and
 * the port exits it took, from GET /metrics.
 *
 *   node dist/bench/uart-bench.js [RUNS]
 *
 * Prints one JSON line per run: bytes/s, µs per byte, port exits per byte,
 * and how many THR writes / LSR reads the vCPU threads served themselves.
 */
import { api, bootGuest, buildGuest, ConsoleClient, startVmm } from '../test/helpers/vmm.js';

const BYTES = 20_000;
const runs = Number(process.argv[2] ?? 3);
const elf = buildGuest('uart-bench');
for (let i = 0; i < runs; i++) {
  const vmm = await startVmm();
  try {
    const con = await ConsoleClient.connect(vmm.consoleSock);
    await bootGuest(vmm, elf);
    await con.waitFor('uart-bench start\n', 60_000);
    const t0 = process.hrtime.bigint();
    await con.waitFor('uart-bench end', 600_000);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const m = (await api(vmm.apiSock, 'GET', '/metrics')).body as { vm: { vcpus: Array<{ pioExits: number }>; devices: { serial0: Record<string, number> } } };
    const pio = m.vm.vcpus.reduce((n, v) => n + v.pioExits, 0);
    const serial = m.vm.devices.serial0;
    console.log(JSON.stringify({
      bytes: BYTES, seconds: +s.toFixed(3), bytesPerSecond: Math.round(BYTES / s), usPerByte: +((s * 1e6) / BYTES).toFixed(1),
      pioExitsPerByte: +(pio / BYTES).toFixed(2), fastTxBytes: serial.fastTxBytes ?? 0, fastLsrReads: serial.fastLsrReads ?? 0,
    }));
    await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'Stop' });
    con.close();
  } finally {
    await vmm.cleanup();
  }
}
