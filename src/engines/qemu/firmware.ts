/**
 * Firmware for VMs that boot their own boot loader (from a disk or an ISO)
 * instead of a kernel the daemon hands QEMU:
 *
 * - `bios`: SeaBIOS, QEMU's built-in default for q35; nothing to prepare.
 * - `uefi`: OVMF from Debian's `ovmf` package. The code volume is shared by
 *   every VM and mapped read-only; each VM gets its own copy of the variable
 *   store (its NVRAM: boot entries, settings), made from the package's empty
 *   template on the VM's first UEFI start and kept in the VM's folder, so it
 *   survives restarts and goes away when the VM is deleted.
 *
 * HANGAR_OVMF_DIR overrides where OVMF is looked for (default /usr/share/OVMF).
 */
import fs from 'node:fs';
import path from 'node:path';
import { HangarError } from '../../common/errors.js';

/** The 4 MiB OVMF build without Secure Boot keys: boots any loader, needs no SMM. */
export const OVMF_CODE_FILE = 'OVMF_CODE_4M.fd';
/** Its matching empty variable store. */
export const OVMF_VARS_FILE = 'OVMF_VARS_4M.fd';
/** Name of a VM's own variable store inside its folder. */
export const VM_VARS_FILE = 'uefi-vars.fd';

export interface OvmfFiles {
  code: string;
  varsTemplate: string;
}

export function ovmfDir(): string {
  return path.resolve(process.env.HANGAR_OVMF_DIR || '/usr/share/OVMF');
}

/** The OVMF files this host has, or null when the `ovmf` package (or HANGAR_OVMF_DIR) does not provide both. */
export function findOvmf(): OvmfFiles | null {
  const dir = ovmfDir();
  const files = { code: path.join(dir, OVMF_CODE_FILE), varsTemplate: path.join(dir, OVMF_VARS_FILE) };
  try {
    if (fs.statSync(files.code).isFile() && fs.statSync(files.varsTemplate).isFile()) return files;
  } catch { /* missing */ }
  return null;
}

/** The OVMF files, or UNAVAILABLE saying what to install. */
export function requireOvmf(): OvmfFiles {
  const f = findOvmf();
  if (!f) {
    throw new HangarError('UNAVAILABLE', `UEFI boot needs OVMF: ${path.join(ovmfDir(), OVMF_CODE_FILE)} and ${OVMF_VARS_FILE} are not there (install the Debian package "ovmf")`, { dir: ovmfDir() });
  }
  return f;
}

/** Where a VM keeps its UEFI variable store. */
export function vmVarsFile(vmDir: string): string {
  return path.join(vmDir, VM_VARS_FILE);
}

/**
 * Makes the VM's variable store from the empty template when it has none
 * yet (0600, written to a temporary name and renamed, so a crash never
 * leaves a truncated store). An existing store is kept as it is: it holds
 * what the guest saved.
 */
export function ensureVarsFile(varsFile: string, ovmf: OvmfFiles = requireOvmf()): void {
  if (fs.existsSync(varsFile)) return;
  fs.mkdirSync(path.dirname(varsFile), { recursive: true, mode: 0o700 });
  const tmp = `${varsFile}.tmp-${process.pid}`;
  try {
    fs.copyFileSync(ovmf.varsTemplate, tmp);
    fs.chmodSync(tmp, 0o600);
    fs.renameSync(tmp, varsFile);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new HangarError('ENGINE_FAILED', `could not make the UEFI variable store ${varsFile}: ${(e as Error).message}`);
  }
}
