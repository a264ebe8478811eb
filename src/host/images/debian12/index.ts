/**
 * The built-in `debian-12` image: a Debian bookworm cloud server built on
 * this host from Debian's package archive (no prebuilt image is downloaded).
 *
 * Output, in the image folder (the layout other parts of Hangar rely on):
 *   disk.qcow2    GPT disk: 1 = EFI system partition (FAT32, label ESP) with
 *                 the kernel, initrd, syslinux (BIOS) and systemd-boot (UEFI);
 *                 2 = ext4 root, label rootfs. The base volume of VMs' root disks.
 *   vmlinuz, initrd.img   the same kernel and initrd, for direct kernel boot
 *   packages.txt  every installed package as name=version (rebuild input)
 *   image.json    written by the catalogue with what build() returns
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../../common/errors.js';
import { assembleDisk, diskLayout, ESP_LABEL, ROOT_LABEL } from './disk.js';
import { buildRootfs, installedPackages, PACKAGES, SUITE } from './rootfs.js';

export const DEBIAN12_DESCRIPTION = 'Debian 12 (bookworm) cloud server: cloud-init, ssh, qemu-guest-agent; disk boots by BIOS or UEFI (built locally)';
/** Kernel arguments after root=: the serial console last, so it is /dev/console (what Hangar records). */
export const DEBIAN12_BOOT_ARGS = 'ro console=tty0 console=ttyS0';
export const DEBIAN12_CMDLINE = `root=LABEL=${ROOT_LABEL} ${DEBIAN12_BOOT_ARGS}`;
/** Virtual size of the base disk; a VM's root disk may be larger (cloud-init grows the root partition). */
export const DEBIAN12_DISK_BYTES = 2 * 1024 ** 3;
export const DEBIAN12_ESP_BYTES = 128 * 1024 ** 2;

export interface Debian12Options {
  /** Install exactly these `name=version` packages (from an earlier build's packages.txt). */
  pinned?: string[];
  /** Timestamps in the image (default: SOURCE_DATE_EPOCH, else now). */
  sourceDateEpoch?: number;
  /** Debian mirror (default deb.debian.org; e.g. a snapshot.debian.org URL to find old pinned versions). */
  mirror?: string;
  securityMirror?: string;
  /** Test hook: throw after this stage, to show that a failed build leaves nothing behind. */
  failAfter?: 'rootfs' | 'disk';
}

export interface Debian12BuildResult {
  disk: 'disk.qcow2';
  boot: Array<'kernel' | 'bios' | 'uefi'>;
  cloudInit: true;
  suite: string;
  kernelVersion: string;
  packages: number;
  sourceDateEpoch: number;
  diskSizeBytes: number;
  rootLabel: string;
  espLabel: string;
}

/** Stages of mmdebstrap's output, mapped onto the build's percentage. */
const MMDEBSTRAP_STAGES: Array<[RegExp, string, number]> = [
  [/running apt-get update/, 'fetching package lists', 5],
  [/downloading packages/, 'downloading packages', 10],
  [/extracting archives/, 'unpacking packages', 25],
  [/installing essential packages/, 'installing essential packages', 30],
  [/installing remaining packages/, 'installing packages', 40],
  [/running --customize-hook/, 'configuring the system', 60],
];

const DISK_STAGE_PERCENT: Record<string, number> = {
  'making the EFI system partition': 70,
  'making the root filesystem': 75,
  'assembling the disk': 85,
  'converting the disk to qcow2': 90,
};

function defaultEpoch(): number {
  const env = process.env.SOURCE_DATE_EPOCH;
  if (env !== undefined && /^\d+$/.test(env)) return Number(env);
  return Math.floor(Date.now() / 1000);
}

export async function buildDebian12(workDir: string, outDir: string, onProgress: (stage: string, percent?: number) => void, o: Debian12Options = {}): Promise<Debian12BuildResult> {
  const sourceDateEpoch = o.sourceDateEpoch ?? defaultEpoch();
  const tree = path.join(workDir, 'rootfs');
  fs.mkdirSync(workDir, { recursive: true });
  onProgress(o.pinned ? `installing ${o.pinned.length} pinned packages` : 'installing Debian', 2);
  await buildRootfs({
    tree, workDir: path.join(workDir, 'hooks'), sourceDateEpoch,
    ...(o.pinned ? { pinned: o.pinned } : {}),
    ...(o.mirror ? { mirror: o.mirror } : {}),
    ...(o.securityMirror ? { securityMirror: o.securityMirror } : {}),
    onLine: (line) => {
      for (const [re, stage, pct] of MMDEBSTRAP_STAGES) if (re.test(line)) onProgress(stage, pct);
    },
  });
  if (o.failAfter === 'rootfs') throw new HangarError('INTERNAL', 'injected failure after the root filesystem (test)');

  onProgress('recording packages', 65);
  const packages = await installedPackages(tree);
  const kernels = fs.readdirSync(path.join(tree, 'boot')).filter((f) => /^vmlinuz-.*-cloud-amd64$/.test(f)).sort();
  const kernelFile = kernels.at(-1);
  if (!kernelFile) throw new HangarError('ENGINE_FAILED', 'the root filesystem has no /boot/vmlinuz-*-cloud-amd64');
  const kernelVersion = kernelFile.slice('vmlinuz-'.length);
  const kernel = path.join(tree, 'boot', kernelFile);
  const initrd = path.join(tree, 'boot', `initrd.img-${kernelVersion}`);
  if (!fs.existsSync(initrd)) throw new HangarError('ENGINE_FAILED', `the root filesystem has no /boot/initrd.img-${kernelVersion}`);

  fs.mkdirSync(outDir, { recursive: true });
  fs.copyFileSync(kernel, path.join(outDir, 'vmlinuz'));
  fs.copyFileSync(initrd, path.join(outDir, 'initrd.img'));
  fs.writeFileSync(path.join(outDir, 'packages.txt'), `# debian-12 (${SUITE}), built ${new Date(sourceDateEpoch * 1000).toISOString()}; rebuild: hangar image build debian-12 --packages packages.txt\n${packages.join('\n')}\n`);

  const layout = diskLayout(DEBIAN12_DISK_BYTES, DEBIAN12_ESP_BYTES);
  await assembleDisk({
    tree, kernel, initrd, workDir: path.join(workDir, 'disk'), output: path.join(outDir, 'disk.qcow2'), layout,
    boot: { title: 'Debian 12 (Hangar)', cmdline: DEBIAN12_BOOT_ARGS },
    seed: `debian-12/${sourceDateEpoch}`, sourceDateEpoch,
    onProgress: (stage) => onProgress(stage, DISK_STAGE_PERCENT[stage] ?? 70),
  });
  // The tree is big; free the space before the image is moved into place.
  fs.rmSync(tree, { recursive: true, force: true });
  if (o.failAfter === 'disk') throw new HangarError('INTERNAL', 'injected failure after the disk (test)');
  return {
    disk: 'disk.qcow2', boot: ['kernel', 'bios', 'uefi'], cloudInit: true, suite: SUITE, kernelVersion,
    packages: packages.length, sourceDateEpoch, diskSizeBytes: layout.sizeBytes, rootLabel: ROOT_LABEL, espLabel: ESP_LABEL,
  };
}

export { PACKAGES };
