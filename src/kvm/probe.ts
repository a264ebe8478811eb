/**
 * What kind of KVM this host has. A host with hardware virtualization runs a
 * guest's kernel mode natively; a nested KVM such as PVM runs guest user mode
 * natively but emulates guest kernel mode instruction by instruction, which
 * is too slow (and too incomplete) for full-system guests such as Linux.
 *
 * probeKvm() never throws: it opens /dev/kvm, then runs a short CPL-0 loop in
 * a child process (probe-child) under a timeout, and classifies the host by
 * how long the loop took and whether KVM reported an internal error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../common/paths.js';

/** Rounds of the CPL-0 `dec ecx; jnz` loop the child runs. */
export const PROBE_ITERATIONS = 80_000;

/** What probe-child prints. */
export interface ProbeMeasurement {
  ok: boolean;
  loopMs?: number;
  exit?: string;
  error?: string;
  internalError?: { suberror: number; bytes: number[] };
}

export interface KvmProbe {
  present: boolean;
  fullSystem: boolean;
  kind: 'hardware' | 'nested-emulated' | 'absent';
  detail: string;
  ring0LoopMs?: number;
}

/** Above this the CPL-0 loop was emulated: hardware needs ~0.1 ms for it, emulation ~100 ms. */
export const EMULATED_THRESHOLD_MS = 10;
const PROBE_TIMEOUT_MS = 5000;

function hostHints(): string {
  const hints: string[] = [];
  try {
    const mods = fs.readFileSync('/proc/modules', 'utf8');
    for (const m of ['kvm_pvm', 'kvm_intel', 'kvm_amd']) if (new RegExp(`^${m} `, 'm').test(mods)) hints.push(`module ${m}`);
  } catch { /* not Linux */ }
  try {
    const cpu = fs.readFileSync('/proc/cpuinfo', 'utf8');
    hints.push(/\b(vmx|svm)\b/.test(cpu) ? 'cpu has vmx/svm' : 'cpu has no vmx/svm flag');
  } catch { /* not Linux */ }
  return hints.join(', ');
}

function runChild(): Promise<{ m?: ProbeMeasurement; err?: string }> {
  return new Promise((resolve) => {
    const here = fileURLToPath(import.meta.url);
    const isTs = here.endsWith('.ts');
    const child = path.join(path.dirname(here), isTs ? 'probe-child.ts' : 'probe-child.js');
    const args = isTs ? ['--import', 'tsx', child] : [child];
    let out = '';
    let errOut = '';
    let done = false;
    const p = spawn(process.execPath, args, { cwd: projectRoot(), stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      p.kill('SIGKILL');
      resolve({ err: `probe did not finish within ${PROBE_TIMEOUT_MS} ms (vCPU stuck in the host's emulator)` });
    }, PROBE_TIMEOUT_MS);
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { errOut += d.toString(); });
    p.on('error', (e) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ err: e.message });
    });
    p.on('close', (code) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolve({ m: JSON.parse(line) as ProbeMeasurement });
      } catch {
        resolve({ err: `probe exited with ${code}: ${errOut.trim().slice(-300) || 'no output'}` });
      }
    });
  });
}

export async function probeKvm(): Promise<KvmProbe> {
  try {
    const hints = hostHints();
    try {
      fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'error';
      return { present: false, fullSystem: false, kind: 'absent', detail: `/dev/kvm not usable (${code})${hints ? `; ${hints}` : ''}` };
    }
    const { m, err } = await runChild();
    if (!m) return { present: true, fullSystem: false, kind: 'nested-emulated', detail: `${err}; ${hints}` };
    if (!m.ok) {
      if (m.internalError) {
        const bytes = m.internalError.bytes.map((b) => b.toString(16).padStart(2, '0')).join(' ');
        return { present: true, fullSystem: false, kind: 'nested-emulated',
          detail: `KVM internal error (suberror ${m.internalError.suberror}${bytes ? `, instruction ${bytes}` : ''}) running a CPL-0 loop: cannot run full-system guests; ${hints}` };
      }
      if (m.error && /open|KVM_CREATE_VM|API_VERSION/.test(m.error)) {
        return { present: false, fullSystem: false, kind: 'absent', detail: `${m.error}; ${hints}` };
      }
      return { present: true, fullSystem: false, kind: 'nested-emulated', detail: `probe failed: ${m.error ?? `unexpected exit ${m.exit}`}; ${hints}` };
    }
    const ms = Math.round((m.loopMs ?? 0) * 1000) / 1000;
    const perIterNs = ((m.loopMs ?? 0) * 1e6) / PROBE_ITERATIONS;
    if (ms > EMULATED_THRESHOLD_MS) {
      return { present: true, fullSystem: false, kind: 'nested-emulated', ring0LoopMs: ms,
        detail: `guest kernel mode is emulated: ${PROBE_ITERATIONS} CPL-0 loop rounds took ${ms} ms (${perIterNs.toFixed(0)} ns each); full-system guests need QEMU with TCG here; ${hints}` };
    }
    return { present: true, fullSystem: true, kind: 'hardware', ring0LoopMs: ms,
      detail: `hardware virtualization: ${PROBE_ITERATIONS} CPL-0 loop rounds took ${ms} ms; ${hints}` };
  } catch (e) {
    return { present: false, fullSystem: false, kind: 'absent', detail: `probe error: ${e instanceof Error ? e.message : String(e)}` };
  }
}
