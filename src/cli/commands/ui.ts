/**
 * `hangar ui`: where the web UI is, and a one-time login link for it. The
 * link carries a single-use code valid for 2 minutes in its fragment (never
 * sent to a server, never logged); the UI exchanges it for the API token and
 * removes it from the address bar (docs/ui.md).
 */
import type { Command } from 'commander';
import { clientFor, note, out, printJson, withJson } from '../context.js';

interface LoginLink { code: string; expiresAt: number; path: string; listener: { address: string; tls: boolean } | null }

/** The origin a browser on this machine uses for a listener: a wildcard address becomes loopback. */
export function uiOrigin(listener: { address: string; tls: boolean }, remote?: string): string {
  if (remote) return remote;
  const address = listener.address.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
  return `${listener.tls ? 'https' : 'http'}://${address}`;
}

export function registerUiCommand(program: Command): void {
  withJson(
    program
      .command('ui')
      .description('print the web UI\'s address and a one-time login link (the daemon needs a TCP listener: hangard --listen)'),
  ).action(async (o: { json?: boolean }, cmd: Command) => {
    const client = clientFor(cmd);
    const link = await client.call<LoginLink>('POST', '/1.0/ui/login-links');
    // The daemon refuses without a listener, so it is there.
    const origin = uiOrigin(link.listener!, client.endpoint.remote);
    const url = `${origin}/ui/`;
    const loginUrl = `${origin}${link.path}`;
    if (o.json) return printJson({ url, loginUrl, expiresAt: new Date(link.expiresAt).toISOString() });
    out(`Hangar web UI: ${url}\n`);
    out(`Log in with this link within 2 minutes; it works once:\n  ${loginUrl}\n`);
    if (link.listener?.tls) {
      const info = await client.get<{ tlsFingerprint?: string }>('/1.0');
      note(`The daemon's certificate is self-signed: check that the browser shows SHA-256 ${info.tlsFingerprint ?? '(see GET /1.0)'} before accepting it.`);
    }
    return undefined;
  });
}
