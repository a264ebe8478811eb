/**
 * Shared by the virtio end-to-end tests and benchmark: builds a test guest,
 * runs the compiled hangar-vmm on a JSON config with the console on stdout,
 * and collects what it printed. Every process spawned here is tracked by pid
 * and killed (only that pid) if it overstays.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { VMM_NODE_FLAGS } from '../../src/vmm/process-flags.js';

export const ROOT = projectRoot();
export const VMM_MAIN = path.join(ROOT, 'dist', 'src', 'vmm', 'main.js');

/** Why the virtio guest tests cannot run here, or null when they can. */
export function guestTestsUnavailable(): string | null {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return 'no usable /dev/kvm';
  }
  if (!fs.existsSync(VMM_MAIN)) return `hangar-vmm is not built (${VMM_MAIN}); run npm run build`;
  return null;
}

/** Builds guests/<name>.c (always rebuilt: it also depends on guests/virtio-drv.h, which make does not know). */
export function buildGuest(name: string): string {
  execFileSync('make', ['-s', '-B', '-C', path.join(ROOT, 'guests'), `build/${name}.elf`], { stdio: ['ignore', 'ignore', 'inherit'] });
  return path.join(ROOT, 'guests', 'build', `${name}.elf`);
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `hangar-${prefix}-`));
}

export interface VmmRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface VmmProcess {
  child: ChildProcess;
  /** Resolves when the process ended (or was killed after timeoutMs). */
  done: Promise<VmmRun>;
  /** Resolves with the console output so far once `re` matches it. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  kill(): void;
}

/**
 * Starts hangar-vmm with the console on stdout: on `config` (written to
 * dir/vm.json) when given, else waiting on its control socket dir/api.sock.
 */
export function startVmm(config: object | null, dir: string, opts: { timeoutMs?: number; logLevel?: string } = {}): VmmProcess {
  const args = [VMM_MAIN, '--console', 'stdio', '--log-level', opts.logLevel ?? 'info'];
  if (config) {
    const cfgPath = path.join(dir, 'vm.json');
    fs.writeFileSync(cfgPath, JSON.stringify(config, null, 2));
    args.push('--config', cfgPath);
  } else {
    args.push('--api-sock', path.join(dir, 'api.sock'));
  }
  const child = spawn(process.execPath, [...VMM_NODE_FLAGS, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout!.on('data', (b: Buffer) => {
    stdout += b.toString('latin1');
    for (const l of listeners) l();
  });
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString('utf8'); });
  const kill = (): void => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const timer = setTimeout(kill, opts.timeoutMs ?? 60_000);
  const done = new Promise<VmmRun>((resolve) => {
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // Let the pipes drain before answering.
      setImmediate(() => resolve({ code, signal, stdout, stderr }));
    });
  });
  const waitFor = (re: RegExp, timeoutMs = 30_000): Promise<string> => new Promise((resolve, reject) => {
    const check = (): void => {
      if (re.test(stdout)) {
        listeners.delete(check);
        clearTimeout(t);
        resolve(stdout);
      }
    };
    const t = setTimeout(() => { listeners.delete(check); reject(new Error(`timed out waiting for ${re} in console output:\n${stdout}\n--- stderr ---\n${stderr}`)); }, timeoutMs);
    listeners.add(check);
    void done.then(() => { if (listeners.has(check)) { listeners.delete(check); clearTimeout(t); reject(new Error(`hangar-vmm exited before ${re} appeared:\n${stdout}\n--- stderr ---\n${stderr}`)); } });
    check();
  });
  return { child, done, waitFor, kill };
}

/** One request to hangar-vmm's control API on dir/api.sock (waits for the socket to appear). */
export async function vmmApi(dir: string, method: string, urlPath: string, body?: object): Promise<{ status: number; body: string }> {
  const sock = path.join(dir, 'api.sock');
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath: sock, method, path: urlPath, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** Runs a VM to its end. */
export function runVmm(config: object, dir: string, opts: { timeoutMs?: number; logLevel?: string } = {}): Promise<VmmRun> {
  return startVmm(config, dir, opts).done;
}

/** A minimal config around a guest ELF. */
export function guestConfig(kernel: string, extra: { bootArgs?: string; memMib?: number; drives?: object[]; nets?: object[] } = {}): Record<string, unknown> {
  return {
    'machine-config': { vcpu_count: 1, mem_size_mib: extra.memMib ?? 64 },
    'boot-source': { kernel_image_path: kernel, ...(extra.bootArgs ? { boot_args: extra.bootArgs } : {}) },
    ...(extra.drives ? { drives: extra.drives } : {}),
    ...(extra.nets ? { 'network-interfaces': extra.nets } : {}),
  };
}

/** FNV-1a 64 over `data`, as lowercase hex without leading zeros (what the guests print with %lx). */
export function fnv1a64(data: Uint8Array): string {
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  for (let i = 0; i < data.length; i++) {
    lo = (lo ^ data[i]!) >>> 0;
    // h *= 2^40 + 0x1b3, modulo 2^64, in 32-bit halves.
    const l = lo * 0x1b3;
    const carry = Math.floor(l / 0x100000000);
    hi = (hi * 0x1b3 + carry + ((lo << 8) >>> 0)) % 0x100000000;
    lo = l % 0x100000000;
  }
  return ((BigInt(hi) << 32n) | BigInt(lo)).toString(16);
}

/** The value after `key=` on the console line starting with `prefix`. */
export function field(out: string, prefix: string, key: string): string | undefined {
  for (const line of out.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const m = new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(line.slice(prefix.length));
    if (m) return m[1];
  }
  return undefined;
}
