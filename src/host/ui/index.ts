/**
 * The daemon's side of the web UI: static files, login codes, WebSocket
 * tickets, the VNC bridge. See docs/ui.md.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuthFailureLimiter } from '../auth.js';
import type { VmManager } from '../vms.js';
import { registerUiRoutes } from './routes.js';
import { registerUiStatic } from './static.js';
import type { UiService } from './service.js';
import { isPublicUiRequest, ticketFromProtocols } from './ws-ticket.js';

export { UiService } from './service.js';

export function registerWebUi(app: FastifyInstance, ui: UiService, vms: VmManager, limiter: AuthFailureLimiter | null): void {
  registerUiStatic(app, ui.webRoot);
  registerUiRoutes(app, ui, vms, limiter);
}

/**
 * True when a request on the TCP listener may pass without the bearer token:
 * a public UI request, or a WebSocket upgrade that offers a valid ticket
 * (consumed here). Anything else goes on to the token check.
 */
export function uiAuthBypass(ui: UiService, req: FastifyRequest): boolean {
  if (isPublicUiRequest(req.method, req.url)) return true;
  if (req.method !== 'GET' || String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return false;
  const ticket = ticketFromProtocols(req.headers['sec-websocket-protocol']);
  return ticket !== undefined && ui.wsTickets.redeem(ticket);
}
