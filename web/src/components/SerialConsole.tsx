// The VM's serial console in xterm.js, over GET /1.0/vms/{name}/console (binary frames both ways).
import { useEffect, useRef, useState } from 'react';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { openSocket } from '../api';
import { effectiveTheme } from '../theme';

export function SerialConsole({ vm }: { vm: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('connecting');
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const dark = effectiveTheme() === 'dark';
    const term = new Terminal({
      convertEol: false,
      cursorBlink: true,
      fontFamily: 'ui-monospace, monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: dark ? { background: '#111418', foreground: '#e6e6e6' } : { background: '#ffffff', foreground: '#1b1f24', cursor: '#1b1f24', selectionBackground: '#b3d4fc' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    const resize = new ResizeObserver(() => fit.fit());
    resize.observe(el);
    let socket: WebSocket | null = null;
    let disposed = false;
    const enc = new TextEncoder();
    openSocket(`/1.0/vms/${encodeURIComponent(vm)}/console`).then((s) => {
      if (disposed) { s.close(); return; }
      socket = s;
      s.binaryType = 'arraybuffer';
      s.onopen = () => { setStatus('connected'); term.focus(); };
      s.onmessage = (m) => term.write(typeof m.data === 'string' ? m.data : new Uint8Array(m.data as ArrayBuffer));
      s.onclose = (e) => setStatus(`closed${e.reason ? `: ${e.reason}` : ''}`);
    }, (e: unknown) => setStatus(`cannot connect: ${(e as Error).message}`));
    const input = term.onData((d) => { if (socket?.readyState === WebSocket.OPEN) socket.send(enc.encode(d)); });
    return () => { disposed = true; input.dispose(); resize.disconnect(); socket?.close(); term.dispose(); };
  }, [vm]);
  return (
    <section className="console">
      <p className="muted" role="status">Serial console: <span data-testid="console-status">{status}</span> (keys go to the guest while the terminal has focus; Tab moves on only outside it)</p>
      <div ref={box} className="term-box" data-testid="terminal" />
    </section>
  );
}
