/**
 * The disk actions on one VM (API `/1.0/vms/{name}/disks`): list, attach,
 * detach, and the online resize the storage service asks for. Each runs
 * under the VM's lock, so it never interleaves with a start, stop or delete
 * of the same VM. A stopped VM's disks change in its spec (the next start
 * uses them); a running QEMU VM gets them plugged in or out over QMP at once
 * and keeps them across stop/start. The micro engine cannot hot-plug: its
 * VM must be stopped first.
 */
import { HangarError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { VmHandle } from '../../engines/engine.js';
import type { DiskRequest, Operation, VmDisk, VmDiskInfo } from '../api/schemas.js';
import type { OperationManager } from '../operations.js';
import type { Store } from '../store.js';
import { ROOT_DISK } from './plan.js';
import type { DiskService } from './service.js';

export interface VmDiskOpsDeps {
  store: Store;
  operations: OperationManager;
  disks: DiskService | null;
  log: Logger;
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** The VM's process, when this daemon runs it. */
  handleOf(name: string): VmHandle | null;
}

export class VmDiskOps {
  constructor(private readonly d: VmDiskOpsDeps) {}

  private svc(): DiskService {
    if (!this.d.disks) throw new HangarError('UNSUPPORTED', 'this daemon has no storage: VMs cannot have disks');
    return this.d.disks;
  }

  list(name: string): VmDiskInfo[] {
    const rec = this.d.store.requireVm(name);
    return this.svc().list(name, rec.spec.disks);
  }

  /**
   * The process to plug into or out of, null when the VM is stopped; refuses
   * states where the disks cannot change (paused, or changing state) and
   * engines that cannot hot-plug.
   */
  private target(name: string, what: 'attach' | 'detach'): VmHandle | null {
    const rec = this.d.store.requireVm(name);
    if (rec.state === 'stopped' || rec.state === 'crashed') return null;
    if (rec.state !== 'running') {
      throw new HangarError('INVALID_STATE', `cannot ${what} a disk while VM "${name}" is ${rec.state}${rec.state === 'paused' ? ': resume it first (the guest takes part in hot-plug)' : ''}`, { name, state: rec.state });
    }
    const handle = this.d.handleOf(name);
    if (!handle) throw new HangarError('INVALID_STATE', `VM "${name}" has no running process`, { name });
    const can = what === 'attach' ? handle.attachDisk : handle.detachDisk;
    if (!can) {
      throw new HangarError('UNSUPPORTED', `engine ${rec.spec.engine} cannot ${what} disks while the VM runs: stop VM "${name}" first`, { name, engine: rec.spec.engine });
    }
    return handle;
  }

  /** POST /1.0/vms/{name}/disks. Bad requests fail at once; the work is an operation. */
  attach(name: string, req: DiskRequest): Operation {
    const rec = this.d.store.requireVm(name);
    const svc = this.svc();
    svc.planAttach(name, rec.spec.disks, req, rec.spec.engine);
    this.target(name, 'attach');
    return this.d.operations.run(`Attaching a disk to VM ${name}`, [name], () =>
      this.d.withLock(name, async () => {
        const cur = this.d.store.requireVm(name);
        const plan = svc.planAttach(name, cur.spec.disks, req, cur.spec.engine);
        const handle = this.target(name, 'attach');
        const disk = await svc.attach(name, plan, cur.spec.engine, handle);
        try {
          this.d.store.setVmSpec(name, { ...cur.spec, disks: [...cur.spec.disks, disk] });
        } catch (e) {
          if (handle) await handle.detachDisk!(disk.name).catch(() => {});
          svc.undo(name, plan.create ? [plan] : [], [plan]);
          throw e;
        }
        this.d.log.info({ vm: name, disk: disk.name, volume: disk.volume, hot: handle !== null }, 'disk attached');
        return svc.list(name, [disk])[0];
      }));
  }

  private requireDisk(name: string, disks: readonly VmDisk[], device: string): VmDisk {
    const d = disks.find((x) => x.name === device);
    if (!d) throw new HangarError('NOT_FOUND', `VM "${name}" has no disk "${device}" (it has: ${disks.map((x) => x.name).join(', ') || 'none'})`, { name, disk: device });
    if (d.name === ROOT_DISK && d.owned) throw new HangarError('INVALID_STATE', `the root disk of VM "${name}" cannot be detached: it is part of the VM`, { name, disk: device });
    return d;
  }

  /** DELETE /1.0/vms/{name}/disks/{disk}: unplugged (running QEMU) and dropped from the spec; the volume stays. */
  detach(name: string, device: string): Operation {
    const rec = this.d.store.requireVm(name);
    const svc = this.svc();
    this.requireDisk(name, rec.spec.disks, device);
    this.target(name, 'detach');
    return this.d.operations.run(`Detaching disk ${device} from VM ${name}`, [name], () =>
      this.d.withLock(name, async () => {
        const cur = this.d.store.requireVm(name);
        const disk = this.requireDisk(name, cur.spec.disks, device);
        const handle = this.target(name, 'detach');
        await svc.detach(name, disk, handle);
        this.d.store.setVmSpec(name, { ...cur.spec, disks: cur.spec.disks.filter((x) => x.name !== device) });
        this.d.log.info({ vm: name, disk: device, volume: disk.volume, hot: handle !== null }, 'disk detached');
        return { name, disk: device, volume: disk.volume };
      }));
  }

  /**
   * The storage service grows a volume that VM `vm` uses as disk `device`:
   * a running QEMU grows it itself (block_resize) and tells the guest;
   * 'not-running' lets storage grow the file. A running VM whose engine
   * cannot is refused: its VMM holds the file open.
   */
  async resizeOnline(vm: string, device: string, sizeBytes: number): Promise<'resized' | 'not-running'> {
    return this.d.withLock(vm, async () => {
      const rec = this.d.store.getVm(vm);
      if (!rec || rec.state === 'stopped' || rec.state === 'crashed') return 'not-running';
      const handle = this.d.handleOf(vm);
      if (!handle) return 'not-running';
      if (!handle.resizeDisk) throw new HangarError('UNSUPPORTED', `VM "${vm}" (engine ${rec.spec.engine}) cannot grow a disk while it runs: stop it first`, { vm, disk: device });
      await handle.resizeDisk(device, sizeBytes);
      this.d.log.info({ vm, disk: device, sizeBytes }, 'disk grown online');
      return 'resized';
    });
  }
}
