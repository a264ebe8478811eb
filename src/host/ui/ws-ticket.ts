/**
 * How a browser authenticates a WebSocket: it cannot set an Authorization
 * header there, so it first asks for a ticket (POST /1.0/ui/ws-tickets, with
 * the token in the header), then offers two subprotocols when it opens the
 * socket: `hangar.v1` and `hangar.ticket.<ticket>`. The ticket never sits in
 * the URL (so never in logs or history) and works once, within 30 s. The
 * server answers with `hangar.v1`, the first offered, so the ticket is not
 * echoed back.
 */
export const WS_PROTOCOL = 'hangar.v1';
export const WS_TICKET_PREFIX = 'hangar.ticket.';

/** The ticket in a Sec-WebSocket-Protocol header, if one is offered. */
export function ticketFromProtocols(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header.join(',') : header;
  if (!value) return undefined;
  for (const p of value.split(',')) {
    const t = p.trim();
    if (t.startsWith(WS_TICKET_PREFIX)) return t.slice(WS_TICKET_PREFIX.length);
  }
  return undefined;
}

/** Requests that need no token: the UI's files and the exchange of a login code. */
export function isPublicUiRequest(method: string, url: string): boolean {
  const p = url.split('?')[0]!;
  if ((method === 'GET' || method === 'HEAD') && (p === '/ui' || p.startsWith('/ui/'))) return true;
  return method === 'POST' && p === '/1.0/ui/login';
}
