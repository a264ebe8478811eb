/**
 * One events WebSocket for the whole UI (GET /1.0/events as a WebSocket):
 * pages subscribe and reload what an event touches, instead of polling.
 * When the socket drops it is opened again after a pause, and subscribers
 * hear `null` so they reload whatever they may have missed.
 */
import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from 'react';
import { openSocket } from './api';
import type { LifecycleEvent } from './types';

type Listener = (e: LifecycleEvent | null) => void;

interface EventsHub { subscribe(l: Listener): () => void; live: boolean }

const Ctx = createContext<EventsHub>({ subscribe: () => () => {}, live: false });

export function EventsProvider({ children }: { children: ReactNode }) {
  const listeners = useRef(new Set<Listener>());
  const [live, setLive] = useState(false);
  useEffect(() => {
    let stopped = false;
    let socket: WebSocket | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let delay = 1000;
    const connect = async (): Promise<void> => {
      try {
        socket = await openSocket('/1.0/events');
      } catch {
        schedule();
        return;
      }
      if (stopped) { socket.close(); return; }
      socket.onopen = () => {
        delay = 1000;
        setLive(true);
        for (const l of listeners.current) l(null);
      };
      socket.onmessage = (m) => {
        let e: LifecycleEvent;
        try { e = JSON.parse(String(m.data)) as LifecycleEvent; } catch { return; }
        for (const l of listeners.current) l(e);
      };
      socket.onclose = () => { setLive(false); if (!stopped) schedule(); };
    };
    const schedule = (): void => {
      retry = setTimeout(() => void connect(), delay);
      delay = Math.min(delay * 2, 30_000);
    };
    void connect();
    return () => { stopped = true; clearTimeout(retry); socket?.close(); };
  }, []);
  const hub = useRef<EventsHub>({ subscribe: (l) => { listeners.current.add(l); return () => listeners.current.delete(l); }, live: false });
  return <Ctx.Provider value={{ subscribe: hub.current.subscribe, live }}>{children}</Ctx.Provider>;
}

/** Calls `f` on each event that `filter` accepts, and after a reconnect (event null). */
export function useEvents(f: Listener, filter: (e: LifecycleEvent) => boolean = () => true): void {
  const hub = useContext(Ctx);
  const fn = useRef(f);
  const flt = useRef(filter);
  fn.current = f;
  flt.current = filter;
  useEffect(() => hub.subscribe((e) => { if (e === null || flt.current(e)) fn.current(e); }), [hub]);
}

export function useEventsLive(): boolean {
  return useContext(Ctx).live;
}
