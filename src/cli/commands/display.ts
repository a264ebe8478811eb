/**
 * `hangar vnc NAME`: how to reach the graphical console of a VM booted by
 * firmware. Its VNC server listens on a Unix socket in the VM's folder on the
 * daemon's host, readable by root only; this prints the socket and a ready
 * command that forwards a local TCP port to it (socat on the daemon's host,
 * ssh -L from elsewhere), for any VNC viewer.
 *
 * `hangar screenshot NAME FILE`: what the display shows now, as PNG (or PPM).
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import type { Vm } from '../../host/api/schemas.js';
import { checkVmName, clientFor, note, out, parseIntOption, printJson, vmPath, withJson } from '../context.js';
import { errorFromResponse } from '../client.js';

export const DEFAULT_VNC_PORT = 5900;

export interface VncAdvice {
  name: string;
  socket: string;
  port: number;
  /** On the daemon's host: forward 127.0.0.1:port to the socket. */
  local: string;
  /** From another machine: an SSH tunnel to the socket (OpenSSH forwards to Unix sockets). */
  ssh: string;
  viewer: string;
}

/** What to run to reach `socket` on the daemon's host; `host` is that host's name for ssh. */
export function vncAdvice(name: string, socket: string, port: number, host: string): VncAdvice {
  const q = (s: string) => (/^[A-Za-z0-9_./:@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return {
    name,
    socket,
    port,
    local: `sudo socat TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:${q(socket)}`,
    ssh: `ssh -N -L ${port}:${q(socket)} root@${host}`,
    viewer: `vncviewer 127.0.0.1::${port}`,
  };
}

/** The daemon's host name as the CLI reaches it (a remote's URL host; this machine otherwise). */
function daemonHost(remote: string | undefined): string {
  if (!remote) return 'localhost';
  try {
    return new URL(remote).hostname || 'HOST';
  } catch {
    return 'HOST';
  }
}

export function renderVncAdvice(a: VncAdvice, remote: boolean, state: string): string {
  const lines = [
    `VM ${a.name}: VNC on the Unix socket ${a.socket} (daemon's host, root only)${state === 'running' || state === 'paused' ? '' : ` — the VM is ${state}; the socket exists while it runs`}`,
    '',
    remote ? 'Forward it to this machine over SSH (leave it running):' : 'Forward it to a local TCP port (leave it running):',
    `  ${remote ? a.ssh : a.local}`,
    ...(remote ? [] : ['From another machine, tunnel over SSH instead:', `  ${a.ssh.replace('root@localhost', 'root@THIS-HOST')}`]),
    'Then point a VNC viewer at it:',
    `  ${a.viewer}`,
  ];
  return lines.join('\n') + '\n';
}

export function registerDisplayCommands(program: Command): void {
  withJson(
    program
      .command('vnc')
      .description("how to reach a VM's graphical console (VMs booted with --boot bios|uefi)")
      .argument('<name>', 'VM name')
      .option('--port <port>', `local TCP port in the printed commands (default ${DEFAULT_VNC_PORT})`, parseIntOption('--port', 1, 65535)),
  ).action(async (name: string, o: { json?: boolean; port?: number }, cmd: Command) => {
    checkVmName(name);
    const client = clientFor(cmd);
    const vm = await client.get<Vm>(vmPath(name));
    if (!vm.display) {
      throw new HangarError('INVALID_STATE', `VM "${name}" has no display: it boots its kernel directly and is headless (use \`hangar console ${name}\`)`, { name });
    }
    const remote = client.endpoint.remote;
    const advice = vncAdvice(name, vm.display.socket, o.port ?? DEFAULT_VNC_PORT, daemonHost(remote));
    if (o.json) printJson({ ...advice, state: vm.state });
    else out(renderVncAdvice(advice, remote !== undefined, vm.state));
  });

  withJson(
    program
      .command('screenshot')
      .description("save what a running VM's display shows (PNG; .ppm files get PPM)")
      .argument('<name>', 'VM name')
      .argument('<file>', 'file to write'),
  ).action(async (name: string, file: string, o: { json?: boolean }, cmd: Command) => {
    checkVmName(name);
    const format = file.toLowerCase().endsWith('.ppm') ? 'ppm' : 'png';
    const res = await clientFor(cmd).raw('GET', vmPath(name, `/screenshot?format=${format}`));
    if (res.status >= 400) throw errorFromResponse(res);
    fs.writeFileSync(file, res.body);
    if (o.json) printJson({ name, file, format, bytes: res.body.length });
    else note(`Saved ${name}'s display to ${file} (${format}, ${res.body.length} bytes)`);
  });
}
