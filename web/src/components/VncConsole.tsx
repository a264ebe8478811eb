// The VM's display in noVNC, over GET /1.0/vms/{name}/vnc (RFB over WebSocket, bridged by the daemon).
import { useEffect, useRef, useState } from 'react';
import RFB from '@novnc/novnc';
import { socketProtocols, socketUrl } from '../api';

export function VncConsole({ vm }: { vm: string }) {
  const box = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [status, setStatus] = useState('connecting');
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    let disposed = false;
    socketProtocols().then((protocols) => {
      if (disposed) return;
      const r = new RFB(el, socketUrl(`/1.0/vms/${encodeURIComponent(vm)}/vnc`), { wsProtocols: protocols, shared: true });
      r.scaleViewport = true;
      r.background = 'transparent';
      r.addEventListener('connect', () => setStatus('connected'));
      r.addEventListener('disconnect', () => setStatus('disconnected'));
      rfb.current = r;
    }, (e: unknown) => setStatus(`cannot connect: ${(e as Error).message}`));
    return () => { disposed = true; rfb.current?.disconnect(); rfb.current = null; };
  }, [vm]);
  return (
    <section className="display">
      <p className="muted" role="status">Display: <span data-testid="vnc-status">{status}</span>{' '}
        <button type="button" onClick={() => rfb.current?.sendCtrlAltDel()} disabled={status !== 'connected'}>Send Ctrl-Alt-Del</button>
      </p>
      <div ref={box} className="vnc" data-testid="vnc" />
    </section>
  );
}
