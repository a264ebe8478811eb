/**
 * `hangar daemon start|stop|status`: run hangard in the background on this
 * host. The daemon is a detached `node dist/src/host/main.js` whose output
 * goes to <data dir>/hangard.log; it writes its own pid to
 * <data dir>/hangard.pid, which `stop` uses to send SIGTERM.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { dataDir, projectRoot } from '../../common/paths.js';
import type { ApiClient } from '../client.js';
import { clientFor, note, out, parseIntOption, printJson, withJson, type GlobalOptions } from '../context.js';
import { EXIT } from '../exit-codes.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function pidFile(): string {
  return path.join(dataDir(), 'hangard.pid');
}

/** The daemon's own structured log (it writes this itself). */
export function daemonLogFile(): string {
  return path.join(dataDir(), 'hangard.log');
}

/** Where the detached daemon's stdout/stderr go: start-up failures and crashes land here. */
export function daemonOutputFile(): string {
  return path.join(dataDir(), 'hangard.stderr');
}

export function daemonEntry(): string {
  return path.join(projectRoot(), 'dist', 'src', 'host', 'main.js');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in the pid file, when that process exists and is a Hangar daemon (not a recycled pid). */
export function readDaemonPid(): { pid: number | null; stale: boolean } {
  let text: string;
  try {
    text = fs.readFileSync(pidFile(), 'utf8');
  } catch {
    return { pid: null, stale: false };
  }
  const pid = Number(text.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return { pid: null, stale: true };
  if (!alive(pid)) return { pid: null, stale: true };
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!/hangard|host[/\\]main\.(js|ts)/.test(cmdline)) return { pid: null, stale: true };
  } catch {
    /* no /proc: trust the pid file */
  }
  return { pid, stale: false };
}

function logTail(file: string, lines = 15): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n').trim();
  } catch {
    return '';
  }
}

export interface StartResult {
  started: boolean;
  pid: number | null;
  socket: string;
  log: string;
}

/**
 * Starts hangard detached unless it already answers, and waits until its
 * socket does. Exported for `hangar up`.
 */
export async function ensureDaemon(client: ApiClient, timeoutS = 60, quiet = false, daemonArgs: string[] = []): Promise<StartResult> {
  const socket = client.endpoint.socket;
  const log = daemonLogFile();
  if (client.endpoint.remote) throw new HangarError('UNSUPPORTED', 'the daemon of a remote host cannot be started from here (drop --remote)');
  if (await client.ping()) return { started: false, pid: readDaemonPid().pid, socket, log };
  const entry = daemonEntry();
  if (!fs.existsSync(entry)) {
    throw new HangarError('UNAVAILABLE', `${entry} is missing: build Hangar first (bash scripts/setup.sh, or ./hangar up)`);
  }
  const output = daemonOutputFile();
  fs.mkdirSync(path.dirname(output), { recursive: true, mode: 0o700 });
  const fd = fs.openSync(output, 'a');
  if (!quiet) note(`Starting the Hangar daemon (log: ${log})`);
  // Data dir and socket go on the command line: the daemon then listens exactly where this client looks.
  const child = spawn(process.execPath, [entry, '--data-dir', dataDir(), '--socket', socket, ...daemonArgs], {
    detached: true,
    stdio: ['ignore', fd, fd],
    cwd: projectRoot(),
  });
  fs.closeSync(fd);
  let exited: number | string | null = null;
  child.on('exit', (code, signal) => (exited = code ?? signal ?? 'unknown'));
  child.unref();
  const deadline = Date.now() + timeoutS * 1000;
  while (Date.now() < deadline) {
    if (await client.ping(1000)) return { started: true, pid: child.pid ?? null, socket, log };
    if (exited !== null) {
      const tail = logTail(output) || logTail(log);
      throw new HangarError('UNAVAILABLE', `hangard exited (${exited}) before it answered${tail ? `:\n${tail}\n` : ''} (see ${output} and ${log})`);
    }
    await sleep(200);
  }
  throw new HangarError('TIMEOUT', `hangard (pid ${child.pid}) did not answer on ${socket} within ${timeoutS} s; see ${log}`);
}

export function registerDaemonCommands(program: Command): void {
  const daemon = program.command('daemon').description('run the Hangar daemon (hangard) on this host');

  withJson(
    daemon
      .command('start')
      .description('start hangard in the background and wait until it answers')
      .option('--timeout <seconds>', 'how long to wait for it to answer', parseIntOption('--timeout', 1, 3600), 60)
      .option('--listen <host:port>', 'also serve the API and the web UI on TCP (TLS and the token; see hangar ui)')
      .option('--insecure-http', 'with --listen on a loopback address: plain HTTP instead of TLS'),
  ).action(async (o: { json?: boolean; timeout: number; listen?: string; insecureHttp?: boolean }, cmd: Command) => {
    if (o.insecureHttp && !o.listen) throw new HangarError('INVALID_ARGUMENT', '--insecure-http goes with --listen');
    const args = o.listen ? ['--listen', o.listen, ...(o.insecureHttp ? ['--insecure-http'] : [])] : [];
    const r = await ensureDaemon(clientFor(cmd), o.timeout, Boolean(o.json), args);
    if (o.json) return printJson(r);
    if (r.started) out(`hangard started (pid ${r.pid}), listening on ${r.socket}${o.listen ? ` and ${o.listen}` : ''}\n`);
    else out(`hangard is already running${r.pid ? ` (pid ${r.pid})` : ''} on ${r.socket}${o.listen ? '; its listeners are unchanged (hangar daemon stop first)' : ''}\n`);
  });

  withJson(
    daemon
      .command('stop')
      .description('stop hangard (SIGTERM to the pid in <data dir>/hangard.pid); running VMs are left to the next daemon to adopt')
      .option('--timeout <seconds>', 'how long to wait for it to exit', parseIntOption('--timeout', 1, 3600), 30)
      .option('-f, --force', 'send SIGKILL if it has not exited by then'),
  ).action(async (o: { json?: boolean; timeout: number; force?: boolean }, cmd: Command) => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    if (g.remote ?? process.env.HANGAR_REMOTE) throw new HangarError('UNSUPPORTED', 'the daemon of a remote host cannot be stopped from here (drop --remote)');
    const { pid, stale } = readDaemonPid();
    if (pid === null) {
      if (await clientFor(cmd).ping()) throw new HangarError('NOT_FOUND', `a daemon answers but ${pidFile()} does not name it; stop it by its own means`);
      if (o.json) return printJson({ stopped: false, running: false });
      out(`hangard is not running${stale ? ' (removed nothing; the pid file was stale)' : ''}\n`);
      return;
    }
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + o.timeout * 1000;
    while (alive(pid) && Date.now() < deadline) await sleep(100);
    let killed = false;
    if (alive(pid)) {
      if (!o.force) throw new HangarError('TIMEOUT', `hangard (pid ${pid}) did not exit within ${o.timeout} s after SIGTERM (use --force to SIGKILL it)`);
      process.kill(pid, 'SIGKILL');
      killed = true;
      while (alive(pid)) await sleep(50);
    }
    if (o.json) return printJson({ stopped: true, pid, killed });
    out(`hangard stopped (pid ${pid}${killed ? ', killed' : ''})\n`);
  });

  withJson(daemon.command('status').description('is hangard running? (exit code 5 when not)')).action(async (o: { json?: boolean }, cmd: Command) => {
    const client = clientFor(cmd);
    const running = await client.ping();
    let info: Record<string, unknown> | null = null;
    if (running) {
      try {
        info = await client.get<Record<string, unknown>>('/1.0');
      } catch {
        info = null;
      }
    }
    const pid = client.endpoint.remote ? null : readDaemonPid().pid;
    const status = {
      running,
      endpoint: client.describe(),
      pid,
      version: info && typeof info.version === 'string' ? info.version : null,
      dataDir: info && typeof info.dataDir === 'string' ? info.dataDir : client.endpoint.remote ? null : dataDir(),
      ...(info && typeof info.tlsFingerprint === 'string' ? { tlsFingerprint: info.tlsFingerprint } : {}),
    };
    if (o.json) printJson(status);
    else if (running) out(`hangard is running${pid ? ` (pid ${pid})` : ''} at ${status.endpoint}${status.version ? `, version ${status.version}` : ''}\n${status.tlsFingerprint ? `TLS certificate SHA-256: ${status.tlsFingerprint}\n` : ''}`);
    else out(`hangard is not running (no answer at ${status.endpoint})\n`);
    if (!running) process.exitCode = EXIT.UNAVAILABLE;
  });
}
