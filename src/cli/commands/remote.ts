/**
 * `hangar remote add|list|remove`: the remote daemons this CLI trusts, each
 * pinned by its TLS certificate's SHA-256 fingerprint (see remotes.ts).
 * `add` shows the fingerprint the daemon presents and pins it once accepted:
 * on a terminal by answering yes, in scripts with --fingerprint.
 */
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { note, out, printJson, withJson } from '../context.js';
import { fetchFingerprint, loadRemotes, normalizeFingerprint, pinRemote, askYesNo, unpinRemote } from '../remotes.js';
import { renderRows } from '../output.js';

/** The origin (https://host:port) of a remote URL; only https can be pinned. */
export function remoteOrigin(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new HangarError('INVALID_ARGUMENT', `"${url}" is not a URL (example: https://host:8443)`);
  }
  if (u.protocol !== 'https:') throw new HangarError('INVALID_ARGUMENT', `a remote is an https:// URL, got "${url}"`);
  return u.origin;
}

export function registerRemoteCommands(program: Command): void {
  const remote = program.command('remote').description('remote daemons this CLI trusts (TLS certificate pinning)');

  withJson(
    remote
      .command('add')
      .description("trust a remote daemon's TLS certificate: shows its fingerprint and pins it")
      .argument('<url>', 'the daemon, e.g. https://host:8443')
      .option('--fingerprint <sha256>', 'accept only this certificate fingerprint, without asking (for scripts)'),
  ).action(async (url: string, o: { fingerprint?: string; json?: boolean }) => {
    const origin = remoteOrigin(url);
    const want = o.fingerprint !== undefined ? normalizeFingerprint(o.fingerprint) : undefined;
    const { fingerprint, subject } = await fetchFingerprint(origin);
    if (!o.json) note(`Certificate of ${origin}${subject ? ` (${subject})` : ''}\nSHA-256 fingerprint: ${fingerprint}`);
    if (want !== undefined) {
      if (want !== fingerprint) throw new HangarError('UNAUTHORIZED', `${origin} presents certificate SHA-256 ${fingerprint}, not the expected ${want}`, { origin, presented: fingerprint, expected: want });
    } else if (process.stdin.isTTY && process.stderr.isTTY) {
      if (!(await askYesNo('Compare it with `hangar daemon status` (or the log) on that host. Trust it? (y/N) '))) {
        throw new HangarError('UNAUTHORIZED', `the certificate of ${origin} was not accepted`);
      }
    } else {
      throw new HangarError('INVALID_ARGUMENT', `not on a terminal: confirm the fingerprint with --fingerprint ${fingerprint}`);
    }
    const previous = loadRemotes()[origin];
    pinRemote(origin, fingerprint);
    if (o.json) return printJson({ remote: origin, fingerprint, replaced: previous !== undefined && previous.fingerprint !== fingerprint });
    out(`Trusted ${origin}${previous && previous.fingerprint !== fingerprint ? ' (the previous certificate is no longer trusted)' : ''}\n`);
  });

  withJson(remote.command('list').alias('ls').description('list trusted remotes').option('--format <format>', 'table, json or csv', 'table')).action(
    async (o: { json?: boolean; format?: string }) => {
      const all = loadRemotes();
      const rows = Object.entries(all).sort(([a], [b]) => a.localeCompare(b)).map(([url, r]) => ({ remote: url, fingerprint: r.fingerprint, addedAt: r.addedAt }));
      if (o.json || o.format === 'json') return printJson(rows);
      out(renderRows(o.format === 'csv' ? 'csv' : 'table', ['REMOTE', 'FINGERPRINT', 'ADDED'], rows.map((r) => [r.remote, r.fingerprint, r.addedAt])));
    },
  );

  withJson(remote.command('remove').alias('rm').description('stop trusting a remote').argument('<url>', 'the daemon, e.g. https://host:8443')).action(
    async (url: string, o: { json?: boolean }) => {
      const origin = remoteOrigin(url);
      if (!unpinRemote(origin)) throw new HangarError('NOT_FOUND', `${origin} is not a trusted remote`);
      if (o.json) return printJson({ remote: origin, removed: true });
      out(`Removed ${origin}\n`);
    },
  );
}
