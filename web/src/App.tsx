// The frame: login first (a one-time code from `hangar ui`, or the token), then the navigation and the page of the route.
import { useEffect, useState } from 'react';
import { ApiError, clearToken, exchangeLoginCode, getToken, setToken, setUnauthorizedHandler } from './api';
import { EventsProvider, useEventsLive } from './events';
import { href, useRoute } from './router';
import { asApiError } from './useApi';
import { Login } from './components/Login';
import { ThemeToggle } from './components/ThemeToggle';
import { Dashboard } from './pages/Dashboard';
import { Images } from './pages/Images';
import { Networks } from './pages/Networks';
import { Storage } from './pages/Storage';
import { VmCreate } from './pages/VmCreate';
import { VmList } from './pages/VmList';
import { VmPage } from './pages/VmPage';

/** Takes a login code out of the address (#login=CODE) at once, so it is neither kept in history nor shown. */
function takeLoginCode(): string | null {
  const m = /^#login=([0-9a-f]{1,128})$/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, '', `${location.pathname}${location.search}#/`);
  return m[1]!;
}

type Auth = 'checking' | 'in' | 'out';

export function App() {
  const [auth, setAuth] = useState<Auth>(() => (getToken() && !location.hash.startsWith('#login=') ? 'in' : 'checking'));
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    setUnauthorizedHandler(() => { clearToken(); setError(new ApiError('UNAUTHORIZED', 'the daemon refused the token: log in again', 401)); setAuth('out'); });
    const code = takeLoginCode();
    if (code === null) { if (auth === 'checking') setAuth('out'); return; }
    exchangeLoginCode(code).then(
      (token) => { setToken(token); setAuth('in'); },
      (e: unknown) => { setError(asApiError(e)); setAuth(getToken() ? 'in' : 'out'); },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  if (auth === 'checking') return <p className="muted">Logging in…</p>;
  if (auth === 'out') return <Login initialError={error} onLogin={() => { setError(null); setAuth('in'); }} />;
  return <EventsProvider><Shell onLogout={() => { clearToken(); setAuth('out'); }} /></EventsProvider>;
}

const NAV: Array<[string, string]> = [['', 'Dashboard'], ['vms', 'VMs'], ['create', 'Create'], ['images', 'Images'], ['storage', 'Storage'], ['networks', 'Networks']];

function Shell({ onLogout }: { onLogout: () => void }) {
  const route = useRoute();
  const live = useEventsLive();
  const top = route[0] ?? '';
  return (
    <>
      <a className="skip" href="#content" onClick={(e) => { e.preventDefault(); document.getElementById('content')?.focus(); }}>Skip to content</a>
      <header className="top">
        <a className="brand" href={href()}>Hangar</a>
        <nav aria-label="Main">
          {NAV.map(([path, label]) => <a key={path} href={path ? href(path) : href()} aria-current={top === path ? 'page' : undefined}>{label}</a>)}
        </nav>
        <span className={live ? 'live on' : 'live'} title="Live updates from the events WebSocket" data-testid="live">{live ? 'live' : 'offline'}</span>
        <ThemeToggle />
        <button type="button" onClick={onLogout}>Log out</button>
      </header>
      <div id="content" tabIndex={-1}>
        {top === '' && <Dashboard />}
        {top === 'vms' && route[1] === undefined && <VmList />}
        {top === 'vms' && route[1] !== undefined && <VmPage key={route[1]} name={route[1]} tab={route[2]} />}
        {top === 'create' && <VmCreate />}
        {top === 'images' && <Images />}
        {top === 'storage' && <Storage />}
        {top === 'networks' && <Networks />}
      </div>
    </>
  );
}
