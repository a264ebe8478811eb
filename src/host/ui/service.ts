/**
 * What the daemon keeps for its web UI: where the built UI lies, the login
 * codes and WebSocket tickets (one-time-secrets.ts), the API token a login
 * code is exchanged for, and the TCP listener a browser reaches.
 *
 * One instance is shared by both listeners: `hangar ui` asks for a login code
 * on the Unix socket, the browser redeems it on the TCP listener.
 */
import path from 'node:path';
import { projectRoot } from '../../common/paths.js';
import { OneTimeSecrets } from './one-time-secrets.js';

/** A login code lives 2 minutes: long enough to click the link, short enough to be useless later. */
export const LOGIN_CODE_TTL_MS = 2 * 60_000;
/** A WebSocket ticket is asked for right before the socket opens. */
export const WS_TICKET_TTL_MS = 30_000;

export interface UiListener {
  /** host:port as bound (IPv6 in brackets). */
  address: string;
  tls: boolean;
}

export class UiService {
  readonly loginCodes: OneTimeSecrets;
  readonly wsTickets: OneTimeSecrets;
  /** The TCP listener's API token; null without a TCP listener (the Unix socket has none). */
  token: string | null = null;
  listener: UiListener | null = null;

  constructor(readonly webRoot: string = defaultWebRoot(), now?: () => number) {
    this.loginCodes = new OneTimeSecrets({ ttlMs: LOGIN_CODE_TTL_MS, max: 64, ...(now ? { now } : {}) });
    this.wsTickets = new OneTimeSecrets({ ttlMs: WS_TICKET_TTL_MS, max: 1024, ...(now ? { now } : {}) });
  }
}

/** The Vite build of web/ (scripts/setup.sh writes it; HANGAR_WEB_ROOT overrides for development). */
export function defaultWebRoot(): string {
  return process.env.HANGAR_WEB_ROOT ? path.resolve(process.env.HANGAR_WEB_ROOT) : path.join(projectRoot(), 'dist', 'web');
}
