/**
 * Turns a root filesystem tree into a bootable GPT disk image without loop
 * devices or mounts (so it needs no privileges beyond reading the tree):
 *
 *   sector 0      syslinux's gptmbr.bin (BIOS: boots the partition marked
 *                 legacy-BIOS-bootable) + protective MBR
 *   partition 1   EFI system partition, FAT32, label ESP: the kernel and
 *                 initrd, syslinux (BIOS) and systemd-boot as
 *                 \EFI\BOOT\BOOTX64.EFI (UEFI), both loading the same kernel
 *   partition 2   ext4, label rootfs, made from the tree by `mke2fs -d`
 *
 * Each filesystem is made in its own file and copied to its partition's
 * offset; the raw disk is then converted to qcow2. Filesystem and partition
 * identifiers are derived from a seed, so the same inputs give the same ids.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { HangarError } from '../../../common/errors.js';
import { runTool } from './exec.js';

const SECTOR = 512;
const MIB = 1024 * 1024;

/** GPT partition type of an EFI system partition. */
export const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
/** GPT partition type of an x86-64 Linux root partition (the discoverable partitions spec). */
export const ROOT_X86_64_TYPE = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';
export const ROOT_LABEL = 'rootfs';
export const ESP_LABEL = 'ESP';

/** Where the boot loaders live on the host (Debian packages syslinux, syslinux-common, systemd-boot-efi). */
export const BOOT_FILES = {
  gptmbr: '/usr/lib/syslinux/mbr/gptmbr.bin',
  systemdBoot: '/usr/lib/systemd/boot/efi/systemd-bootx64.efi',
} as const;

export interface DiskLayout {
  sizeBytes: number;
  espStart: number;
  espSize: number;
  rootStart: number;
  rootSize: number;
}

/**
 * 1 MiB of room for the GPT, the ESP, then the root partition up to the last
 * MiB (the backup GPT lives at the very end). Offsets in bytes, MiB-aligned.
 */
export function diskLayout(sizeBytes: number, espBytes: number): DiskLayout {
  if (sizeBytes % MIB !== 0 || espBytes % MIB !== 0) throw new HangarError('INTERNAL', 'disk and ESP sizes must be whole MiB');
  const espStart = MIB;
  const rootStart = espStart + espBytes;
  const rootSize = sizeBytes - rootStart - MIB;
  if (rootSize < 64 * MIB) throw new HangarError('INVALID_ARGUMENT', `a ${sizeBytes} byte disk leaves no room for the root filesystem`);
  return { sizeBytes, espStart, espSize: espBytes, rootStart, rootSize };
}

/** A UUID derived from a seed (the image's name and build date), the same on every rebuild. */
export function stableUuid(seed: string): string {
  const h = createHash('sha256').update(seed).digest();
  h[6] = (h[6]! & 0x0f) | 0x40; // version 4 layout, so tools that check accept it
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

export interface BootEntry {
  /** Shown by the UEFI boot menu (which is never displayed: timeout 0). */
  title: string;
  /** Kernel command line without root=, e.g. "ro console=ttyS0". */
  cmdline: string;
}

export interface AssembleInput {
  /** The root filesystem tree (its /boot/efi stays empty: the ESP is mounted there). */
  tree: string;
  kernel: string;
  initrd: string;
  workDir: string;
  /** The finished qcow2 file. */
  output: string;
  layout: DiskLayout;
  boot: BootEntry;
  /** Seeds the filesystem and partition ids. */
  seed: string;
  /** Timestamps written into the filesystems (seconds since 1970). */
  sourceDateEpoch: number;
  onProgress?: (stage: string) => void;
}

/** The files written onto the ESP, for tests and docs. */
export function espFiles(boot: BootEntry): Record<string, string> {
  const append = `root=LABEL=${ROOT_LABEL} ${boot.cmdline}`;
  return {
    // BIOS: syslinux reads this; no prompt, no delay. SERIAL mirrors its few messages to ttyS0.
    'syslinux.cfg': ['SERIAL 0 115200', 'PROMPT 0', 'TIMEOUT 0', 'DEFAULT linux', 'LABEL linux', '  LINUX /vmlinuz', '  INITRD /initrd.img', `  APPEND ${append}`, ''].join('\n'),
    // UEFI: systemd-boot boots the one entry at once (timeout 0 hides the menu).
    'loader/loader.conf': ['default linux.conf', 'timeout 0', 'console-mode keep', 'editor no', ''].join('\n'),
    'loader/entries/linux.conf': [`title ${boot.title}`, 'linux /vmlinuz', 'initrd /initrd.img', `options ${append}`, ''].join('\n'),
  };
}

async function makeEsp(i: AssembleInput, file: string): Promise<void> {
  for (const f of Object.values(BOOT_FILES)) {
    if (!fs.existsSync(f)) throw new HangarError('ENGINE_FAILED', `${f} is missing: install syslinux, syslinux-common and systemd-boot-efi (scripts/setup.sh)`);
  }
  const volumeId = stableUuid(`${i.seed}/esp`).slice(0, 8);
  // -h: the partition's first sector, which syslinux's boot sector adds to find ldlinux.sys.
  await runTool('mkfs.vfat', ['-F', '32', '-n', ESP_LABEL, '-i', volumeId, '-h', String(i.layout.espStart / SECTOR), '-C', file, String(i.layout.espSize / 1024)]);
  const env = { MTOOLS_SKIP_CHECK: '1', SOURCE_DATE_EPOCH: String(i.sourceDateEpoch) };
  // mtools' syslinux installer writes the boot sector, ldlinux.sys and ldlinux.c32.
  await runTool('syslinux', ['--install', file], { env });
  await runTool('mmd', ['-i', file, '::/EFI', '::/EFI/BOOT', '::/loader', '::/loader/entries'], { env });
  const staged = path.join(i.workDir, 'esp');
  fs.mkdirSync(path.join(staged, 'loader', 'entries'), { recursive: true });
  for (const [name, text] of Object.entries(espFiles(i.boot))) fs.writeFileSync(path.join(staged, name), text);
  const copy = (from: string, to: string) => runTool('mcopy', ['-i', file, '-o', '-m', from, `::${to}`], { env });
  await copy(i.kernel, '/vmlinuz');
  await copy(i.initrd, '/initrd.img');
  await copy(BOOT_FILES.systemdBoot, '/EFI/BOOT/BOOTX64.EFI');
  for (const name of Object.keys(espFiles(i.boot))) await copy(path.join(staged, name), `/${name}`);
}

async function makeRoot(i: AssembleInput, file: string): Promise<void> {
  const uuid = stableUuid(`${i.seed}/root`);
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, i.layout.rootSize);
  // -d copies the tree in (owners, modes, xattrs, device nodes); E2FSPROGS_FAKE_TIME fixes
  // the superblock's times, hash_seed the directory hashes: same tree, same filesystem.
  await runTool('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', ROOT_LABEL, '-U', uuid, '-E', `hash_seed=${stableUuid(`${i.seed}/hash`)},root_owner=0:0`, '-d', i.tree, file], {
    env: { E2FSPROGS_FAKE_TIME: String(i.sourceDateEpoch) },
  });
}

function sfdiskScript(i: AssembleInput): string {
  const l = i.layout;
  const s = (b: number) => b / SECTOR;
  return [
    'label: gpt',
    `label-id: ${stableUuid(`${i.seed}/disk`)}`,
    'unit: sectors',
    `first-lba: ${s(MIB)}`,
    `start=${s(l.espStart)}, size=${s(l.espSize)}, type=${ESP_TYPE}, uuid=${stableUuid(`${i.seed}/p1`)}, name="${ESP_LABEL}", attrs="LegacyBIOSBootable"`,
    `start=${s(l.rootStart)}, size=${s(l.rootSize)}, type=${ROOT_X86_64_TYPE}, uuid=${stableUuid(`${i.seed}/p2`)}, name="${ROOT_LABEL}"`,
    '',
  ].join('\n');
}

/** Copies a filesystem file into the disk at `offset` bytes, keeping holes as holes. */
function dd(from: string, to: string, offset: number): Promise<string> {
  return runTool('dd', [`if=${from}`, `of=${to}`, 'bs=4M', `seek=${offset}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
}

/** Builds the disk image; see the top of this file for its layout. */
export async function assembleDisk(i: AssembleInput): Promise<void> {
  fs.mkdirSync(i.workDir, { recursive: true });
  const esp = path.join(i.workDir, 'esp.img');
  const root = path.join(i.workDir, 'root.img');
  const raw = path.join(i.workDir, 'disk.raw');
  i.onProgress?.('making the EFI system partition');
  await makeEsp(i, esp);
  i.onProgress?.('making the root filesystem');
  await makeRoot(i, root);
  i.onProgress?.('assembling the disk');
  fs.closeSync(fs.openSync(raw, 'w'));
  fs.truncateSync(raw, i.layout.sizeBytes);
  await runTool('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', raw], { input: sfdiskScript(i) });
  // gptmbr.bin is the 440 bytes of boot code before the disk signature and partition table.
  const mbr = fs.readFileSync(BOOT_FILES.gptmbr);
  if (mbr.length > 440) throw new HangarError('ENGINE_FAILED', `${BOOT_FILES.gptmbr} is ${mbr.length} bytes, more than the 440 an MBR has for code`);
  const fd = fs.openSync(raw, 'r+');
  try { fs.writeSync(fd, mbr, 0, mbr.length, 0); } finally { fs.closeSync(fd); }
  await dd(esp, raw, i.layout.espStart);
  fs.rmSync(esp);
  await dd(root, raw, i.layout.rootStart);
  fs.rmSync(root);
  i.onProgress?.('converting the disk to qcow2');
  await runTool('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, i.output]);
  fs.rmSync(raw);
}
