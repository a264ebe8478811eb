/**
 * Fake /proc and /sys trees for the monitoring tests, shaped like the
 * kernel's files (a command name with spaces and parentheses, QEMU's vCPU
 * thread names, smaps_rollup).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A /proc/<pid>/stat line with utime and stime as given (the rest as the kernel writes it). */
export function statLine(pid: number, comm: string, utime: number, stime: number): string {
  return `${pid} (${comm}) S 1 ${pid} ${pid} 0 -1 4194560 1520 0 0 0 ${utime} ${stime} 0 0 20 0 3 0 123456 1234567890 25000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n`;
}

export function fakeRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-monitor-proc-'));
}

export function writeFake(root: string, rel: string, text: string): void {
  const f = path.join(root, rel);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, text);
}

/** A QEMU-like process: main thread, two vCPU threads and an I/O thread. */
export function fakeQemu(root: string, pid: number, ticks: { main: number; vcpu0: number; vcpu1: number; io: number }): void {
  const total = ticks.main + ticks.vcpu0 + ticks.vcpu1 + ticks.io;
  writeFake(root, `proc/${pid}/stat`, statLine(pid, 'qemu-system-x86 (vm) x', Math.floor(total * 0.8), total - Math.floor(total * 0.8)));
  const threads: Array<[number, string, number]> = [[pid, 'qemu-system-x86', ticks.main], [pid + 1, 'CPU 0/TCG', ticks.vcpu0], [pid + 2, 'CPU 1/KVM', ticks.vcpu1], [pid + 3, 'IO mon_iothread', ticks.io]];
  for (const [tid, comm, t] of threads) {
    writeFake(root, `proc/${pid}/task/${tid}/comm`, `${comm}\n`);
    writeFake(root, `proc/${pid}/task/${tid}/stat`, statLine(tid, comm, t, 0));
  }
  writeFake(root, `proc/${pid}/smaps_rollup`, [
    '55d0c0a00000-7ffd1b5ff000 ---p 00000000 00:00 0                          [rollup]',
    'Rss:              230400 kB', 'Pss:              228309 kB', 'Pss_Anon:         220000 kB', 'Shared_Clean:       4000 kB', '',
  ].join('\n'));
  writeFake(root, `proc/${pid}/status`, 'Name:\tqemu-system-x86\nVmRSS:\t  230400 kB\n');
}

