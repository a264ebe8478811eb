/**
 * Fetches Debian packages without installing them: `apt-get download` into a
 * folder, then `dpkg-deb -x` to unpack. Used to build guest images from the
 * same archive the host already trusts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { HangarError } from '../../common/errors.js';

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd?: string, timeoutMs = 300_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) {
        const why = String(stderr).trim().split('\n').slice(-3).join(' ') || err.message;
        reject(new HangarError('ENGINE_FAILED', `${cmd} ${args.join(' ')}: ${why}`, { command: cmd }));
      } else resolve({ stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const PACKAGE = /^[a-z0-9][a-z0-9+.-]+$/;

/**
 * The real package behind a meta package, e.g. linux-image-cloud-amd64 →
 * linux-image-6.1.0-NN-cloud-amd64 (the first Depends that matches `pattern`).
 */
export async function resolveDependency(meta: string, pattern: RegExp): Promise<string> {
  if (!PACKAGE.test(meta)) throw new HangarError('INVALID_ARGUMENT', `bad package name "${meta}"`);
  const { stdout } = await run('apt-cache', ['depends', meta]);
  for (const line of stdout.split('\n')) {
    const m = /^\s*\|?Depends:\s*(\S+)/.exec(line);
    if (m && pattern.test(m[1]!) && PACKAGE.test(m[1]!)) return m[1]!;
  }
  throw new HangarError('NOT_FOUND', `no dependency of ${meta} matches ${pattern}`);
}

/**
 * Downloads packages into `dir` and returns the .deb paths in the same order.
 * Runs `apt-get update` once and retries only when the first try fails (no lists yet).
 */
export async function downloadPackages(names: string[], dir: string): Promise<string[]> {
  for (const n of names) if (!PACKAGE.test(n)) throw new HangarError('INVALID_ARGUMENT', `bad package name "${n}"`);
  fs.mkdirSync(dir, { recursive: true });
  try {
    await run('apt-get', ['download', ...names], dir);
  } catch {
    await run('apt-get', ['update'], dir);
    await run('apt-get', ['download', ...names], dir);
  }
  const debs = fs.readdirSync(dir).filter((f) => f.endsWith('.deb'));
  return names.map((n) => {
    const deb = debs.find((f) => f.startsWith(`${n}_`));
    if (!deb) throw new HangarError('ENGINE_FAILED', `apt-get download did not produce ${n}`);
    return path.join(dir, deb);
  });
}

/** Unpacks a .deb's files (not its scripts) into `dest`. */
export async function unpackDeb(deb: string, dest: string): Promise<void> {
  fs.mkdirSync(dest, { recursive: true });
  await run('dpkg-deb', ['-x', deb, dest]);
}
