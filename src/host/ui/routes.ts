/**
 * The web UI's API routes (docs/api.md, "Web UI"):
 *   POST /1.0/ui/login-links   a one-time login code for `hangar ui` (needs the caller's own access)
 *   POST /1.0/ui/login         exchanges a login code for the API token (public; wrong codes count as failed logins)
 *   POST /1.0/ui/ws-tickets    a single-use ticket to open one WebSocket (see ws-ticket.ts)
 *   GET  /1.0/vms/{name}/vnc   WebSocket: the VM's VNC stream (RFB), for noVNC
 */
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import type { Socket } from 'node:net';
import { Type } from 'typebox';
import { HangarError } from '../../common/errors.js';
import { ErrorBody, syncOf, VmName } from '../api/schemas.js';
import type { AuthFailureLimiter } from '../auth.js';
import type { VmManager } from '../vms.js';
import { LOGIN_CODE_TTL_MS, type UiService } from './service.js';

const LoginLink = Type.Object({
  code: Type.String({ description: 'Single-use login code, valid for 2 minutes' }),
  expiresAt: Type.Integer({ description: 'ms since epoch' }),
  path: Type.String({ description: 'Path and fragment to open on the TCP listener, e.g. /ui/#login=CODE' }),
  listener: Type.Union([Type.Object({ address: Type.String(), tls: Type.Boolean() }), Type.Null()], { description: 'The TCP listener that serves the UI (null: the daemon has none)' }),
});
const LoginRequest = Type.Object({ code: Type.String({ minLength: 1, maxLength: 128 }) }, { additionalProperties: false });
const LoginResult = Type.Object({ token: Type.String({ description: 'The API token: send it as Authorization: Bearer' }) });
const Ticket = Type.Object({ ticket: Type.String(), expiresAt: Type.Integer(), protocols: Type.Array(Type.String(), { description: 'Subprotocols to offer when opening the WebSocket' }) });
const errors = { 400: ErrorBody, 401: ErrorBody, 409: ErrorBody, 503: ErrorBody };

export const NO_LISTENER_ADVICE = 'the web UI is served on the daemon\'s TCP listener, and this daemon has none. Restart it with one (running VMs keep running): '
  + '`hangar daemon stop && hangar daemon start --listen 127.0.0.1:8443 --insecure-http` for this machine only (plain HTTP on loopback), '
  + 'or `--listen 0.0.0.0:8443` for TLS with the daemon\'s self-signed certificate (hangard takes the same --listen and --insecure-http)';

export function registerUiRoutes(app: FastifyInstance, ui: UiService, vms: VmManager, limiter: AuthFailureLimiter | null): void {
  app.post('/1.0/ui/login-links', { schema: { summary: 'A one-time login link for the web UI (hangar ui)', response: { 200: syncOf(LoginLink), ...errors } } }, async () => {
    if (!ui.token || !ui.listener) throw new HangarError('UNAVAILABLE', NO_LISTENER_ADVICE);
    const { secret, expiresAt } = ui.loginCodes.issue();
    return { type: 'sync' as const, metadata: { code: secret, expiresAt, path: `/ui/#login=${secret}`, listener: ui.listener } };
  });

  app.post('/1.0/ui/login', { schema: { summary: 'Exchange a one-time login code for the API token (no token needed)', body: LoginRequest, response: { 200: syncOf(LoginResult), ...errors } } }, async (req) => {
    if (!ui.token) throw new HangarError('UNAVAILABLE', NO_LISTENER_ADVICE);
    if (!ui.loginCodes.redeem((req.body as { code: string }).code)) {
      limiter?.fail(req.socket.remoteAddress ?? 'unknown');
      throw new HangarError('UNAUTHORIZED', `this login code is not valid: it was used already, or is older than ${LOGIN_CODE_TTL_MS / 60_000} minutes. Run hangar ui again for a new link`);
    }
    req.log.info({ remote: req.socket.remoteAddress }, 'web UI login with a one-time code');
    return { type: 'sync' as const, metadata: { token: ui.token } };
  });

  app.post('/1.0/ui/ws-tickets', { schema: { summary: 'A single-use ticket to open one WebSocket from a browser (valid 30 s)', response: { 200: syncOf(Ticket), ...errors } } }, async () => {
    const { secret, expiresAt } = ui.wsTickets.issue();
    return { type: 'sync' as const, metadata: { ticket: secret, expiresAt, protocols: ['hangar.v1', `hangar.ticket.${secret}`] } };
  });

  const NameParams = Type.Object({ name: VmName });
  // The VNC server is opened before the upgrade, so a VM without a display gets a normal error answer.
  const opened = new WeakMap<object, Socket>();
  app.get('/1.0/vms/:name/vnc', {
    websocket: true,
    schema: { params: NameParams, hide: true },
    preHandler: async (req) => {
      if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') throw new HangarError('INVALID_ARGUMENT', 'GET /1.0/vms/{name}/vnc is a WebSocket: send an upgrade request');
      opened.set(req.raw, await vms.openDisplay((req.params as { name: string }).name));
    },
  }, (socket: WebSocket, req) => {
    const vnc = opened.get(req.raw)!;
    opened.delete(req.raw);
    // A slow browser: stop reading the VNC server while much is queued, resume once it is written.
    let queued = 0;
    let paused = false;
    vnc.on('data', (chunk: Buffer) => {
      if (socket.readyState !== socket.OPEN) return;
      queued += chunk.length;
      socket.send(chunk, { binary: true }, () => {
        queued -= chunk.length;
        if (paused && queued < 1024 * 1024) { paused = false; vnc.resume(); }
      });
      if (!paused && queued > 4 * 1024 * 1024) { paused = true; vnc.pause(); }
    });
    socket.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      vnc.write(Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer));
    });
    vnc.on('close', () => { if (socket.readyState === socket.OPEN) socket.close(1000, 'VNC server closed'); });
    vnc.on('error', () => { if (socket.readyState === socket.OPEN) socket.close(1011, 'VNC server error'); });
    socket.on('close', () => vnc.destroy());
  });
}
