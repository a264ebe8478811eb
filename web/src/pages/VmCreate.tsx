// The create wizard: everything POST /1.0/vms takes that a person usually sets, in three short steps.
import { useState } from 'react';
import { act, get, getOptional, type ApiError } from '../api';
import { go } from '../router';
import type { Image, Network, Operation, ServerInfo } from '../types';
import { asApiError, useApi } from '../useApi';
import { ErrorBanner } from '../components/ErrorBanner';
import { OperationProgress } from '../components/OperationProgress';

interface Form {
  image: string; name: string; engine: string; cpus: string; memory: string; rootSize: string;
  boot: string; network: string; sshKeys: string; userData: string; start: boolean;
}

const STEPS = ['Image and name', 'Resources', 'Network and cloud-init'];

export function buildCreateRequest(f: Form): Record<string, unknown> {
  const body: Record<string, unknown> = { name: f.name.trim(), image: f.image, start: f.start };
  if (f.engine) body.engine = f.engine;
  if (f.cpus.trim()) body.cpus = Number(f.cpus);
  if (f.memory.trim()) body.memory = f.memory.trim();
  if (f.rootSize.trim()) body.rootSize = f.rootSize.trim();
  if (f.boot) body.boot = f.boot;
  if (f.network) body.network = f.network;
  const keys = f.sshKeys.split('\n').map((l) => l.trim()).filter(Boolean);
  if (keys.length) body.sshKeys = keys;
  if (f.userData.trim()) body.userData = f.userData;
  return body;
}

export function VmCreate() {
  const images = useApi(() => get<Image[]>('/1.0/images'), []);
  const info = useApi(() => get<ServerInfo>('/1.0'), []);
  const networks = useApi(async () => (await getOptional<Network[]>('/1.0/networks')) ?? [], []);
  const [step, setStep] = useState(0);
  const [form, setForm] = useState<Form>({ image: '', name: '', engine: '', cpus: '1', memory: '256M', rootSize: '', boot: '', network: '', sshKeys: '', userData: '', start: true });
  const [op, setOp] = useState<Operation | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const set = (k: keyof Form) => (e: { target: { value: string } }) => setForm({ ...form, [k]: e.target.value });
  const image = images.data?.find((i) => i.name === form.image);
  const submit = (): void => {
    setError(null);
    const name = form.name.trim();
    act('POST', '/1.0/vms', buildCreateRequest(form), setOp).then(
      () => go('vms', name),
      (e: unknown) => { setOp(null); setError(asApiError(e)); },
    );
  };
  return (
    <main>
      <h1>Create a VM</h1>
      <ol className="steps">{STEPS.map((s, i) => <li key={s} aria-current={i === step ? 'step' : undefined}>{s}</li>)}</ol>
      <ErrorBanner error={images.error ?? info.error ?? networks.error} />
      <form className="wizard" onSubmit={(e) => { e.preventDefault(); if (step < STEPS.length - 1) setStep(step + 1); else submit(); }}>
        {step === 0 && (
          <fieldset>
            <legend>{STEPS[0]}</legend>
            <label>Image
              <select value={form.image} onChange={set('image')} required autoFocus>
                <option value="">Choose an image</option>
                {images.data?.map((i) => <option key={i.name} value={i.name}>{i.name} — {i.description}{i.status !== 'ready' ? ` (${i.status}: built on first use)` : ''}</option>)}
              </select>
            </label>
            <label>Name <input value={form.name} onChange={set('name')} required placeholder="web1" /></label>
          </fieldset>
        )}
        {step === 1 && (
          <fieldset>
            <legend>{STEPS[1]}</legend>
            <label>Engine
              <select value={form.engine} onChange={set('engine')}>
                <option value="">default (qemu)</option>
                {info.data?.engines.map((e) => <option key={e.name} value={e.name}>{e.name}</option>)}
              </select>
            </label>
            <label>vCPUs <input type="number" min={1} max={255} value={form.cpus} onChange={set('cpus')} /></label>
            <label>Memory <input value={form.memory} onChange={set('memory')} placeholder="256M" title="a size such as 512M or 2G" /></label>
            <label>Root disk size <input value={form.rootSize} onChange={set('rootSize')} placeholder={image?.disk ? 'the image\'s size' : 'only for images with a disk'} /></label>
            <label>Boot
              <select value={form.boot} onChange={set('boot')}>
                <option value="">default</option>
                {(image?.boot ?? ['kernel']).map((b) => <option key={b} value={b}>{b}{b !== 'kernel' ? ' (with a display)' : ''}</option>)}
              </select>
            </label>
          </fieldset>
        )}
        {step === 2 && (
          <fieldset>
            <legend>{STEPS[2]}</legend>
            <label>Network
              <select value={form.network} onChange={set('network')}>
                <option value="">default</option>
                <option value="none">none</option>
                {networks.data?.filter((n) => n.name !== 'default').map((n) => <option key={n.name} value={n.name}>{n.name} ({n.kind})</option>)}
              </select>
            </label>
            <label>SSH public keys (one a line) <textarea rows={3} value={form.sshKeys} onChange={set('sshKeys')} placeholder="ssh-ed25519 AAAA… you@host" /></label>
            <label>cloud-init user-data <textarea rows={6} value={form.userData} onChange={set('userData')} placeholder={'#cloud-config\npackages: [nginx]'} /></label>
            {image && !image.cloudInit && <p className="muted">{image.name} does not run cloud-init: keys are dropped and user-data is refused.</p>}
            <label className="check"><input type="checkbox" checked={form.start} onChange={(e) => setForm({ ...form, start: e.target.checked })} /> Start it now</label>
          </fieldset>
        )}
        <div className="buttons">
          {step > 0 && <button type="button" onClick={() => setStep(step - 1)}>Back</button>}
          <button type="submit" className="primary" disabled={op !== null}>{step < STEPS.length - 1 ? 'Next' : 'Create'}</button>
        </div>
      </form>
      <OperationProgress op={op} />
      <ErrorBanner error={error} onClose={() => setError(null)} />
    </main>
  );
}
