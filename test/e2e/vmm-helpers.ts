/**
 * Shared helpers for hangar-vmm end-to-end tests (and the virtio tests that
 * reuse the guest kit): build a test guest, spawn hangar-vmm from dist/,
 * talk to its control socket, read its console, and clean up exactly what
 * was started.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { projectRoot } from '../../src/common/paths.js';
import { VMM_NODE_FLAGS } from '../../src/vmm/process-flags.js';

export const kvmUsable = (() => {
  try { fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK); return true; } catch { return false; }
})();

/** Builds guests/<name>.c into guests/build/<name>.elf (atomically, so parallel test files can share it) and returns its path. */
export function buildGuest(name: string): string {
  const guests = path.join(projectRoot(), 'guests');
  const out = path.join(guests, 'build', `${name}.elf`);
  const tmpDir = path.join('build', `.tmp-${process.pid}-${name}`);
  execFileSync('make', ['-s', '-C', guests, `OUT=${tmpDir}`, `${tmpDir}/${name}.elf`], { stdio: 'pipe' });
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.renameSync(path.join(guests, tmpDir, `${name}.elf`), out);
  fs.rmSync(path.join(guests, tmpDir), { recursive: true, force: true });
  return out;
}

export function vmmMain(): string {
  const p = path.join(projectRoot(), 'dist', 'src', 'vmm', 'main.js');
  if (!fs.existsSync(p)) throw new Error(`${p} is missing: run tsc first`);
  return p;
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

/** Starts hangar-vmm (with the runtime flags of VMM_NODE_FLAGS, as the micro engine does) with an API socket, console socket and console log in a fresh temp folder. */
export async function startVmm(extraArgs: string[] = [], opts: { config?: unknown } = {}): Promise<VmmProcess> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-vmm-test-'));
  const apiSock = path.join(dir, 'api.sock');
  const consoleSock = path.join(dir, 'console.sock');
  const consoleLog = path.join(dir, 'console.log');
  const exitFile = path.join(dir, 'exit.json');
  const args = [...VMM_NODE_FLAGS, vmmMain(), '--api-sock', apiSock, '--console-sock', consoleSock, '--console-log', consoleLog, '--exit-file', exitFile, ...extraArgs];
  if (opts.config !== undefined) {
    const cfg = path.join(dir, 'vm.json');
    fs.writeFileSync(cfg, JSON.stringify(opts.config));
    args.push('--config', cfg);
  }
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
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
