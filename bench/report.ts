/**
 * Benchmarks write their results into docs/benchmarks.md, each into its own
 * section between `<!-- section:NAME -->` and `<!-- /section:NAME -->`, so
 * several benchmarks can run separately without overwriting each other.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { projectRoot } from '../src/common/paths.js';

export function describeHost(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const kernel = os.release();
  let kvm = fs.existsSync('/dev/kvm') ? '/dev/kvm present' : 'no /dev/kvm';
  // /proc/modules may be hidden in containers; /sys/module tells which KVM backend is loaded.
  if (fs.existsSync('/sys/module/kvm_pvm')) kvm += ' (nested on PVM: guest kernel mode emulated)';
  else if (fs.existsSync('/sys/module/kvm_intel') || fs.existsSync('/sys/module/kvm_amd')) kvm += ' (hardware virtualization)';
  let qemu = 'no QEMU';
  try { qemu = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? qemu; } catch { /* absent */ }
  return `${os.cpus().length} × ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${kernel}, Node ${process.version}, ${kvm}, ${qemu}`;
}

/** Replaces (or appends) the named section of docs/benchmarks.md. */
export function writeSection(name: string, markdown: string): string {
  const file = path.join(projectRoot(), 'docs', 'benchmarks.md');
  let doc = fs.existsSync(file)
    ? fs.readFileSync(file, 'utf8')
    : '# Hangar benchmarks\n\nWritten by `npm run bench`; each section says when and on what host it was measured.\n';
  const open = `<!-- section:${name} -->`;
  const close = `<!-- /section:${name} -->`;
  const body = `${open}\n${markdown.trim()}\n\n_Measured ${new Date().toISOString()} on: ${describeHost()}_\n${close}`;
  const start = doc.indexOf(open);
  const end = doc.indexOf(close);
  doc = start >= 0 && end > start ? doc.slice(0, start) + body + doc.slice(end + close.length) : `${doc.trimEnd()}\n\n${body}\n`;
  fs.writeFileSync(file, doc);
  return file;
}

/**
 * The end of a benchmark that may run as an experiment: with `experiment` (what was changed,
 * e.g. switches passed on) the table is only printed; otherwise the section is written. Exits
 * with the run's status.
 */
export function finishSection(name: string, markdown: string, experiment: string | null, ok: boolean): never {
  if (experiment !== null) {
    process.stdout.write(`${markdown}\n\n(an experiment: ${experiment}; docs/benchmarks.md left as it was)\n`);
  } else {
    const file = writeSection(name, markdown);
    process.stdout.write(`${markdown}\n\nhost: ${describeHost()}\nwritten to ${file}\n`);
  }
  process.exit(ok ? 0 : 1);
}

/** Percentile of already collected samples (nearest rank). */
export function percentile(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}
