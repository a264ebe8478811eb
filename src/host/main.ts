#!/usr/bin/env node
/**
 * hangard: the Hangar host daemon.
 *
 *   hangard [--data-dir D] [--socket S] [--listen HOST:PORT] [--log-level L] [--events-keep N]
 *           [--max-vms N] [--memory-reserve SIZE] [--memory-ratio R] [--cpu-ratio R] [--sample-interval S]
 *           [--default-network NAME|none]
 *
 * The admission flags override <data-dir>/hangard.json (docs/api.md, "Admission"), as
 * --sample-interval does its "monitoring" object (docs/monitoring.md).
 * Serves the API on a Unix socket (mode 0600) and, with --listen, on TCP
 * behind a bearer token. VMs run as their own processes: stopping or killing
 * the daemon leaves them running, and the next daemon re-adopts them.
 */
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import type { FastifyInstance } from 'fastify';
import { dataDir as defaultDataDir, projectRoot } from '../common/paths.js';
import { HangarError } from '../common/errors.js';
import { parseSize } from '../common/sizes.js';
import { DEFAULT_EVENTS_KEEP, Store } from './store.js';
import { OperationManager } from './operations.js';
import { EventBus } from './events.js';
import { HostChecker } from './hostcheck.js';
import { VmManager } from './vms.js';
import { NetworkManager } from './network/manager.js';
import { NO_NETWORK, isNetworkName } from './network/schemas.js';
import { networkModes } from './network/modes.js';
import { buildServer, type ApiContext } from './server.js';
import { listenUnix, parseListen, prepareTcpListener } from './listen.js';
import { cleanStaleWorkFolders, secureDataDir } from './datadir.js';
import { configureImportFromOptions, imageUploads } from './images/index.js';
import { loadEngines, loadImages } from './wiring.js';
import { loadAdmissionSettings, type AdmissionInput } from './admission.js';
import { createSnapshotManager } from './snapshots/index.js';
import { StorageService } from './storage/index.js';
import { volumeJobs } from './storage/routes.js';
import { createMonitor, loadMonitorSettings } from './monitor/index.js';
import { UiService } from './ui/index.js';
import { reconcileIsoVolumes } from './iso-media.js';
import { openDaemonLog, startupErrorLine } from './daemon-log.js';

const USAGE = 'usage: hangard [--data-dir DIR] [--socket PATH] [--listen HOST:PORT [--insecure-http]] [--log-level LEVEL] [--events-keep N]\n'
  + '               [--import-dir DIR]... [--image-quota SIZE] [--pool-quota SIZE] [--max-vms N] [--memory-reserve SIZE] [--memory-ratio R] [--cpu-ratio R]\n'
  + '               [--sample-interval SECONDS] [--default-network NAME|none]';

/** --default-network: the network cloud images' VMs join when none is named (none: no NIC). */
function defaultNetworkOption(v: string | undefined): { defaultNetwork?: string | null } {
  if (v === undefined) return {};
  if (v === NO_NETWORK) return { defaultNetwork: null };
  if (!isNetworkName(v)) throw new HangarError('INVALID_ARGUMENT', `--default-network wants a network name or "none", got "${v}"`);
  return { defaultNetwork: v };
}

/** --log-level / HANGAR_LOG_LEVEL: one of pino's levels (pino's own complaint names none of them). */
function parseLogLevel(v: string): pino.LevelWithSilent {
  const known = [...Object.keys(pino.levels.values), 'silent'];
  if (!known.includes(v)) throw new HangarError('INVALID_ARGUMENT', `--log-level wants one of ${known.join(', ')}, got "${v}"`);
  return v as pino.LevelWithSilent;
}

/** The logger over hangard.log alone, once it is open: a failed start is recorded there as well as printed. */
let fileLog: pino.Logger | null = null;

function parseEventsKeep(v: string | undefined): number {
  if (v === undefined) return DEFAULT_EVENTS_KEEP;
  const n = /^\d{1,9}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new HangarError('INVALID_ARGUMENT', `--events-keep wants a whole number >= 0 (0 keeps all), got "${v}"`);
  return n;
}

/** True when a daemon answers on the socket. */
function daemonAnswers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: socket, path: '/1.0', method: 'GET', timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => { req.destroy(); resolve(false); });
    req.on('error', () => resolve(false));
    req.end();
  });
}

function version(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'data-dir': { type: 'string' },
      socket: { type: 'string' },
      listen: { type: 'string' },
      'log-level': { type: 'string' },
      'events-keep': { type: 'string' },
      'max-vms': { type: 'string' },
      'memory-reserve': { type: 'string' },
      'memory-ratio': { type: 'string' },
      'cpu-ratio': { type: 'string' },
      'insecure-http': { type: 'boolean' },
      'import-dir': { type: 'string', multiple: true },
      'image-quota': { type: 'string' },
      'pool-quota': { type: 'string' },
      'sample-interval': { type: 'string' },
      'default-network': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) { process.stdout.write(`${USAGE}\n`); return; }

  const dataDir = path.resolve(values['data-dir'] ?? defaultDataDir());
  // Children (image builder, engines) find the data directory the same way we do.
  process.env.HANGAR_DATA_DIR = dataDir;
  const socket = path.resolve(values.socket ?? process.env.HANGAR_SOCKET ?? path.join(dataDir, 'hangard.sock'));
  const listen = values.listen ? parseListen(values.listen) : null;
  const eventsKeep = parseEventsKeep(values['events-keep']);
  const admissionFlags: AdmissionInput = {
    ...(values['max-vms'] !== undefined ? { maxVms: values['max-vms'] } : {}),
    ...(values['memory-reserve'] !== undefined ? { memoryReserve: values['memory-reserve'] } : {}),
    ...(values['memory-ratio'] !== undefined ? { memoryRatio: values['memory-ratio'] } : {}),
    ...(values['cpu-ratio'] !== undefined ? { cpuRatio: values['cpu-ratio'] } : {}),
  };
  const level = parseLogLevel(values['log-level'] ?? process.env.HANGAR_LOG_LEVEL ?? 'info');
  secureDataDir(dataDir);
  if (values['insecure-http'] && !listen) throw new HangarError('INVALID_ARGUMENT', '--insecure-http goes with --listen');
  const importPolicy = configureImportFromOptions({ importDir: values['import-dir'], imageQuota: values['image-quota'] });
  const tcpListener = listen ? prepareTcpListener(dataDir, { ...listen, insecureHttp: values['insecure-http'] === true }) : null;
  // A bad setting stops the daemon before it serves anything.
  const admission = loadAdmissionSettings(dataDir, admissionFlags);
  const monitorSettings = loadMonitorSettings(dataDir, { ...(values['sample-interval'] !== undefined ? { sampleInterval: values['sample-interval'] } : {}) });

  // Ready at once (daemon-log.ts): whatever fails from here on, the exit flushes the log and the error is the last word.
  const logFile = openDaemonLog(path.join(dataDir, 'hangard.log'));
  fileLog = pino({ name: 'hangard', level }, logFile);
  const streams: pino.StreamEntry[] = [{ level: level as pino.Level, stream: logFile }];
  if (process.stderr.isTTY) streams.push({ level: level as pino.Level, stream: pino.destination(2) });
  const log = pino({ name: 'hangard', level }, pino.multistream(streams));

  if (fs.existsSync(socket)) {
    if (await daemonAnswers(socket)) {
      process.stderr.write(`hangard: another daemon already answers on ${socket}\n`);
      process.exitCode = 1;
      return;
    }
    fs.rmSync(socket, { force: true });
    log.info({ socket }, 'removed stale socket');
  }

  cleanStaleWorkFolders(log);
  const store = new Store(dataDir, { eventsKeep });
  const operations = new OperationManager(store, log.child({ component: 'operations' }));
  const failed = operations.recover();
  if (failed > 0) log.warn({ count: failed }, 'operations left running by the previous daemon marked failed');
  operations.startPruning();
  const events = new EventBus(store);
  const storage = new StorageService({
    store, dataDir, log: log.child({ component: 'storage' }),
    ...(values['pool-quota'] !== undefined ? { defaultQuotaBytes: parseSize(values['pool-quota'], '--pool-quota') } : {}),
  });
  storage.recover();
  reconcileIsoVolumes(store, storage, log.child({ component: 'storage' }));
  // --pool-quota: the default pool's quota (and that of pools created without one).
  if (values['pool-quota'] !== undefined) storage.setPoolQuota('default', parseSize(values['pool-quota'], '--pool-quota'));
  const engines = loadEngines(log);
  const images = loadImages();
  void engines.kvm(); // warm the cache: the probe takes about half a second
  const networks = new NetworkManager({ dataDir, store, log: log.child({ component: 'networks' }), ...defaultNetworkOption(values['default-network']) });
  const vms = new VmManager({ dataDir, store, events, operations, engines, images, admission, storage, networks, log: log.child({ component: 'vms' }) });
  networks.useVms({ withLock: (name, fn) => vms.withVmLock(name, fn), handleOf: (name) => vms.liveHandle(name) });
  const host = new HostChecker({ engines, budget: () => vms.budget(), networkModes });
  log.info({ admission, budget: vms.budget() }, 'admission budget');
  await vms.recover();
  // After the VMs: which of them still run decides which TAPs stay.
  await networks.reconcile();
  const snapshots = createSnapshotManager({ store, events, operations, vms, storage, log });
  // Snapshot operations a crash cut short are settled once the VMs they touch have been re-adopted.
  await snapshots.reconcile();

  const monitor = createMonitor({ store, events, vms, dataDir, settings: monitorSettings, log: log.child({ component: 'monitor' }) });
  monitor.start();

  // The web UI (docs/ui.md): a browser reaches it on the TCP listener, with that listener's token.
  const ui = new UiService();
  if (tcpListener) ui.token = tcpListener.token;
  const ctx: ApiContext = { version: version(), dataDir, vms, operations, events, host, images, engines, storage, log, snapshots, networks: { manager: networks, store }, monitor: { monitor, store }, ui };
  const servers: FastifyInstance[] = [];
  const unix = await buildServer(ctx);
  servers.push(unix);
  await listenUnix(unix, socket);
  let tcpAddress: string | null = null;
  if (tcpListener) {
    const tcp = await tcpListener.listen(ctx);
    servers.push(tcp.server);
    tcpAddress = tcp.address;
    ui.listener = { address: tcp.address, tls: tcpListener.tls };
  }
  // Every socket either listener accepted, so shutdown can end the ones that linger.
  const sockets = new Set<import('node:net').Socket>();
  for (const s of servers) {
    s.server.on('connection', (sock: import('node:net').Socket) => {
      sockets.add(sock);
      sock.once('close', () => sockets.delete(sock));
    });
  }
  const pidFile = path.join(dataDir, 'hangard.pid');
  fs.writeFileSync(pidFile, `${process.pid}\n`);
  log.info({ pid: process.pid, dataDir, socket, tcp: tcpAddress, tlsFingerprint: ctx.tlsFingerprint, images: importPolicy, version: ctx.version }, 'hangard ready');

  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down; VMs keep running');
    // Whatever hangs below (a client that will not let go), the daemon still ends.
    setTimeout(() => { log.warn('shutdown took too long; exiting'); log.flush(); process.exit(0); }, 5000);
    await monitor.stop();
    vms.shutdown();
    operations.stopPruning();
    imageUploads(operations).abortAll('the daemon is stopping');
    volumeJobs(storage, operations).abortAll('the daemon is stopping');
    await Promise.allSettled(servers.map(async (s) => {
      const closing = s.close();
      s.server.closeAllConnections();
      // Upgraded sockets (WebSockets, refused upgrades) are not HTTP connections any more:
      // give their close frames a moment, then end them so close() can finish.
      setTimeout(() => { for (const sock of sockets) sock.destroy(); }, 300).unref();
      await closing;
    }));
    log.debug('servers closed');
    await operations.drain(2000);
    log.debug('operations drained');
    store.close();
    fs.rmSync(socket, { force: true });
    try { if (fs.readFileSync(pidFile, 'utf8').trim() === String(process.pid)) fs.rmSync(pidFile, { force: true }); } catch { /* gone */ }
    log.info('hangard stopped');
    log.flush();
    setTimeout(() => process.exit(0), 50).unref();
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception');
    log.flush();
    process.exit(1);
  });
}

main().catch((e: unknown) => {
  fileLog?.fatal({ err: e }, 'start-up failed');
  process.stderr.write(startupErrorLine(e));
  process.exit(1);
});
