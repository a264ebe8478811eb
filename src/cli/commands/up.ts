/**
 * `hangar up`: the quick start. Starts the daemon when it does not answer,
 * then makes sure a VM (default `demo`, from the `tiny` image) runs:
 * launches it, starts it if stopped, resumes it if paused. Safe to repeat.
 */
import type { Command } from 'commander';
import { isHangarError } from '../../common/errors.js';
import { formatSize } from '../../common/sizes.js';
import type { Operation, Vm } from '../../host/api/schemas.js';
import { checkVmName, clientFor, followOperation, note, out, printJson, vmPath, withJson } from '../context.js';
import { ensureDaemon } from './daemon.js';

export function registerUpCommand(program: Command): void {
  withJson(
    program
      .command('up')
      .description('quick start: start the daemon if needed and a demo VM from the tiny image')
      .option('--name <name>', 'VM name', 'demo')
      .option('--image <image>', 'image to launch', 'tiny'),
  ).action(async (o: { json?: boolean; name: string; image: string }, cmd: Command) => {
    const name = checkVmName(o.name);
    const client = clientFor(cmd);
    const quiet = Boolean(o.json);
    const d = await ensureDaemon(client, 60, quiet);
    if (d.started && !quiet) note(`Daemon started (pid ${d.pid}).`);

    let vm: Vm | null = null;
    try {
      vm = await client.get<Vm>(vmPath(name));
    } catch (e) {
      if (!isHangarError(e) || e.code !== 'NOT_FOUND') throw e;
    }
    const follow = async (op: Operation, label: string, done: string) =>
      followOperation(client, op, { label, done: quiet ? undefined : done, quiet });

    let what: 'launched' | 'started' | 'resumed' | 'already-running';
    if (vm === null) {
      const op = await client.call<Operation>('POST', '/1.0/vms', { name, image: o.image });
      await follow(op, `Launching ${name} from ${o.image}`, `Launched ${name}`);
      what = 'launched';
    } else if (vm.state === 'running' || vm.state === 'starting') {
      what = 'already-running';
      if (!quiet) note(`${name} is already ${vm.state}.`);
    } else if (vm.state === 'paused') {
      await follow(await client.call<Operation>('PUT', vmPath(name, '/state'), { action: 'resume' }), `Resuming ${name}`, `Resumed ${name}`);
      what = 'resumed';
    } else {
      await follow(await client.call<Operation>('PUT', vmPath(name, '/state'), { action: 'start' }), `Starting ${name}`, `Started ${name}`);
      what = 'started';
    }
    vm = await client.get<Vm>(vmPath(name));
    if (quiet) return printJson({ daemon: d, vm, action: what });
    const next: Array<[string, string]> = [
      [`hangar console ${name}`, 'attach to its serial console (detach with Ctrl-])'],
      ['hangar list', 'all VMs'],
      [`hangar show ${name}`, 'its spec and state'],
      [`hangar stop ${name}`, 'shut it down'],
    ];
    const width = Math.max(...next.map(([c]) => c.length)) + 3;
    out(
      `\n${name} is ${vm.state} (${vm.spec.engine}, ${vm.runtime.accel ?? 'no accel'}, ${vm.spec.cpus} vCPU, ${formatSize(vm.spec.memoryBytes)}).\n` +
        'Next:\n' +
        next.map(([c, what]) => `  ${c.padEnd(width)}${what}\n`).join(''),
    );
  });
}
