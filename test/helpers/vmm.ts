/**
 * The one harness for hangar-vmm tests and benchmarks: build a ring-3 test
 * guest (guests/), run the compiled hangar-vmm either with its control and
 * console sockets (startVmm) or on a JSON config with the console on stdout
 * (startVmmConsole), talk to its control API, read its console, make a
 * bzImage from a test guest, fetch the Debian cloud kernel, and clean up
 * exactly the processes and folders that were started.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { VMM_NODE_FLAGS } from '../../src/vmm/process-flags.js';

export const ROOT = projectRoot();
export const VMM_MAIN = path.join(ROOT, 'dist', 'src', 'vmm', 'main.js');

export const kvmUsable = (() => {
  try { fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK); return true; } catch { return false; }
})();

/**
 * Builds guests/<name>.c into guests/build/<name>.elf and returns its path: always rebuilt (a guest
 * also depends on headers such as guests/virtio-drv.h that make does not track), in a private
 * folder first and then renamed, so parallel test files can share it.
 */
export function buildGuest(name: string): string {
  const guests = path.join(ROOT, 'guests');
  const out = path.join(guests, 'build', `${name}.elf`);
  const tmpDir = path.join('build', `.tmp-${process.pid}-${name}`);
  execFileSync('make', ['-s', '-C', guests, `OUT=${tmpDir}`, `${tmpDir}/${name}.elf`], { stdio: 'pipe' });
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.renameSync(path.join(guests, tmpDir, `${name}.elf`), out);
  fs.rmSync(path.join(guests, tmpDir), { recursive: true, force: true });
  return out;
}

export function vmmMain(): string {
  if (!fs.existsSync(VMM_MAIN)) throw new Error(`${VMM_MAIN} is missing: run tsc first`);
  return VMM_MAIN;
}

export interface VmmProcess {
  child: ChildProcess;
  dir: string;
  apiSock: string;
  consoleSock: string;
  consoleLog: string;
  exitFile: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills the process if still running and removes its folder. */
  cleanup(): Promise<void>;
}

/**
 * Starts hangar-vmm (with the runtime flags of VMM_NODE_FLAGS, as the micro engine does) with an API socket, console socket
 * and console log in a fresh temp folder; `nodeArgs` go to node after those flags (a test's --import preload), `env` replaces the environment.
 */
export async function startVmm(extraArgs: string[] = [], opts: { config?: unknown; nodeArgs?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<VmmProcess> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-test-'));
  const apiSock = path.join(dir, 'api.sock');
  const consoleSock = path.join(dir, 'console.sock');
  const consoleLog = path.join(dir, 'console.log');
  const exitFile = path.join(dir, 'exit.json');
  const args = [...VMM_NODE_FLAGS, ...(opts.nodeArgs ?? []), vmmMain(), '--api-sock', apiSock, '--console-sock', consoleSock, '--console-log', consoleLog, '--exit-file', exitFile, ...extraArgs];
  if (opts.config !== undefined) {
    const cfg = path.join(dir, 'vm.json');
    fs.writeFileSync(cfg, JSON.stringify(opts.config));
    args.push('--config', cfg);
  }
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  child.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const p: VmmProcess = {
    child, dir, apiSock, consoleSock, consoleLog, exitFile, exited, stderr: () => err,
    async cleanup() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  // Wait for the API socket (or an early exit).
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(apiSock)) {
    if (child.exitCode !== null) break;
    if (Date.now() > deadline) { await p.cleanup(); throw new Error(`hangar-vmm did not open its API socket: ${err}`); }
    await new Promise((r) => setTimeout(r, 10));
  }
  return p;
}

/** One HTTP request on a Unix socket; JSON in and out. */
export function api(sock: string, method: string, urlPath: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath: sock, method, path: urlPath, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/** A console socket client collecting everything the guest prints. */
export class ConsoleClient {
  text = '';
  private waiters: Array<{ re: RegExp | string; resolve: () => void }> = [];
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.text += d.toString('latin1');
      this.waiters = this.waiters.filter((w) => {
        if (this.matches(w.re)) { w.resolve(); return false; }
        return true;
      });
    });
  }

  static connect(p: string): Promise<ConsoleClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(p, () => resolve(new ConsoleClient(s)));
      s.once('error', reject);
    });
  }

  private matches(re: RegExp | string): boolean {
    return typeof re === 'string' ? this.text.includes(re) : re.test(this.text);
  }

  /** Resolves when the console output matches; rejects after `ms` with what was seen. */
  waitFor(re: RegExp | string, ms = 15_000): Promise<void> {
    if (this.matches(re)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`console did not show ${String(re)} within ${ms} ms; saw:\n${this.text.slice(-2000)}`)), ms);
      this.waiters.push({ re, resolve: () => { clearTimeout(t); resolve(); } });
    });
  }

  write(s: string): void {
    this.sock.write(s);
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Configures and starts a guest ELF through the API; returns once InstanceStart answered. */
export async function bootGuest(vmm: VmmProcess, elf: string, opts: { vcpus?: number; memMib?: number; bootArgs?: string } = {}): Promise<void> {
  const mc = await api(vmm.apiSock, 'PUT', '/machine-config', { vcpu_count: opts.vcpus ?? 1, mem_size_mib: opts.memMib ?? 64 });
  if (mc.status !== 204) throw new Error(`machine-config: ${JSON.stringify(mc.body)}`);
  const bs = await api(vmm.apiSock, 'PUT', '/boot-source', { kernel_image_path: elf, boot_args: opts.bootArgs ?? 'console=ttyS0' });
  if (bs.status !== 204) throw new Error(`boot-source: ${JSON.stringify(bs.body)}`);
  const st = await api(vmm.apiSock, 'PUT', '/actions', { action_type: 'InstanceStart' });
  if (st.status !== 204) throw new Error(`InstanceStart: ${JSON.stringify(st.body)}`);
}

/**
 * Wraps a test-guest ELF (one PT_LOAD at 1 MiB) as a minimal bzImage: a
 * two-sector real-mode part holding the setup header (boot protocol 2.15,
 * 64-bit entry declared) followed by the flat image as the protected-mode
 * part. The kit's start.S has its bzImage entry at load address + 0x200.
 */
export function makeBzImage(elfPath: string, outPath: string): void {
  const elf = fs.readFileSync(elfPath);
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  let flat: Buffer | null = null;
  let memsz = 0;
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (elf.readUInt32LE(o) !== 1) continue;
    const off = Number(elf.readBigUInt64LE(o + 8));
    const paddr = Number(elf.readBigUInt64LE(o + 24));
    const filesz = Number(elf.readBigUInt64LE(o + 32));
    memsz = Number(elf.readBigUInt64LE(o + 40));
    if (paddr !== 0x100000 || flat) throw new Error('makeBzImage expects one PT_LOAD at 0x100000');
    flat = elf.subarray(off, off + filesz);
  }
  if (!flat) throw new Error('no PT_LOAD');
  const setupSects = 1;
  const setup = Buffer.alloc((setupSects + 1) * 512);
  setup[0x1f1] = setupSects;
  setup.writeUInt16LE(0xaa55, 0x1fe);
  setup[0x200] = 0xeb; // jmp short over the header
  setup[0x201] = 0x66; // header ends at 0x268
  setup.writeUInt32LE(0x53726448, 0x202); // "HdrS"
  setup.writeUInt16LE(0x020f, 0x206);
  setup[0x211] = 0x01; // LOADED_HIGH
  setup.writeUInt32LE(0x100000, 0x214); // code32_start
  setup.writeUInt32LE(0x7fffffff, 0x22c); // initrd_addr_max
  setup.writeUInt32LE(0x200000, 0x230); // kernel_alignment
  setup.writeUInt16LE(0x0001, 0x236); // xloadflags: XLF_KERNEL_64
  setup.writeUInt32LE(2047, 0x238); // cmdline_size
  setup.writeUInt32LE(memsz, 0x260); // init_size
  fs.writeFileSync(outPath, Buffer.concat([setup, flat]));
}

export interface DebianKernel {
  version: string;
  /** The bzImage as Debian ships it. */
  vmlinuz: string;
  /** The ELF vmlinux unpacked from its LZ4 payload. */
  vmlinux: string;
}

/**
 * The stock Debian 12 cloud kernel, cached under <projectRoot>/.cache/vmm-kernel:
 * the package linux-image-cloud-amd64 depends on is fetched with
 * `apt-get download`, its vmlinuz unpacked with dpkg-deb, and the ELF vmlinux
 * extracted from the bzImage's payload (LZ4, legacy frame) with `lz4 -dc`.
 */
export function debianCloudKernel(): DebianKernel {
  const cache = path.join(projectRoot(), '.cache', 'vmm-kernel');
  fs.mkdirSync(cache, { recursive: true });
  const deps = execFileSync('apt-cache', ['depends', 'linux-image-cloud-amd64'], { encoding: 'utf8' });
  const pkg = /Depends:\s+(linux-image-[0-9][^\s]*-cloud-amd64)/.exec(deps)?.[1];
  if (!pkg) throw new Error('apt-cache does not know linux-image-cloud-amd64');
  const version = pkg.replace(/^linux-image-/, '');
  const vmlinuz = path.join(cache, 'boot', `vmlinuz-${version}`);
  const vmlinux = path.join(cache, `vmlinux-${version}`);
  if (fs.existsSync(vmlinux) && fs.existsSync(vmlinuz)) return { version, vmlinuz, vmlinux };
  let deb = fs.readdirSync(cache).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) {
    execFileSync('apt-get', ['download', pkg], { cwd: cache, stdio: 'pipe', timeout: 180_000 });
    deb = fs.readdirSync(cache).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
  }
  execFileSync('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "./boot/vmlinuz-$3"`, 'sh', path.join(cache, deb), cache, version], { stdio: 'pipe' });
  const img = fs.readFileSync(vmlinuz);
  const setupSects = img[0x1f1] || 4;
  const payloadOffset = img.readUInt32LE(0x248);
  const payloadLength = img.readUInt32LE(0x24c);
  const start = (setupSects + 1) * 512 + payloadOffset;
  // The kernel's build appends the uncompressed size (u32) after the LZ4 stream; lz4 would reject it.
  const payload = img.subarray(start, start + payloadLength - 4);
  if (payload.readUInt32LE(0) !== 0x184c2102) throw new Error(`payload of ${vmlinuz} is not LZ4 legacy (magic ${payload.readUInt32LE(0).toString(16)})`);
  const tmp = `${vmlinux}.tmp-${process.pid}`;
  execFileSync('sh', ['-c', 'lz4 -dc > "$1"', 'sh', tmp], { input: payload, stdio: ['pipe', 'ignore', 'pipe'], maxBuffer: 1 << 30 });
  fs.renameSync(tmp, vmlinux);
  return { version, vmlinuz, vmlinux };
}

/** Why guest tests cannot run here, or null when they can. */
export function guestTestsUnavailable(): string | null {
  if (!kvmUsable) return 'no usable /dev/kvm';
  if (!fs.existsSync(VMM_MAIN)) return `hangar-vmm is not built (${VMM_MAIN}); run npm run build`;
  return null;
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

export interface VmmConsoleProcess {
  child: ChildProcess;
  /** Resolves when the process ended (or was killed after timeoutMs). */
  done: Promise<VmmRun>;
  /** Resolves with the console output so far once `re` matches it. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  kill(): void;
}

/**
 * Starts hangar-vmm with the console on stdout (the virtio guests print their results there): on `config` (written to
 * dir/vm.json) when given, else waiting on its control socket dir/api.sock.
 */
export function startVmmConsole(
  config: object | null, dir: string, opts: { timeoutMs?: number; logLevel?: string; apiSock?: boolean; env?: NodeJS.ProcessEnv } = {},
): VmmConsoleProcess {
  const args = [VMM_MAIN, '--console', 'stdio', '--log-level', opts.logLevel ?? 'info'];
  if (config) {
    const cfgPath = path.join(dir, 'vm.json');
    fs.writeFileSync(cfgPath, JSON.stringify(config, null, 2));
    args.push('--config', cfgPath);
  }
  // With a config the VM starts at once; `apiSock` also serves the control API (GET /metrics) meanwhile.
  if (!config || opts.apiSock) args.push('--api-sock', path.join(dir, 'api.sock'));
  const child = spawn(process.execPath, [...VMM_NODE_FLAGS, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) });
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
  return startVmmConsole(config, dir, opts).done;
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
