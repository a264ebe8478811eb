/**
 * Linux direct boot: loads a kernel (ELF vmlinux at its physical addresses,
 * or a bzImage's protected-mode part at 1 MiB with its 64-bit entry at
 * +0x200), the initrd (top of RAM, page aligned), the command line, and
 * fills the zero page (struct boot_params) with the setup header and our
 * e820 map. Everything read from the kernel file is checked against the
 * file's and guest RAM's bounds.
 */
import fs from 'node:fs';
import { HangarError } from '../../common/errors.js';
import type { GuestRam } from '../memory.js';
import { CMDLINE, CMDLINE_MAX, e820Map, HIMEM_START, KERNEL_LOAD, PAGE_SIZE, ZERO_PAGE, type E820Entry } from '../layout.js';

/** Offsets in struct boot_params and its embedded setup_header (Documentation/arch/x86/boot.rst). */
export const BP = {
  acpi_rsdp_addr: 0x070,
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  sentinel: 0x1ef,
  setup_sects: 0x1f1,
  vid_mode: 0x1fa,
  boot_flag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  payload_offset: 0x248,
  payload_length: 0x24c,
  pref_address: 0x258,
  init_size: 0x260,
  e820_table: 0x2d0,
} as const;

export const HDRS_MAGIC = 0x53726448; // "HdrS"
const XLF_KERNEL_64 = 0x1;
const LOADFLAG_LOADED_HIGH = 0x01, LOADFLAG_CAN_USE_HEAP = 0x80;
const E820_MAX_ENTRIES = 128;
/** ELF note Hangar test guests carry: owner "Hangar", type HANGAR_NOTE_SMP_ENTRY — start every vCPU at the entry point. */
export const HANGAR_NOTE_OWNER = 'Hangar';
export const HANGAR_NOTE_SMP_ENTRY = 0x4801;

export interface BootSource {
  kernelPath: string;
  initrdPath?: string;
  cmdline: string;
}

export interface LoadedKernel {
  kind: 'elf' | 'bzimage';
  entry: number;
  /** [start, end) of guest memory the kernel image occupies. */
  start: number;
  end: number;
  /** Hangar guest note present: every vCPU enters at `entry` (otherwise APs wait for INIT/SIPI). */
  apsAtEntry: boolean;
  initrd?: { addr: number; size: number };
  cmdline: string;
  e820: E820Entry[];
}

function bad(msg: string): HangarError {
  return new HangarError('INVALID_ARGUMENT', msg);
}

function readFile(p: string, what: string): Buffer {
  try {
    return fs.readFileSync(p);
  } catch (e) {
    throw new HangarError('NOT_FOUND', `${what} ${p} cannot be read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

function loadElf(mem: GuestRam, img: Buffer): { entry: number; start: number; end: number; apsAtEntry: boolean } {
  if (img.length < 64 || img[4] !== 2 || img[5] !== 1) throw bad('kernel is an ELF file but not 64-bit little-endian');
  if (img.readUInt16LE(18) !== 62) throw bad('kernel ELF is not for x86-64');
  const entry = Number(img.readBigUInt64LE(24));
  const phoff = Number(img.readBigUInt64LE(32));
  const phentsize = img.readUInt16LE(54);
  const phnum = img.readUInt16LE(56);
  if (phentsize < 56 || phoff + phnum * phentsize > img.length) throw bad('kernel ELF program headers lie outside the file');
  let start = Infinity, end = 0, apsAtEntry = false;
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    const type = img.readUInt32LE(o);
    const offset = Number(img.readBigUInt64LE(o + 8));
    const paddr = Number(img.readBigUInt64LE(o + 24));
    const filesz = Number(img.readBigUInt64LE(o + 32));
    const memsz = Number(img.readBigUInt64LE(o + 40));
    if (type === 4 /* PT_NOTE */) {
      if (offset + filesz <= img.length && scanNotes(img.subarray(offset, offset + filesz))) apsAtEntry = true;
      continue;
    }
    if (type !== 1 /* PT_LOAD */) continue;
    if (offset + filesz > img.length || filesz > memsz) throw bad(`kernel ELF segment ${i} lies outside the file`);
    if (paddr < HIMEM_START || paddr + memsz > mem.size) {
      throw bad(`kernel ELF segment ${i} at 0x${paddr.toString(16)}+0x${memsz.toString(16)} does not fit guest RAM above 1 MiB (${mem.size} bytes)`);
    }
    mem.write(paddr, img.subarray(offset, offset + filesz));
    mem.slice(paddr + filesz, memsz - filesz).fill(0);
    start = Math.min(start, paddr);
    end = Math.max(end, paddr + memsz);
  }
  if (end === 0) throw bad('kernel ELF has no loadable segment');
  // Linux's vmlinux carries a physical entry address; mask a virtual kernel-map address to physical just in case.
  const physEntry = entry >= 0xffffffff80000000 ? entry - 0xffffffff80000000 : entry;
  if (physEntry < start || physEntry >= end) throw bad(`kernel ELF entry 0x${entry.toString(16)} is outside its loaded segments`);
  return { entry: physEntry, start, end, apsAtEntry };
}

/**
 * Looks for Hangar's note in a PT_NOTE segment. Every length comes from the file: each one is
 * checked against what is left of the segment, and each step moves forward by at least the
 * 12-byte header, so no input makes this loop run past the segment or forever.
 */
function scanNotes(notes: Buffer): boolean {
  const pad4 = (n: number) => n + ((4 - (n % 4)) % 4);
  let o = 0;
  while (o + 12 <= notes.length) {
    const namesz = notes.readUInt32LE(o), descsz = notes.readUInt32LE(o + 4), type = notes.readUInt32LE(o + 8);
    const left = notes.length - o - 12;
    if (namesz > left || descsz > left) return false; // a length past the segment: malformed, stop
    const name = notes.subarray(o + 12, o + 12 + namesz).toString('latin1').replace(/\0+$/, '');
    if (name === HANGAR_NOTE_OWNER && type === HANGAR_NOTE_SMP_ENTRY) return true;
    o += 12 + pad4(namesz) + pad4(descsz);
  }
  return false;
}

function loadBzImage(mem: GuestRam, img: Buffer, zp: Uint8Array): { entry: number; start: number; end: number } {
  if (img.length < 0x270) throw bad('kernel bzImage is too short');
  const version = img.readUInt16LE(BP.version);
  if (version < 0x20c) throw bad(`bzImage boot protocol ${version >> 8}.${version & 0xff} has no 64-bit entry (need 2.12+)`);
  if ((img.readUInt16LE(BP.xloadflags) & XLF_KERNEL_64) === 0) throw bad('bzImage does not declare a 64-bit entry point (XLF_KERNEL_64)');
  let setupSects = img[BP.setup_sects]!;
  if (setupSects === 0) setupSects = 4;
  const pmOffset = (setupSects + 1) * 512;
  if (pmOffset >= img.length) throw bad('bzImage setup size exceeds the file');
  const pm = img.subarray(pmOffset);
  // The 64-bit entry is at +0x200 of the protected-mode part: it must be in the file, not in zeroed memory.
  if (pm.length <= 0x200) throw bad(`bzImage protected-mode part (${pm.length} bytes) ends before its 64-bit entry at +0x200`);
  const initSize = img.readUInt32LE(BP.init_size);
  const need = Math.max(pm.length, initSize);
  if (KERNEL_LOAD + need > mem.size) throw bad(`bzImage needs 0x${need.toString(16)} bytes at 1 MiB; guest RAM is ${mem.size} bytes`);
  mem.write(KERNEL_LOAD, pm);
  // Copy the setup header (0x1f1 .. 0x202 + header length) into the zero page.
  const hdrEnd = Math.min(0x202 + img[0x201]!, 0x280);
  zp.set(img.subarray(BP.setup_sects, hdrEnd), BP.setup_sects);
  return { entry: KERNEL_LOAD + 0x200, start: KERNEL_LOAD, end: KERNEL_LOAD + need };
}

/** Loads kernel, initrd and command line into guest RAM and writes the zero page. */
export function loadLinux(mem: GuestRam, src: BootSource): LoadedKernel {
  const img = readFile(src.kernelPath, 'kernel');
  const zp = new Uint8Array(PAGE_SIZE);
  const zdv = new DataView(zp.buffer);
  let kind: 'elf' | 'bzimage';
  let k: { entry: number; start: number; end: number; apsAtEntry?: boolean };
  if (img.length >= 4 && img.readUInt32BE(0) === 0x7f454c46) {
    kind = 'elf';
    k = loadElf(mem, img);
    zdv.setUint16(BP.boot_flag, 0xaa55, true);
    zdv.setUint32(BP.header, HDRS_MAGIC, true);
    zdv.setUint16(BP.version, 0x020f, true);
    zdv.setUint32(BP.kernel_alignment, 0x1000000, true);
    zdv.setUint32(BP.cmdline_size, CMDLINE_MAX - 1, true);
    zdv.setUint32(BP.initrd_addr_max, 0x7fffffff, true);
  } else if (img.length >= 0x206 && img.readUInt32LE(BP.header) === HDRS_MAGIC) {
    kind = 'bzimage';
    k = loadBzImage(mem, img, zp);
  } else {
    throw bad(`kernel ${src.kernelPath} is neither an ELF vmlinux nor a bzImage`);
  }

  // Command line (NUL-terminated, within the kernel's and our limit).
  const maxCmd = Math.min(CMDLINE_MAX - 1, zdv.getUint32(BP.cmdline_size, true) || 255);
  const cmd = Buffer.from(src.cmdline, 'latin1');
  if (cmd.length > maxCmd) throw bad(`kernel command line is ${cmd.length} bytes; this kernel accepts at most ${maxCmd}`);
  mem.slice(CMDLINE, CMDLINE_MAX).fill(0);
  mem.write(CMDLINE, cmd);

  zp[BP.type_of_loader] = 0xff;
  zp[BP.loadflags] = (zp[BP.loadflags]! | LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP) & 0xff;
  zdv.setUint16(BP.vid_mode, 0xffff, true);
  zdv.setUint16(BP.heap_end_ptr, 0xfe00, true);
  zdv.setUint32(BP.cmd_line_ptr, CMDLINE, true);

  let initrd: { addr: number; size: number } | undefined;
  if (src.initrdPath) {
    const rd = readFile(src.initrdPath, 'initrd');
    const maxAddr = Math.min(mem.size, (zdv.getUint32(BP.initrd_addr_max, true) || 0x37ffffff) + 1);
    const addr = Math.floor((maxAddr - rd.length) / PAGE_SIZE) * PAGE_SIZE;
    if (addr < k.end) throw bad(`initrd (${rd.length} bytes) does not fit in guest RAM above the kernel`);
    mem.write(addr, rd);
    zdv.setUint32(BP.ramdisk_image, addr, true);
    zdv.setUint32(BP.ramdisk_size, rd.length, true);
    initrd = { addr, size: rd.length };
  }

  const e820 = e820Map(mem.size);
  if (e820.length > E820_MAX_ENTRIES) throw bad('too many e820 entries');
  zp[BP.e820_entries] = e820.length;
  zp[BP.sentinel] = 0;
  e820.forEach((e, i) => {
    const o = BP.e820_table + i * 20;
    zdv.setBigUint64(o, BigInt(e.addr), true);
    zdv.setBigUint64(o + 8, BigInt(e.size), true);
    zdv.setUint32(o + 16, e.type, true);
  });
  mem.write(ZERO_PAGE, zp);
  const r: LoadedKernel = { kind, entry: k.entry, start: k.start, end: k.end, apsAtEntry: k.apsAtEntry ?? false, cmdline: src.cmdline, e820 };
  if (initrd) r.initrd = initrd;
  return r;
}
