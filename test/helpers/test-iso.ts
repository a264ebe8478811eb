/**
 * A bootable test ISO, made with grub-mkrescue (Debian's grub-pc-bin,
 * grub-efi-amd64-bin, xorriso, mtools) around the tiny image's kernel and
 * initrd: it boots with SeaBIOS (El Torito) and with OVMF (its EFI system
 * image). GRUB shows its menu on the screen and the serial line, then boots
 * the kernel with the console on ttyS0 (and tty0, so the display shows the
 * kernel's text too).
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

/** What GRUB prints on the serial line: proof the firmware ran the ISO's boot loader. */
export const GRUB_ENTRY = 'Hangar test ISO';

export function buildTestIso(image: { kernel: string; initrd?: string }, outFile: string): string {
  const work = fs.mkdtempSync(path.join(path.dirname(outFile), '.iso-'));
  try {
    const boot = path.join(work, 'boot');
    fs.mkdirSync(path.join(boot, 'grub'), { recursive: true });
    fs.copyFileSync(image.kernel, path.join(boot, 'vmlinuz'));
    if (image.initrd) fs.copyFileSync(image.initrd, path.join(boot, 'initrd.img'));
    fs.writeFileSync(path.join(boot, 'grub', 'grub.cfg'), [
      'serial --unit=0 --speed=115200',
      'terminal_input console serial',
      'terminal_output console serial',
      // UEFI: a graphics mode through GOP, so the kernel gets a framebuffer to write on (gfxpayload=keep).
      'insmod all_video',
      'set gfxpayload=keep',
      'set timeout=1',
      `menuentry '${GRUB_ENTRY} (tiny)' {`,
      '  linux /boot/vmlinuz console=tty0 console=ttyS0 panic=-1 loglevel=4',
      ...(image.initrd ? ['  initrd /boot/initrd.img'] : []),
      '}',
      '',
    ].join('\n'));
    execFileSync('grub-mkrescue', ['-o', outFile, work], { stdio: ['ignore', 'ignore', 'pipe'] });
    return outFile;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
