/**
 * The REST + WebSocket API of hangard (docs/api.md). One function builds a
 * fastify instance over the shared daemon context; the daemon builds one for
 * the Unix socket and, when asked, one more for TCP that demands the token.
 *
 * Every answer is one of the three envelopes (sync, async, error). Errors
 * that fastify raises itself (validation, bad JSON, unknown route) are
 * rewrapped into the error envelope with our codes.
 */
import Fastify, { LogController, type FastifyInstance, type FastifyError, type FastifyReply } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import fastifyWebsocket from '@fastify/websocket';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { WebSocket } from 'ws';
import { HangarError, ERROR_STATUS, type ErrorCode } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import {
  type Image as ImageT, ImageName, ImageImportRequest, ImageBuildRequest, VmName, VmCreateRequest, VmStateRequest, VmExecRequest, VmExecResult, Vm, Operation, LifecycleEvent, Image, HostCheck, ErrorBody, AsyncBody, syncOf,
  VmDiskInfo, DiskAttachRequest,
} from './api/schemas.js';
import { DEVICE_ID_PATTERN } from '../api/names.js';
import { bearerMatches, AuthFailureLimiter } from './auth.js';
import { imageUploads, importPolicy, usedImageBytes, type UploadPart } from './images/index.js';
import type { Readable } from 'node:stream';
import { CONSOLE_CLOSE, CONSOLE_MAX_INPUT_FRAME, CONSOLE_MESSAGE_OVERHEAD } from '../api/console.js';
import type { ConsoleConnection } from './console-hub.js';
import type { VmManager, EngineRegistry, ImageProvider } from './vms.js';
import type { OperationManager } from './operations.js';
import type { EventBus } from './events.js';
import type { HostChecker } from './hostcheck.js';
import { EngineCapabilities } from '../api/engine.js';
import { readConsoleTail } from './console-log.js';
import { deleteUnusedImage } from './image-delete.js';
import { startImageBuild } from './images/build-op.js';
import { startDiskImageImport } from './images/disk-import-op.js';
import { SCREENSHOT_TYPES } from './display.js';
import { registerSnapshotRoutes } from './snapshots/routes.js';
import { registerIsoRoutes } from './iso-routes.js';
import type { SnapshotManager } from './snapshots/manager.js';
import type { StorageService } from './storage/index.js';
import { registerStorageRoutes } from './storage/routes.js';
import { registerNetworkRoutes } from './network/routes.js';
import type { NetworkManager } from './network/manager.js';
import type { Store } from './store.js';
import { registerMonitorRoutes, type Monitor } from './monitor/index.js';
import { registerWebUi, uiAuthBypass, type UiService } from './ui/index.js';

export const API_VERSION = '1.0';

export interface ApiContext {
  version: string;
  dataDir: string;
  vms: VmManager;
  operations: OperationManager;
  events: EventBus;
  host: HostChecker;
  images: ImageProvider;
  engines: EngineRegistry;
  log: Logger;
  /** Storage pools and volumes; the storage routes are served when present. */
  storage?: StorageService;
  /** SHA-256 fingerprint of the TCP listener's TLS certificate, when it serves TLS (shown by GET /1.0). */
  tlsFingerprint?: string;
  /** Snapshots and copies (absent: those routes answer UNSUPPORTED). */
  snapshots?: SnapshotManager;
  /** Virtual networks and the store they read VMs from (absent: no /1.0/networks routes). */
  networks?: { manager: NetworkManager; store: Store };
  /** Monitoring: metrics history, alerts, /metrics (absent: no monitoring routes). */
  monitor?: { monitor: Monitor; store: Store };
  /** The web UI: its files under /ui/, login codes, WebSocket tickets (absent: no UI). */
  ui?: UiService;
}

export interface ServerOptions {
  /** When set, every request must carry `Authorization: Bearer <token>` (the TCP listener). */
  token?: string;
  /** TLS certificate and key (PEM) for the TCP listener; absent: plain HTTP. */
  tls?: { cert: string; key: string };
  /** Counts failed authentications per remote address (TCP listener); a default one when absent. */
  authLimiter?: AuthFailureLimiter;
}

const ServerInfo = Type.Object({
  apiVersion: Type.String(),
  version: Type.String(),
  dataDir: Type.String(),
  pid: Type.Integer(),
  engines: Type.Array(EngineCapabilities),
  /** Image storage: the quota, what imported images take, where path imports may read from. */
  images: Type.Object({ quotaBytes: Type.Integer(), usedBytes: Type.Integer(), importDirs: Type.Array(Type.String()) }),
  /** SHA-256 fingerprint of the TCP listener's certificate (absent without a TLS listener). */
  tlsFingerprint: Type.Optional(Type.String()),
});

/** POST /1.0/images/uploads: announce an upload (sizes first, so the quota is checked before any byte). */
const ImageUploadRequest = Type.Object(
  {
    name: ImageName,
    kernelBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'Size of the kernel that will be PUT (a kernel image)' })),
    initrdBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'Size of the initrd that will be PUT' })),
    cmdline: Type.Optional(Type.String({ maxLength: 2048, description: 'Kernel command line (default: the engine\'s)' })),
    diskBytes: Type.Optional(Type.Integer({ minimum: 1, description: 'Size of the raw or qcow2 disk that will be PUT (a disk image, instead of kernelBytes)' })),
    boot: Type.Optional(Type.Union([Type.Literal('bios'), Type.Literal('uefi')], { description: 'Disk images: the firmware its boot loader needs (default bios)' })),
    format: Type.Optional(Type.Union([Type.Literal('raw'), Type.Literal('qcow2')], { description: 'Disk images: what the file is; its bytes must agree' })),
    description: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
const UploadParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });
const UploadPartParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }), part: Type.Union([Type.Literal('kernel'), Type.Literal('initrd'), Type.Literal('disk')]) });

const NameParams = Type.Object({ name: VmName });
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });
const Digits = Type.String({ pattern: '^[0-9]{1,9}$' });
const Bool = Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')]);

export const errors = { 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody, 500: ErrorBody, 504: ErrorBody };

function errorReply(reply: FastifyReply, code: ErrorCode, message: string, details?: unknown): FastifyReply {
  const error: Record<string, unknown> = { code, message };
  if (details !== undefined) error.details = details;
  return reply.code(ERROR_STATUS[code]).type('application/json').send({ type: 'error', error });
}

export function asyncReply(reply: FastifyReply, op: Operation): FastifyReply {
  const url = `/${API_VERSION}/operations/${op.id}`;
  return reply.code(202).header('location', url).send({ type: 'async', operation: url, metadata: op });
}

/** Turns fastify's own errors into our codes. */
function classify(err: FastifyError & { validation?: Array<{ params?: Record<string, unknown>; instancePath?: string; message?: string }>; validationContext?: string }): { code: ErrorCode; message: string; details?: unknown } {
  if (err instanceof HangarError) return { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) };
  if (err.validation) {
    const first = err.validation[0];
    const extra = first?.params?.additionalProperty;
    const where = `${err.validationContext ?? 'request'}${first?.instancePath ? first.instancePath.replace(/\//g, '.') : ''}`;
    const message = typeof extra === 'string'
      ? `${where} has an unknown field "${extra}"`
      : `${where} ${first?.message ?? 'is not valid'}`;
    return { code: 'INVALID_ARGUMENT', message, details: { context: err.validationContext, errors: err.validation.slice(0, 5).map((v) => ({ path: v.instancePath, message: v.message, params: v.params })) } };
  }
  switch (err.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { code: 'INVALID_JSON', message: 'request body is not valid JSON' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { code: 'INVALID_ARGUMENT', message: 'unsupported content type: send application/json' };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { code: 'INVALID_ARGUMENT', message: 'request body is too large' };
    default:
      break;
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return { code: err.statusCode === 404 ? 'NOT_FOUND' : 'INVALID_ARGUMENT', message: err.message };
  }
  return { code: 'INTERNAL', message: err.message || 'internal error' };
}

export async function buildServer(ctx: ApiContext, opts: ServerOptions = {}): Promise<FastifyInstance> {
  if (opts.tls && !opts.token) throw new HangarError('INVALID_ARGUMENT', 'a TLS listener needs a token');
  // The TLS options are hidden from the types: routes are the same either way, and fastify's
  // typings would otherwise make this a different kind of instance.
  const tlsOptions: object = opts.tls ? { https: { cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' } } : {};
  const app = Fastify({
    ...tlsOptions,
    loggerInstance: ctx.log.child({ component: 'api', listener: opts.token ? 'tcp' : 'unix' }),
    // Requests are logged at debug level by our onResponse hook instead.
    logController: new LogController({ disableRequestLogging: true }),
    // Closing the server also ends keep-alive and long-poll connections.
    forceCloseConnections: true,
    bodyLimit: 1024 * 1024,
    // Errors fastify raises before routing (a URL that does not decode) get our envelope too.
    frameworkErrors: (err, _req, reply) => {
      void errorReply(reply as unknown as FastifyReply, 'INVALID_ARGUMENT', err.code === 'FST_ERR_BAD_URL' ? 'the request URL is not valid (bad percent-encoding)' : err.message);
    },
    // Requests node's HTTP parser cannot read at all: answered in our envelope, then the connection ends.
    clientErrorHandler: (err: Error & { code?: string; rawPacket?: unknown }, socket) => {
      if (!socket.writable) { socket.destroy(); return; }
      const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
      // A HEAD request's answer carries no body, even this one.
      const head = Buffer.isBuffer(err.rawPacket) && err.rawPacket.subarray(0, 5).toString('latin1') === 'HEAD ';
      const body = head ? '' : JSON.stringify({ type: 'error', error: { code: 'INVALID_ARGUMENT', message: tooLarge ? 'request headers are too large' : 'malformed HTTP request' } });
      socket.end(`HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    },
    ajv: {
      // Unknown fields are an error, not silently dropped; types are never coerced.
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false },
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Our JSON parser, so malformed JSON becomes INVALID_JSON in our envelope.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') { done(null, undefined); return; }
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(new HangarError('INVALID_JSON', `request body is not valid JSON: ${(e as Error).message}`), undefined);
    }
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const c = classify(err);
    if (ERROR_STATUS[c.code] >= 500) req.log.error({ err, url: req.url }, 'request failed');
    else req.log.debug({ code: c.code, msg: c.message, url: req.url }, 'request rejected');
    if (req.headers.upgrade) reply.header('connection', 'close');
    return errorReply(reply, c.code, c.message, c.details);
  });
  app.setNotFoundHandler((req, reply) => errorReply(reply, 'NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));

  const limiter = opts.token ? (opts.authLimiter ?? new AuthFailureLimiter()) : null;
  if (opts.token && limiter) {
    const token = opts.token;
    app.addHook('onRequest', async (req, reply) => {
      const who = req.socket.remoteAddress ?? 'unknown';
      const blocked = limiter.blockedFor(who);
      if (blocked > 0) {
        // Too many wrong tokens from this address: no more guesses until the window moves on.
        reply.header('connection', 'close').header('retry-after', String(blocked));
        return reply.code(429).type('application/json').send({ type: 'error', error: { code: 'UNAUTHORIZED', message: `too many failed authentications from ${who}; retry in ${blocked} s` } });
      }
      // The UI's files, the login-code exchange, and WebSockets with a valid ticket (ui/ws-ticket.ts).
      if (ctx.ui && uiAuthBypass(ctx.ui, req)) return undefined;
      if (!bearerMatches(req.headers.authorization, token)) {
        limiter.fail(who);
        req.log.warn({ remote: who }, 'authentication failed');
        // A refused request's body is not read: the connection ends with the answer.
        reply.header('connection', 'close');
        return errorReply(reply.header('www-authenticate', 'Bearer'), 'UNAUTHORIZED', 'missing or wrong bearer token');
      }
      return undefined;
    });
  }
  app.addHook('onResponse', async (req, reply) => {
    req.log.debug({ method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Hangar API', version: ctx.version, description: 'hangard REST API; see docs/api.md' },
    },
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: CONSOLE_MAX_INPUT_FRAME } });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/1.0', { schema: { summary: 'Server information', response: { 200: syncOf(ServerInfo) } } }, async () => {
    const engines = await ctx.engines.capabilities();
    const policy = importPolicy();
    const images = { quotaBytes: policy.quotaBytes, usedBytes: usedImageBytes(), importDirs: policy.importDirs };
    return { type: 'sync' as const, metadata: { apiVersion: API_VERSION, version: ctx.version, dataDir: ctx.dataDir, pid: process.pid, engines, images, ...(ctx.tlsFingerprint ? { tlsFingerprint: ctx.tlsFingerprint } : {}) } };
  });

  app.get('/1.0/host', { schema: { summary: 'Host check', response: { 200: syncOf(HostCheck) } } }, async () =>
    ({ type: 'sync' as const, metadata: await ctx.host.check() }));

  app.get('/1.0/images', { schema: { summary: 'Images', response: { 200: syncOf(Type.Array(Image)) } } }, async () =>
    ({ type: 'sync' as const, metadata: (await ctx.images.listImages()) as ImageT[] }));

  const ImageParams = Type.Object({ name: ImageName });
  app.get('/1.0/images/:name', { schema: { summary: 'One image', params: ImageParams, response: { 200: syncOf(Image), ...errors } } }, async (req) => {
    const found = ((await ctx.images.listImages()) as ImageT[]).find((i) => i.name === req.params.name);
    if (!found) throw new HangarError('NOT_FOUND', `no image named "${req.params.name}"`, { image: req.params.name });
    return { type: 'sync' as const, metadata: found };
  });

  // A kernel import copies a file from the daemon's import folders, which takes well under
  // a second, so it answers synchronously with the new image (201); a disk image is checked
  // at once and copied as an operation (202).
  app.post('/1.0/images', { schema: { summary: "Import an image from files in the daemon's import folders: a kernel (201) or a disk (202, an operation)", body: ImageImportRequest, response: { 201: syncOf(Image), 202: AsyncBody, ...errors } } }, async (req, reply) => {
    if (req.body.disk !== undefined) return asyncReply(reply, await startDiskImageImport(ctx.operations, ctx.images, req.body));
    if (!ctx.images.importImage) throw new HangarError('UNSUPPORTED', 'this daemon cannot import images');
    const { kernel } = req.body;
    if (kernel === undefined) throw new HangarError('INVALID_ARGUMENT', 'an import needs a kernel or a disk', { field: 'kernel' });
    const image = await ctx.images.importImage({ ...req.body, kernel });
    return reply.code(201).send({ type: 'sync' as const, metadata: image });
  });

  app.post('/1.0/images/:name/build', { schema: { summary: 'Build (or rebuild) a built-in image', params: ImageParams, body: Type.Optional(ImageBuildRequest), response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, await startImageBuild(ctx.operations, ctx.images, req.params.name, req.body ?? {}, (image) => ctx.vms.imageUsers(image))));

  const uploads = imageUploads(ctx.operations);
  app.post('/1.0/images/uploads', { schema: { summary: 'Start an image upload (then PUT its parts)', body: ImageUploadRequest, response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, uploads.begin(req.body)));

  app.delete('/1.0/images/uploads/:id', { schema: { summary: 'Cancel an image upload', params: UploadParams, response: { 200: syncOf(Type.Object({ id: Type.String() })), ...errors } } }, async (req) => {
    uploads.cancel(req.params.id);
    return { type: 'sync' as const, metadata: { id: req.params.id } };
  });

  // The bytes of a part arrive as a stream, never buffered whole: only these routes take octet-streams.
  await app.register(async (sub) => {
    sub.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    sub.put('/1.0/images/uploads/:id/:part', {
      schema: { summary: 'Upload the kernel, initrd or disk of an image upload (application/octet-stream)', params: UploadPartParams, response: { 200: syncOf(Type.Object({ part: Type.String(), bytes: Type.Integer(), image: Type.Optional(Image) })), ...errors } },
    }, async (req, reply) => {
      const body = req.body as Readable | undefined;
      if (!body || typeof (body as Readable).pipe !== 'function') throw new HangarError('INVALID_ARGUMENT', 'send the bytes as application/octet-stream');
      const { id, part } = req.params as { id: string; part: UploadPart };
      const len = req.headers['content-length'] !== undefined ? Number(req.headers['content-length']) : undefined;
      try {
        const r = await uploads.receive(id, part, body, len);
        return { type: 'sync' as const, metadata: r as { part: string; bytes: number; image?: ImageT } };
      } catch (e) {
        // Cut off mid-part: what the client still sends is not read, the connection ends with the
        // answer. Refused before the first byte was read: node discards the body and keeps the connection.
        if (body.readableDidRead || body.destroyed) reply.header('connection', 'close');
        throw e;
      }
    });
  });

  app.delete('/1.0/images/:name', { schema: { summary: 'Delete an imported image', params: ImageParams, response: { 200: syncOf(Type.Object({ name: Type.String() })), ...errors } } }, async (req) => {
    deleteUnusedImage(ctx.images, (image) => ctx.vms.imageUsers(image), req.params.name);
    return { type: 'sync' as const, metadata: { name: req.params.name } };
  });

  app.get('/1.0/vms', { schema: { summary: 'List VMs', response: { 200: syncOf(Type.Array(Vm)) } } }, async () =>
    ({ type: 'sync' as const, metadata: ctx.vms.list() }));

  app.post('/1.0/vms', { schema: { summary: 'Create (and by default start) a VM', body: VmCreateRequest, response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, await ctx.vms.create(req.body)));

  app.get('/1.0/vms/:name', { schema: { summary: 'One VM', params: NameParams, response: { 200: syncOf(Vm), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: await ctx.vms.get(req.params.name) }));

  app.delete('/1.0/vms/:name', { schema: { summary: 'Delete a VM', params: NameParams, querystring: Type.Object({ force: Type.Optional(Bool) }, { additionalProperties: false }), response: { 202: AsyncBody, ...errors } } }, async (req, reply) => {
    const force = req.query.force === 'true' || req.query.force === '1';
    return asyncReply(reply, ctx.vms.delete(req.params.name, force));
  });

  // A VM's disks (docs/api.md, "Disks"): attach and detach are operations (hot-plug on a running QEMU VM).
  const DiskParams = Type.Object({ name: VmName, disk: Type.String({ pattern: DEVICE_ID_PATTERN }) });
  app.get('/1.0/vms/:name/disks', { schema: { summary: "A VM's disks", params: NameParams, response: { 200: syncOf(Type.Array(VmDiskInfo)), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: ctx.vms.diskOps.list(req.params.name) }));
  app.post('/1.0/vms/:name/disks', { schema: { summary: 'Attach a disk (a new volume or an existing one)', params: NameParams, body: DiskAttachRequest, response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, ctx.vms.diskOps.attach(req.params.name, req.body)));
  app.delete('/1.0/vms/:name/disks/:disk', { schema: { summary: 'Detach a disk (its volume is kept)', params: DiskParams, response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, ctx.vms.diskOps.detach(req.params.name, req.params.disk)));

  app.put('/1.0/vms/:name/state', { schema: { summary: 'Start, stop, restart, pause or resume a VM', params: NameParams, body: VmStateRequest, response: { 202: AsyncBody, ...errors } } }, async (req, reply) =>
    asyncReply(reply, ctx.vms.changeState(req.params.name, req.body)));

  app.post('/1.0/vms/:name/exec', { schema: { summary: 'Run a command in the guest through its agent (waits for it)', params: NameParams, body: VmExecRequest, response: { 200: syncOf(VmExecResult), ...errors, 503: ErrorBody } } }, async (req) =>
    ({ type: 'sync' as const, metadata: await ctx.vms.exec(req.params.name, req.body) }));

  app.get('/1.0/vms/:name/logs', { schema: { summary: 'Serial console log (text/plain)', params: NameParams, querystring: Type.Object({ tail: Type.Optional(Digits) }, { additionalProperties: false }) } }, async (req, reply) => {
    const tail = req.query.tail !== undefined ? Number(req.query.tail) : undefined;
    return reply.type('text/plain; charset=utf-8').send(readConsoleTail(ctx.vms.consoleLogOf(req.params.name), tail));
  });

  app.get('/1.0/vms/:name/screenshot', { schema: { summary: "What a running VM's display shows (image/png, or image/x-portable-pixmap with format=ppm)", params: NameParams, querystring: Type.Object({ format: Type.Optional(Type.Union([Type.Literal('png'), Type.Literal('ppm')])) }, { additionalProperties: false }) } }, async (req, reply) => {
    const format = req.query.format ?? 'png';
    return reply.type(SCREENSHOT_TYPES[format]).send(await ctx.vms.screenshot(req.params.name, format));
  });

  app.get('/1.0/vms/:name/console', {
    websocket: true,
    schema: { params: NameParams },
    // Refuse the upgrade with a normal error answer when there is no console to join.
    preHandler: async (req) => {
      const { name } = req.params as { name: string };
      const vm = await ctx.vms.get(name);
      if (vm.state !== 'running' && vm.state !== 'paused') {
        throw new HangarError('INVALID_STATE', `VM "${name}" is ${vm.state}: its console is available while it runs`, { name, state: vm.state });
      }
    },
  }, (socket: WebSocket, req) => {
    const { name } = req.params as { name: string };
    // Input is read only while the VM's console takes it (see ConsoleHub): paused until attached,
    // and again whenever the console stream is full. What ws had already parsed waits in `early`.
    socket.pause();
    const early: Buffer[] = [];
    let conn: ConsoleConnection | null = null;
    let closed = false;
    let unsent = 0;
    const forward = (buf: Buffer): void => {
      if (conn!.write(buf)) return;
      socket.pause();
      conn!.onWritable(() => socket.resume());
    };
    socket.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      if (socket.readyState !== socket.OPEN) return;
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
      if (conn) forward(buf); else early.push(buf);
    });
    socket.on('close', () => { closed = true; conn?.detach(); });
    ctx.vms.attachConsole(name, {
      send: (b) => {
        if (socket.readyState !== socket.OPEN) return;
        unsent++;
        socket.send(b, { binary: true }, () => { unsent--; });
      },
      // Each queued message costs memory beyond its payload: charge it, so tiny messages cannot add up unseen.
      buffered: () => socket.bufferedAmount + unsent * CONSOLE_MESSAGE_OVERHEAD,
      close: (reason, code) => {
        if (socket.readyState !== socket.OPEN) return;
        conn?.detach();
        socket.close(code, reason.slice(0, 120));
        // Read again so the client's closing answer is seen (input may have been paused).
        socket.resume();
      },
    }).then((c) => {
      if (closed) { c.detach(); return; }
      conn = c;
      for (const b of early.splice(0)) forward(b);
      c.onWritable(() => socket.resume());
    }).catch((e: unknown) => {
      const msg = e instanceof Error ? e.message : String(e);
      const code = e instanceof HangarError && e.code === 'RESOURCE_EXHAUSTED' ? CONSOLE_CLOSE.TOO_MANY_CLIENTS : CONSOLE_CLOSE.ATTACH_FAILED;
      if (socket.readyState === socket.OPEN) socket.close(code, msg.slice(0, 120));
      socket.resume();
    });
  });

  registerSnapshotRoutes(app as unknown as FastifyInstance, ctx);
  if (ctx.ui) registerWebUi(app as unknown as FastifyInstance, ctx.ui, ctx.vms, limiter);
  registerIsoRoutes(app as unknown as FastifyInstance, ctx);
  if (ctx.storage) await registerStorageRoutes(app as unknown as FastifyInstance, { storage: ctx.storage, operations: ctx.operations }, asyncReply);
  if (ctx.networks) await registerNetworkRoutes(app as unknown as FastifyInstance, ctx.networks.manager, ctx.networks.store);
  if (ctx.monitor) await registerMonitorRoutes(app as unknown as FastifyInstance, ctx.monitor.monitor, ctx.monitor.store);

  app.get('/1.0/operations', { schema: { summary: 'Recent operations', response: { 200: syncOf(Type.Array(Operation)) } } }, async () =>
    ({ type: 'sync' as const, metadata: ctx.operations.list() }));

  app.get('/1.0/operations/:id', { schema: { summary: 'One operation', params: IdParams, response: { 200: syncOf(Operation), ...errors } } }, async (req) =>
    ({ type: 'sync' as const, metadata: ctx.operations.get(req.params.id) }));

  app.get('/1.0/operations/:id/wait', { schema: { summary: 'Wait for an operation (timeout in seconds, default 60)', params: IdParams, querystring: Type.Object({ timeout: Type.Optional(Digits) }, { additionalProperties: false }), response: { 200: syncOf(Operation), ...errors } } }, async (req) => {
    const timeoutS = Math.min(req.query.timeout !== undefined ? Number(req.query.timeout) : 60, 3600);
    return { type: 'sync' as const, metadata: await ctx.operations.wait(req.params.id, timeoutS * 1000) };
  });

  const EventsQuery = Type.Object({ since: Type.Optional(Digits), vm: Type.Optional(VmName) }, { additionalProperties: false });
  app.route({
    method: 'GET',
    url: '/1.0/events',
    schema: { summary: 'Lifecycle events; a WebSocket upgrade streams new ones', querystring: EventsQuery, response: { 200: syncOf(Type.Array(LifecycleEvent)), ...errors } },
    handler: async (req) => {
      const q = req.query as { since?: string; vm?: string };
      return { type: 'sync' as const, metadata: ctx.events.list({ ...(q.since !== undefined ? { since: Number(q.since) } : {}), ...(q.vm !== undefined ? { vm: q.vm } : {}) }) };
    },
    wsHandler: (socket: WebSocket, req) => {
      const q = req.query as { since?: string; vm?: string };
      const wanted = (e: { vm: string }): boolean => q.vm === undefined || e.vm === q.vm;
      let lastSeq = q.since !== undefined ? Number(q.since) : -1;
      const send = (e: { seq: number; vm: string }): void => {
        if (!wanted(e) || e.seq <= lastSeq) return;
        lastSeq = e.seq;
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(e));
      };
      // Subscribe first, then catch up from the store, so nothing falls between the two.
      const queued: Array<{ seq: number; vm: string }> = [];
      let live = false;
      const unsubscribe = ctx.events.subscribe((e) => { if (live) send(e); else queued.push(e); });
      if (q.since !== undefined) {
        for (const e of ctx.events.list({ since: Number(q.since), ...(q.vm !== undefined ? { vm: q.vm } : {}), limit: 10000 })) send(e);
      }
      live = true;
      for (const e of queued.splice(0)) send(e);
      socket.on('close', unsubscribe);
    },
  });

  return app as unknown as FastifyInstance;
}
