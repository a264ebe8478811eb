// Upload an image from the browser: POST /1.0/images/uploads announces the sizes (the daemon checks names,
// sizes and its quota before any byte), then each part is PUT as a stream; the operation says how it ended.
import { useRef, useState } from 'react';
import { ApiError, get, putFile, send, waitOperation } from '../api';
import { bytes } from '../format';
import type { Operation } from '../types';
import { asApiError } from '../useApi';
import { ErrorBanner } from './ErrorBanner';

type Kind = 'kernel' | 'disk';

interface Progress { stage: string; sent: number; total: number }

export function ImageUpload({ onDone }: { onDone: () => void }) {
  const [kind, setKind] = useState<Kind>('kernel');
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [cmdline, setCmdline] = useState('');
  const [boot, setBoot] = useState<'bios' | 'uefi'>('bios');
  const [format, setFormat] = useState<'' | 'raw' | 'qcow2'>('');
  const files = useRef<Record<'kernel' | 'initrd' | 'disk', HTMLInputElement | null>>({ kernel: null, initrd: null, disk: null });
  const [progress, setProgress] = useState<Progress | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const abort = useRef<AbortController | null>(null);

  const upload = async (): Promise<void> => {
    const pick = (k: 'kernel' | 'initrd' | 'disk'): File | undefined => files.current[k]?.files?.[0];
    const parts: Array<[string, File]> = kind === 'kernel'
      ? [['kernel', pick('kernel')!], ...(pick('initrd') ? [['initrd', pick('initrd')!] as [string, File]] : [])]
      : [['disk', pick('disk')!]];
    const body = kind === 'kernel'
      ? { name, kernelBytes: parts[0]![1].size, ...(parts[1] ? { initrdBytes: parts[1][1].size } : {}), ...(cmdline ? { cmdline } : {}), ...(description ? { description } : {}) }
      : { name, diskBytes: parts[0]![1].size, boot, ...(format ? { format } : {}), ...(description ? { description } : {}) };
    const total = parts.reduce((a, [, f]) => a + f.size, 0);
    const started = await send('POST', '/1.0/images/uploads', body);
    const op = started.operation!;
    abort.current = new AbortController();
    let before = 0;
    try {
      for (const [part, file] of parts) {
        setProgress({ stage: `uploading ${part}`, sent: before, total });
        await putFile(`/1.0/images/uploads/${encodeURIComponent(op.id)}/${part}`, file, (n) => setProgress({ stage: `uploading ${part}`, sent: before + n, total }), abort.current.signal);
        before += file.size;
      }
    } catch (e) {
      if (asApiError(e).code === 'CANCELLED') {
        await send('DELETE', `/1.0/images/uploads/${encodeURIComponent(op.id)}`).catch(() => {});
        throw e;
      }
      // The daemon cut the part off: its operation says why, in its words.
      const ended = await get<Operation>(`/1.0/operations/${encodeURIComponent(op.id)}/wait?timeout=30`);
      if (ended.error) throw new ApiError(ended.error.code, ended.error.message, 0);
      throw e;
    } finally {
      abort.current = null;
    }
    await waitOperation(op, (o) => setProgress({ stage: o.progress?.stage ?? 'checking', sent: total, total }));
  };

  return (
    <section aria-labelledby="upload-head">
      <h2 id="upload-head">Upload an image</h2>
      <form onSubmit={(e) => {
        e.preventDefault();
        setError(null); setDone(null);
        upload().then(() => { setDone(name); setProgress(null); onDone(); }, (err: unknown) => { setProgress(null); setError(asApiError(err)); onDone(); });
      }}>
        <fieldset disabled={progress !== null}>
          <legend>What</legend>
          <label>Kind
            <select value={kind} onChange={(e) => setKind(e.target.value as Kind)}>
              <option value="kernel">kernel (and initrd), booted directly</option>
              <option value="disk">disk image with its own boot loader</option>
            </select>
          </label>
          <label>Name <input value={name} onChange={(e) => setName(e.target.value)} required placeholder="my-image" /></label>
          <label>Description <input value={description} onChange={(e) => setDescription(e.target.value)} /></label>
          {kind === 'kernel' ? (<>
            <label>Kernel <input type="file" required ref={(el) => { files.current.kernel = el; }} /></label>
            <label>Initrd (optional) <input type="file" ref={(el) => { files.current.initrd = el; }} /></label>
            <label>Command line <input value={cmdline} onChange={(e) => setCmdline(e.target.value)} placeholder="the engine's default" /></label>
          </>) : (<>
            <label>Disk <input type="file" required ref={(el) => { files.current.disk = el; }} /></label>
            <label>Firmware
              <select value={boot} onChange={(e) => setBoot(e.target.value as 'bios' | 'uefi')}><option value="bios">BIOS</option><option value="uefi">UEFI</option></select>
            </label>
            <label>Format
              <select value={format} onChange={(e) => setFormat(e.target.value as '' | 'raw' | 'qcow2')}><option value="">from its bytes</option><option value="raw">raw</option><option value="qcow2">qcow2</option></select>
            </label>
          </>)}
        </fieldset>
        <div className="actions">
          <button type="submit" disabled={progress !== null}>Upload</button>
          {progress !== null && <button type="button" onClick={() => abort.current?.abort()}>Cancel</button>}
        </div>
      </form>
      {progress && (
        <p role="status" data-testid="upload-progress">
          {progress.stage}: {bytes(progress.sent)} of {bytes(progress.total)}{' '}
          <progress max={Math.max(1, progress.total)} value={progress.sent} />
        </p>
      )}
      {done && <p role="status">Image {done} is ready.</p>}
      <ErrorBanner error={error} onClose={() => setError(null)} />
    </section>
  );
}
