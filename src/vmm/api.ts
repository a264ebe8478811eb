/**
 * The control API of one hangar-vmm process: HTTP/1.1 + JSON on a Unix
 * socket, shaped like Firecracker's so the same habits work:
 *
 *   PUT  /machine-config            {vcpu_count, mem_size_mib}
 *   PUT  /boot-source               {kernel_image_path, initrd_path?, boot_args?}
 *   PUT  /drives/{id}               {drive_id, path_on_host, is_root_device?, is_read_only?}
 *   PUT  /network-interfaces/{id}   {iface_id, host_dev_name, guest_mac?}
 *   PUT  /entropy                   {}  (adds a virtio-rng device)
 *   PUT  /actions                   {action_type: InstanceStart|Pause|Resume|SendCtrlAltDel|SendPowerButton|RequestShutdown|Stop}
 *   PATCH /vm                       {state: Paused|Resumed}
 *   PUT  /snapshot/create           {snapshot_path, mem_file_path}  (while Paused)
 *   PUT  /snapshot/load             {snapshot_path, mem_file_path, resume_vm?}  (before anything else)
 *   GET  /vm                        {state, vcpu_count, mem_size_mib, ...}
 *   GET  /metrics                   counters of vCPUs, buses and devices
 *   GET  /                          {app_name, id, state, vmm_version}
 *   GET  /openapi.json              the OpenAPI document of this API (schemas: src/api/vmm.ts)
 *
 * Success is 204 (PUT/PATCH) or 200 with JSON; errors are
 * {"fault_message": "...", "code": "<HangarError code>"} with its status.
 * Configuration is accepted only before InstanceStart.
 */
import { listenPrivate } from '../common/private-socket.js';
import fs from 'node:fs';
import http from 'node:http';
import { HangarError, toHangarError } from '../common/errors.js';
import { VMM_VERSION, type VmmController } from './controller.js';

const MAX_BODY = 64 * 1024;

function readBody(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        // Stop reading and answer; the connection closes after the answer (see listen()).
        req.removeAllListeners('data');
        req.pause();
        reject(new HangarError('INVALID_ARGUMENT', `request body larger than ${MAX_BODY} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') { resolve(undefined); return; }
      try { resolve(JSON.parse(text)); } catch { reject(new HangarError('INVALID_JSON', 'request body is not valid JSON')); }
    });
    req.on('error', reject);
  });
}

function send(res: http.ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) { res.writeHead(status); res.end(); return; }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The body validators (config.ts), loaded on first use: not needed to answer GET /. */
let validators: Promise<typeof import('./config.js')> | undefined;
export function loadValidators(): Promise<typeof import('./config.js')> {
  return (validators ??= import('./config.js'));
}

/** A path segment as the client meant it; a malformed %-escape is the client's mistake. */
function pathParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new HangarError('INVALID_ARGUMENT', `malformed %-escape in the path segment "${raw.slice(0, 80)}"`);
  }
}

export async function route(ctl: VmmController, method: string, url: string, body: unknown): Promise<{ status: number; body?: unknown }> {
  const path = url.split('?')[0]!.replace(/\/+$/, '') || '/';
  let m: RegExpExecArray | null;
  if (method === 'GET' && path === '/') return { status: 200, body: ctl.instanceInfo() };
  if (method === 'GET' && path === '/vm') return { status: 200, body: ctl.vmInfo() };
  if (method === 'GET' && path === '/metrics') return { status: 200, body: ctl.metrics() };
  if (method === 'GET' && path === '/machine-config') return { status: 200, body: ctl.machineConfig };
  if (method === 'GET' && path === '/openapi.json') return { status: 200, body: (await import('../api/vmm.js')).vmmOpenApi(VMM_VERSION) };
  if (method === 'PUT' || method === 'PATCH') {
    const v = await loadValidators();
    if (method === 'PUT' && path === '/machine-config') { ctl.setMachineConfig(v.parseMachineConfig(body)); return { status: 204 }; }
    if (method === 'PUT' && path === '/boot-source') { ctl.setBootSource(v.parseBootSource(body)); return { status: 204 }; }
    if (method === 'PUT' && (m = /^\/drives\/([^/]+)$/.exec(path))) { ctl.putDrive(v.parseDrive(body, pathParam(m[1]!))); return { status: 204 }; }
    if (method === 'PUT' && (m = /^\/network-interfaces\/([^/]+)$/.exec(path))) { ctl.putNet(v.parseNet(body, pathParam(m[1]!))); return { status: 204 }; }
    if (method === 'PUT' && path === '/entropy') { v.parseEntropy(body); ctl.setEntropy(true); return { status: 204 }; }
    if (method === 'PUT' && path === '/actions') { await ctl.action(v.parseAction(body)); return { status: 204 }; }
    if (method === 'PUT' && path === '/snapshot/create') { await ctl.createSnapshot(v.parseSnapshotCreate(body)); return { status: 204 }; }
    if (method === 'PUT' && path === '/snapshot/load') { await ctl.loadSnapshot(v.parseSnapshotLoad(body)); return { status: 204 }; }
    if (method === 'PATCH' && path === '/vm') { await ctl.action(v.parseVmStatePatch(body) === 'Paused' ? 'Pause' : 'Resume'); return { status: 204 }; }
  }
  const known = ['/', '/vm', '/metrics', '/machine-config', '/boot-source', '/actions', '/entropy', '/openapi.json', '/snapshot/create', '/snapshot/load'].includes(path) || /^\/(drives|network-interfaces)\/[^/]+$/.test(path);
  if (known) return { status: 405, body: { fault_message: `${method} is not allowed on ${path}`, code: 'INVALID_ARGUMENT' } };
  throw new HangarError('NOT_FOUND', `no such resource: ${path}`);
}

export class ControlServer {
  private server: http.Server | null = null;
  private firstAnswerHook: (() => void) | undefined;
  constructor(private readonly ctl: VmmController) {}

  /** Runs `fn` once, right after the first answer has been written (hangar-vmm preloads the VM's modules then). */
  afterFirstAnswer(fn: () => void): void {
    this.firstAnswerHook = fn;
  }

  private answered(): void {
    const fn = this.firstAnswerHook;
    if (!fn) return;
    this.firstAnswerHook = undefined;
    setImmediate(fn);
  }

  async listen(path: string): Promise<void> {
    try { fs.unlinkSync(path); } catch { /* not there */ }
    const srv = http.createServer((req, res) => {
      void (async () => {
        try {
          const body = await readBody(req);
          const r = await route(this.ctl, req.method ?? 'GET', req.url ?? '/', body);
          send(res, r.status, r.body);
        } catch (e) {
          const he = toHangarError(e);
          // After a refused request the rest of its body may still be unread: do not reuse the connection.
          if (!req.complete) res.setHeader('connection', 'close');
          send(res, he.status, { fault_message: he.message, code: he.code });
        }
        this.answered();
      })();
    });
    srv.keepAliveTimeout = 60_000;
    await listenPrivate(srv, path);
    this.server = srv;
  }

  /** Stops accepting connections; answers in flight still go out. */
  close(): void {
    this.server?.close();
    this.server?.closeIdleConnections();
  }
}
