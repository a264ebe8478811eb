/**
 * `hangar iso insert VM ISO` and `hangar iso eject VM`: change the ISO in a
 * VM's CD-ROM drive (PUT/DELETE /1.0/vms/{name}/iso). A running QEMU VM
 * gets the change at once; a stopped VM at its next start. ISO is an
 * absolute path in the daemon's import folders or a raw volume POOL/VOLUME.
 */
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { checkVmName, clientFor, out, printJson, vmPath, withJson } from '../context.js';

interface IsoState {
  vm: string;
  iso: string | null;
  live: boolean;
}

export function registerIsoCommands(program: Command): void {
  const iso = program.command('iso').description("the ISO in a VM's CD-ROM drive");
  withJson(
    iso.command('insert')
      .description('insert an ISO, or change the one in the drive (a running VM gets it at once)')
      .argument('<vm>', 'VM name')
      .argument('<iso>', "absolute path in the daemon's import folders, or a raw storage volume POOL/VOLUME"),
  ).action(async (vm: string, file: string, o: { json?: boolean }, cmd: Command) => {
    checkVmName(vm);
    if (!file.startsWith('/') && !file.includes('/')) {
      throw new HangarError('INVALID_ARGUMENT', `iso "${file}": give an absolute path in the daemon's import folders or a volume POOL/VOLUME`);
    }
    const r = await clientFor(cmd).call<IsoState>('PUT', `${vmPath(vm)}/iso`, { iso: file });
    if (o.json) return printJson(r);
    out(`Inserted ${r.iso} into ${r.vm}${r.live ? '' : ' (used from its next start)'}\n`);
  });
  withJson(iso.command('eject').description('eject the ISO from the drive').argument('<vm>', 'VM name')).action(async (vm: string, o: { json?: boolean }, cmd: Command) => {
    checkVmName(vm);
    const r = await clientFor(cmd).call<IsoState>('DELETE', `${vmPath(vm)}/iso`);
    if (o.json) return printJson(r);
    out(`Ejected the ISO from ${r.vm}\n`);
  });
}
