/**
 * `hangar storage list|show|create|delete` (pools) and
 * `hangar volume list|show|create|import|resize|clone|export|delete`.
 * A volume is named `pool/volume`, or just `volume` in the default pool.
 * Copies, imports and uploads are operations: the command follows them with
 * a progress line unless --no-wait; import uploads a local file through the
 * API (remote daemons too) unless --from-daemon-dir names a file on the
 * daemon's host; export downloads into a local file.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { HangarError } from '../../common/errors.js';
import { formatSize, parseSize } from '../../common/sizes.js';
import { isPoolName, parseVolumeRef, POOL_NAME_RULE, VOLUME_NAME_RULE, type VolumeRef } from '../../api/storage-names.js';
import type { Operation } from '../../host/api/schemas.js';
import type { StoragePool, Volume } from '../../host/api/storage-schemas.js';
import type { ApiClient } from '../client.js';
import { errorFromResponse } from '../client.js';
import { clientFor, followOperation, formatFor, out, printJson, withJson } from '../context.js';
import { renderKeyValues, renderRows, formatTime } from '../output.js';
import { ProgressReporter } from '../progress.js';

export function checkPool(name: string): string {
  if (!isPoolName(name)) throw new HangarError('INVALID_ARGUMENT', `"${name}" is not a valid pool name (${POOL_NAME_RULE})`);
  return name;
}

/** "pool/volume" or "volume" (default pool), checked before any request. */
export function volumeRef(s: string): VolumeRef {
  const r = parseVolumeRef(s);
  if (!r) throw new HangarError('INVALID_ARGUMENT', `"${s}" is not a valid volume name: "pool/volume" or "volume" (${VOLUME_NAME_RULE})`);
  return r;
}

export function poolPath(pool: string, suffix = ''): string {
  return `/1.0/storage-pools/${encodeURIComponent(pool)}${suffix}`;
}

export function volumePath(r: VolumeRef, suffix = ''): string {
  return poolPath(r.pool, `/volumes/${encodeURIComponent(r.volume)}${suffix}`);
}

/** Sizes as the user types them ("10G"), checked here; sent as bytes. */
function sizeArg(v: string, what = 'size'): number {
  return parseSize(v, what);
}

export const POOL_HEADERS = ['NAME', 'DRIVER', 'VOLUMES', 'PROVISIONED', 'QUOTA', 'USED ON DISK', 'FREE ON HOST', 'PATH'];
export function poolRow(p: StoragePool): string[] {
  return [p.name, p.driver, String(p.usage.volumes), formatSize(p.usage.provisionedBytes), formatSize(p.quotaBytes), formatSize(p.usage.allocatedBytes), formatSize(p.usage.freeBytes), p.path];
}

export const VOLUME_HEADERS = ['POOL', 'NAME', 'FORMAT', 'SIZE', 'ON DISK', 'USED BY'];
export function volumeRow(v: Volume): string[] {
  return [v.pool, v.name, v.format, formatSize(v.sizeBytes), formatSize(v.allocatedBytes), v.usedBy.map((u) => `${u.vm}:${u.device}`).join(' ') || '-'];
}

function showVolume(v: Volume): string {
  return renderKeyValues({
    name: `${v.pool}/${v.name}`,
    format: v.format,
    size: `${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)`,
    'on disk': formatSize(v.allocatedBytes),
    ...(v.backing ? { backing: v.backing } : {}),
    ...(v.description ? { description: v.description } : {}),
    origin: v.origin ?? null,
    'used by': v.usedBy.length ? v.usedBy.map((u) => `${u.vm} (${u.device}${u.readOnly ? ', read-only' : ''})`).join(', ') : '-',
    created: formatTime(v.createdAt),
  });
}

/** Follows an async answer, or prints its id with --no-wait; returns the finished volume (or null). */
async function finishVolumeOp(client: ApiClient, op: Operation, o: { wait: boolean; json?: boolean }, label: string, done: (v: Volume) => string): Promise<void> {
  if (!o.wait) {
    if (o.json) printJson(op);
    else out(`${op.id}\n`);
    return;
  }
  const final = await followOperation(client, op, { label, quiet: Boolean(o.json) });
  const v = final.result as Volume;
  if (o.json) printJson(v);
  else out(done(v));
}

function localImageFile(p: string): { path: string; size: number } {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new HangarError('NOT_FOUND', `${p} does not exist`);
    throw new HangarError('INVALID_ARGUMENT', `cannot read ${p}: ${(e as Error).message}`);
  }
  if (!st.isFile()) throw new HangarError('INVALID_ARGUMENT', `${p} is not a regular file`);
  if (st.size === 0) throw new HangarError('INVALID_ARGUMENT', `${p} is empty`);
  return { path: p, size: st.size };
}

/** Uploads a local image file into a new volume, with a progress line for the bytes sent. */
export async function uploadVolume(client: ApiClient, r: VolumeRef, file: string, o: { format?: string; description?: string; json?: boolean }): Promise<Volume> {
  const f = localImageFile(file);
  const op = await client.call<Operation>('POST', poolPath(r.pool, '/volumes'), {
    name: r.volume, source: { type: 'upload', bytes: f.size },
    ...(o.format !== undefined ? { format: o.format } : {}), ...(o.description !== undefined ? { description: o.description } : {}),
  });
  const progress = o.json ? undefined : new ProgressReporter(`Uploading ${path.basename(file)} to ${r.pool}/${r.volume} (${formatSize(f.size)})`);
  progress?.start();
  try {
    let res;
    try {
      res = await client.upload('PUT', volumePath(r, '/content'), f.path, f.size, (sent) => {
        progress?.update({ description: '', progress: { stage: 'uploading', percent: (sent / f.size) * 100 } });
      });
    } catch (e) {
      await client.waitOperation(op.id);
      throw e;
    }
    if (res.status >= 400) {
      // The operation carries the reason too; the answer's is the same.
      await client.waitOperation(op.id).catch(() => {});
      throw errorFromResponse(res);
    }
    const final = await client.waitOperation(op.id, (u) => { if (u.status === 'running') progress?.update(u); });
    progress?.stop();
    return final.result as Volume;
  } catch (e) {
    progress?.stop();
    throw e;
  }
}

export function registerStorageCommands(program: Command): void {
  const storage = program.command('storage').description('storage pools: where volumes live');

  withJson(storage.command('list').alias('ls').description('list storage pools').option('--format <format>', 'table, json or csv', 'table')).action(async (_o: unknown, cmd: Command) => {
    const format = formatFor(cmd);
    const pools = await clientFor(cmd).get<StoragePool[]>('/1.0/storage-pools');
    if (format === 'json') return printJson(pools);
    out(renderRows(format, POOL_HEADERS, pools.map(poolRow)));
  });

  withJson(storage.command('show').description('show one storage pool').argument('<pool>', 'pool name')).action(async (pool: string, o: { json?: boolean }, cmd: Command) => {
    const p = await clientFor(cmd).get<StoragePool>(poolPath(checkPool(pool)));
    if (o.json) return printJson(p);
    out(renderKeyValues({
      name: p.name, driver: p.driver, path: p.path, quota: formatSize(p.quotaBytes), volumes: p.usage.volumes,
      provisioned: formatSize(p.usage.provisionedBytes), 'on disk': formatSize(p.usage.allocatedBytes),
      'host filesystem': `${formatSize(p.usage.freeBytes)} free of ${formatSize(p.usage.totalBytes)}`, created: formatTime(p.createdAt),
    }));
  });

  withJson(
    storage.command('create').description('create a storage pool (driver dir: a folder of image files)').argument('<pool>', 'pool name')
      .option('--path <dir>', "absolute path of a new or empty folder on the daemon's host (default <data dir>/storage/<pool>)")
      .option('--quota <size>', 'most the virtual sizes of its volumes may add up to, e.g. 200G'),
  ).action(async (pool: string, o: { path?: string; quota?: string; json?: boolean }, cmd: Command) => {
    checkPool(pool);
    if (o.path !== undefined && !path.isAbsolute(o.path)) throw new HangarError('INVALID_ARGUMENT', `--path must be an absolute path on the daemon's host, got "${o.path}"`);
    const p = await clientFor(cmd).call<StoragePool>('POST', '/1.0/storage-pools', {
      name: pool, driver: 'dir', ...(o.path !== undefined ? { path: o.path } : {}), ...(o.quota !== undefined ? { quota: sizeArg(o.quota, '--quota') } : {}),
    });
    if (o.json) return printJson(p);
    out(`Created storage pool ${p.name} at ${p.path} (quota ${formatSize(p.quotaBytes)})\n`);
  });

  withJson(storage.command('set-quota').description("change a pool's quota").argument('<pool>', 'pool name').argument('<size>', 'new quota, e.g. 500G')).action(
    async (pool: string, size: string, o: { json?: boolean }, cmd: Command) => {
      const p = await clientFor(cmd).call<StoragePool>('PATCH', poolPath(checkPool(pool)), { quota: sizeArg(size, 'quota') });
      if (o.json) return printJson(p);
      out(`Pool ${p.name} quota is now ${formatSize(p.quotaBytes)}\n`);
    },
  );

  withJson(storage.command('delete').alias('rm').description('delete an empty storage pool').argument('<pool>', 'pool name')).action(async (pool: string, o: { json?: boolean }, cmd: Command) => {
    await clientFor(cmd).call('DELETE', poolPath(checkPool(pool)));
    if (o.json) return printJson({ name: pool, deleted: true });
    out(`Deleted storage pool ${pool}\n`);
  });

  const volume = program.command('volume').description('volumes: disk images in storage pools ("pool/volume", or "volume" in the default pool)');

  withJson(volume.command('list').alias('ls').description('list volumes').argument('[pool]', 'only this pool').option('--format <format>', 'table, json or csv', 'table')).action(
    async (pool: string | undefined, _o: unknown, cmd: Command) => {
      const format = formatFor(cmd);
      const client = clientFor(cmd);
      const pools = pool !== undefined ? [checkPool(pool)] : (await client.get<StoragePool[]>('/1.0/storage-pools')).map((p) => p.name);
      const vols: Volume[] = [];
      for (const p of pools) vols.push(...(await client.get<Volume[]>(poolPath(p, '/volumes'))));
      if (format === 'json') return printJson(vols);
      out(renderRows(format, VOLUME_HEADERS, vols.map(volumeRow)));
    },
  );

  withJson(volume.command('show').description('show one volume').argument('<volume>', 'pool/volume')).action(async (ref: string, o: { json?: boolean }, cmd: Command) => {
    const v = await clientFor(cmd).get<Volume>(volumePath(volumeRef(ref)));
    if (o.json) return printJson(v);
    out(showVolume(v));
  });

  withJson(
    volume.command('create').description('create an empty volume').argument('<volume>', 'pool/volume')
      .requiredOption('--size <size>', 'virtual size, e.g. 10G')
      .option('--format <format>', 'qcow2 (default, grows as written) or raw')
      .option('--description <text>', 'one line shown by `hangar volume show`'),
  ).action(async (ref: string, o: { size: string; format?: string; description?: string; json?: boolean }, cmd: Command) => {
    const r = volumeRef(ref);
    const v = await clientFor(cmd).call<Volume>('POST', poolPath(r.pool, '/volumes'), {
      name: r.volume, size: sizeArg(o.size, '--size'), ...(o.format !== undefined ? { format: o.format } : {}), ...(o.description !== undefined ? { description: o.description } : {}),
    });
    if (o.json) return printJson(v);
    out(`Created volume ${v.pool}/${v.name} (${v.format}, ${formatSize(v.sizeBytes)})\n`);
  });

  withJson(
    volume.command('import').description('import a raw or qcow2 image file as a new volume (checked first: format, size, backing files)')
      .argument('<volume>', 'pool/volume').argument('<file>', 'the image file')
      .option('--format <format>', "the volume's format (default: the file's)")
      .option('--description <text>', 'one line shown by `hangar volume show`')
      .option('--from-daemon-dir', "don't upload: <file> is a path in the daemon's import folders on its host")
      .option('--no-wait', "print the operation id and don't wait"),
  ).action(async (ref: string, file: string, o: { format?: string; description?: string; fromDaemonDir?: boolean; wait: boolean; json?: boolean }, cmd: Command) => {
    const r = volumeRef(ref);
    const client = clientFor(cmd);
    const done = (v: Volume): string => `Imported volume ${v.pool}/${v.name} (${v.format}, ${formatSize(v.sizeBytes)})\n`;
    if (o.fromDaemonDir) {
      const op = await client.call<Operation>('POST', poolPath(r.pool, '/volumes'), {
        name: r.volume, source: { type: 'path', path: path.resolve(file) },
        ...(o.format !== undefined ? { format: o.format } : {}), ...(o.description !== undefined ? { description: o.description } : {}),
      });
      return finishVolumeOp(client, op, o, `Importing ${file} as ${r.pool}/${r.volume}`, done);
    }
    const v = await uploadVolume(client, r, file, o);
    if (o.json) return printJson(v);
    out(done(v));
  });

  withJson(volume.command('resize').description('grow a volume (online when a running VM uses it)').argument('<volume>', 'pool/volume').argument('<size>', 'new virtual size, e.g. 20G')).action(
    async (ref: string, size: string, o: { json?: boolean }, cmd: Command) => {
      const r = volumeRef(ref);
      const v = await clientFor(cmd).call<Volume>('PATCH', volumePath(r), { size: sizeArg(size) });
      if (o.json) return printJson(v);
      out(`Volume ${v.pool}/${v.name} is now ${formatSize(v.sizeBytes)}\n`);
    },
  );

  withJson(
    volume.command('clone').alias('copy').description('copy a volume into a new one (an overlay is flattened; --format converts)')
      .argument('<source>', 'pool/volume to copy').argument('<target>', 'new pool/volume')
      .option('--format <format>', "the copy's format (default: the source's)")
      .option('--no-wait', "print the operation id and don't wait"),
  ).action(async (source: string, target: string, o: { format?: string; wait: boolean; json?: boolean }, cmd: Command) => {
    const s = volumeRef(source);
    const t = volumeRef(target);
    const client = clientFor(cmd);
    const op = await client.call<Operation>('POST', poolPath(t.pool, '/volumes'), {
      name: t.volume, source: { type: 'copy', volume: `${s.pool}/${s.volume}` }, ...(o.format !== undefined ? { format: o.format } : {}),
    });
    await finishVolumeOp(client, op, o, `Copying ${s.pool}/${s.volume} to ${t.pool}/${t.volume}`, (v) => `Copied to ${v.pool}/${v.name} (${v.format}, ${formatSize(v.sizeBytes)})\n`);
  });

  withJson(
    volume.command('export').description("download a volume's image into a local file")
      .argument('<volume>', 'pool/volume').argument('<file>', 'where to write it (must not exist)')
      .option('--format <format>', "raw or qcow2 (default: the volume's; an overlay is flattened)"),
  ).action(async (ref: string, file: string, o: { format?: string; json?: boolean }, cmd: Command) => {
    const r = volumeRef(ref);
    if (o.format !== undefined && o.format !== 'raw' && o.format !== 'qcow2') throw new HangarError('INVALID_ARGUMENT', `--format must be raw or qcow2, got "${o.format}"`);
    if (fs.existsSync(file)) throw new HangarError('ALREADY_EXISTS', `${file} already exists`);
    const client = clientFor(cmd);
    const progress = o.json ? undefined : new ProgressReporter(`Exporting ${r.pool}/${r.volume}`);
    progress?.start();
    let res;
    try {
      res = await client.download(volumePath(r, o.format ? `/content?format=${o.format}` : '/content'), file, (got, total) => {
        progress?.update({ description: '', progress: { stage: 'downloading', ...(total > 0 ? { percent: (got / total) * 100 } : {}) } });
      });
    } finally {
      progress?.stop();
    }
    const format = String(res.headers['x-hangar-format'] ?? o.format ?? '');
    if (o.json) return printJson({ volume: `${r.pool}/${r.volume}`, file: path.resolve(file), bytes: res.bytes, format });
    out(`Exported ${r.pool}/${r.volume} to ${file} (${format}, ${formatSize(res.bytes)})\n`);
  });

  withJson(volume.command('delete').alias('rm').description('delete a volume (refused while a VM uses it)').argument('<volume>', 'pool/volume')).action(
    async (ref: string, o: { json?: boolean }, cmd: Command) => {
      const r = volumeRef(ref);
      await clientFor(cmd).call('DELETE', volumePath(r));
      if (o.json) return printJson({ volume: `${r.pool}/${r.volume}`, deleted: true });
      out(`Deleted volume ${r.pool}/${r.volume}\n`);
    },
  );
}
