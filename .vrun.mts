import { Machine } from './src/vmm/machine.js';
import { createLogger } from './src/common/log.js';
if (process.env.NOEVFD) (Machine.prototype as any).ioEventFd = () => null;
if (process.env.RNG) { const { createVirtioDevices } = await import('./src/vmm/virtio/index.js'); (Machine.prototype as any).createVirtioDevices = async function (this: any) { createVirtioDevices(this.deviceHost(), { drives: this.cfg.drives ?? [], nets: [], rng: true }); }; }
const [kernel, disk, extra] = process.argv.slice(2);
const log = createLogger('vrun', process.env.LVL ?? 'warn');
const m = await Machine.create({ vcpus: 1, memBytes: 64 << 20, kernel: kernel!, cmdline: extra ?? '', drives: disk ? [{ drive_id: 'vda', path_on_host: disk, serial: 'HANGAR-TEST' }] : [], nets: process.env.TAP ? [{ iface_id: 'eth0', host_dev_name: process.env.TAP, guest_mac: '52:54:00:e2:e0:01' }] : [] }, log, (b) => process.stdout.write(b));
const t0 = Date.now();
await m.start();
setTimeout(() => { console.log('METRICS', JSON.stringify(m.metrics(), null, 0)); process.exit(1); }, Number(process.env.TMO ?? 8000));
const e = await m.exited;
console.log("VCPU", JSON.stringify(m.metrics().vcpus));
console.log('EXIT', JSON.stringify(e), Date.now() - t0, 'ms', JSON.stringify(m.metrics().devices));
m.close();
process.exit(0);
