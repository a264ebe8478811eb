/**
 * `hangar exec NAME -- CMD ARGS...`: runs a command in a running VM through
 * its guest agent (POST /1.0/vms/{name}/exec). Its stdout and stderr go to
 * ours, byte for byte, and its exit status becomes ours (128 + N when
 * signal N ended it), so scripts can use it like a local command.
 *
 * `hangar ssh NAME`: runs ssh to the VM's address on its Hangar network
 * (reachable from the daemon's host) as the image's user; a VM without an
 * address gets its serial console instead.
 */
import type { Command } from 'commander';
import { HangarError, isHangarError } from '../../common/errors.js';
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { Vm, VmExecRequest, VmExecResult } from '../../host/api/schemas.js';
import { checkVmName, clientFor, note, parseIntOption, printJson, vmPath, withJson } from '../context.js';
import { openConsole, runInteractive } from './console.js';

/** The daemon's limit on stdin for a command. */
const MAX_INPUT = 512 * 1024;

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of process.stdin as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_INPUT) throw new HangarError('INVALID_ARGUMENT', `--stdin: more than ${MAX_INPUT} bytes of input; copy large files another way`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** The exit status a shell would show for this result. */
export function exitStatusOf(r: Pick<VmExecResult, 'exitCode' | 'signal'>): number {
  if (r.exitCode !== null) return r.exitCode & 0xff;
  return r.signal !== null ? 128 + r.signal : 1;
}

/** Pause between tries while waiting for an agent (each try itself waits a few seconds for it). */
const AGENT_RETRY_MS = 1000;

/**
 * Runs `call`, trying again while the guest agent is not there yet
 * (AGENT_UNAVAILABLE: a VM still booting) until `waitMs` have passed; then,
 * or on any other error, the error. `onFirstWait` is called once, before
 * the first pause.
 */
export async function untilAgentAnswers<T>(call: () => Promise<T>, waitMs: number, onFirstWait: () => void = () => {}): Promise<T> {
  const deadline = Date.now() + waitMs;
  for (let tries = 0; ; tries++) {
    try {
      return await call();
    } catch (e) {
      if (!isHangarError(e) || e.code !== 'AGENT_UNAVAILABLE' || Date.now() + AGENT_RETRY_MS > deadline) throw e;
      if (tries === 0) onFirstWait();
      await new Promise((r) => setTimeout(r, AGENT_RETRY_MS));
    }
  }
}

export function registerExecCommands(program: Command): void {
  withJson(
    program
      .command('exec')
      .description('run a command in a running VM through its guest agent: hangar exec NAME -- CMD ARGS...')
      .argument('<name>', 'VM name')
      .argument('<command...>', 'program and arguments (put -- before them)')
      .option('-i, --stdin', 'send our standard input to the command (at most 512 KiB)')
      .option('--timeout <seconds>', 'seconds the command may run before it is killed (default 60)', parseIntOption('--timeout', 1, 3600))
      .option('--wait <seconds>', 'wait up to this long for the guest agent to answer (a VM still booting)', parseIntOption('--wait', 1, 3600)),
  ).action(async (name: string, command: string[], o: { json?: boolean; stdin?: boolean; timeout?: number; wait?: number }, cmd: Command) => {
    checkVmName(name);
    const body: VmExecRequest = { command, encoding: 'base64' };
    if (o.stdin) body.input = (await readStdin()).toString('base64');
    if (o.timeout !== undefined) body.timeout = o.timeout;
    const client = clientFor(cmd);
    const r = await untilAgentAnswers(() => client.call<VmExecResult>('POST', vmPath(name, '/exec'), body), (o.wait ?? 0) * 1000, () => {
      if (!o.json) note(`Waiting up to ${o.wait} s for the guest agent of ${name} (the VM may still be booting)...`);
    });
    const stdout = Buffer.from(r.stdout, 'base64');
    const stderr = Buffer.from(r.stderr, 'base64');
    if (o.json) {
      // Text when it is text; base64 otherwise, so JSON never carries mangled bytes.
      const text = (b: Buffer): boolean => !b.includes(0) && Buffer.from(b.toString('utf8'), 'utf8').equals(b);
      const enc = text(stdout) && text(stderr) ? 'utf8' : 'base64';
      printJson({ vm: name, command, exitCode: r.exitCode, signal: r.signal, encoding: enc, stdout: stdout.toString(enc), stderr: stderr.toString(enc), stdoutTruncated: r.stdoutTruncated, stderrTruncated: r.stderrTruncated });
    } else {
      await new Promise<void>((res) => process.stdout.write(stdout, () => res()));
      await new Promise<void>((res) => process.stderr.write(stderr, () => res()));
      if (r.stdoutTruncated || r.stderrTruncated) note(`hangar exec: the command's ${r.stdoutTruncated ? 'stdout' : 'stderr'} was cut at the size Hangar returns (8 MiB)`);
    }
    process.exitCode = exitStatusOf(r);
  });

  program
    .command('ssh')
    .description('log in to a VM over SSH at its address on a Hangar network (from the daemon\'s host); without one, its serial console')
    .argument('<name>', 'VM name')
    .argument('[ssh-args...]', 'more arguments for ssh, after --: options, or a command to run')
    .option('-l, --user <user>', 'user to log in as (default: the image\'s own user, debian on debian-12; root otherwise)')
    .action(async (name: string, sshArgs: string[], o: { user?: string }, cmd: Command) => {
      checkVmName(name);
      const client = clientFor(cmd);
      const vm = await client.get<Vm>(vmPath(name));
      const address = sshAddress(vm);
      if (address) {
        const user = o.user ?? IMAGE_USERS[vm.spec.image] ?? 'root';
        process.exitCode = await runSsh(['-l', user, address, ...sshArgs]);
        return;
      }
      note(`hangar ssh: ${name} has no address on a Hangar network${vm.state === 'running' ? ' (yet: no DHCP lease, or no NIC)' : ` (it is ${vm.state})`}, so SSH cannot reach it. Opening its serial console instead: log in as the image's user (Ctrl-] detaches).\nFor a single command, use: hangar exec ${name} -- CMD ARGS...`);
      if (!process.stdin.isTTY) {
        throw new HangarError('UNSUPPORTED', `the console fallback needs a terminal; pipe into \`hangar console ${name}\` or use \`hangar exec ${name} -- CMD\``);
      }
      const ws = await openConsole(client, name);
      const how = await runInteractive(ws, name);
      note(how === 'detached' ? `\r\nDetached from ${name}.` : `\r\nConsole of ${name} closed (the VM stopped).`);
    });
}

/** The user cloud-init makes on a built-in cloud image (the one `--ssh-key` keys go to). */
const IMAGE_USERS: Record<string, string> = { 'debian-12': 'debian' };

/** The IPv4 address SSH can reach a running VM at: its first NIC with a lease. */
export function sshAddress(vm: Pick<Vm, 'state' | 'runtime'>): string | undefined {
  if (vm.state !== 'running') return undefined;
  return vm.runtime.nics?.find((n) => n.ipv4)?.ipv4 ?? undefined;
}

/** Runs the ssh client on our terminal; resolves with its exit status. */
function runSsh(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', args, { stdio: 'inherit' });
    child.on('error', (e) => reject(new HangarError('UNAVAILABLE', `cannot run ssh: ${e.message}`)));
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1)));
  });
}
