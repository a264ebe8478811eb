// Login with the API token (`hangar ui` prints a one-time link instead, handled in App).
import { useState } from 'react';
import { ApiError, checkToken, setToken } from '../api';
import { ErrorBanner } from './ErrorBanner';
import { asApiError } from '../useApi';

export function Login({ onLogin, initialError }: { onLogin: () => void; initialError: ApiError | null }) {
  const [token, setValue] = useState('');
  const [error, setError] = useState<ApiError | null>(initialError);
  const [busy, setBusy] = useState(false);
  return (
    <main className="login">
      <h1>Hangar</h1>
      <p>Run <code>hangar ui</code> on the host for a one-time login link, or enter the API token (<code>&lt;data dir&gt;/api.token</code>).</p>
      <form onSubmit={(e) => {
        e.preventDefault();
        setBusy(true);
        checkToken(token.trim()).then(() => { setToken(token.trim()); onLogin(); }, (err: unknown) => { setError(asApiError(err)); setBusy(false); });
      }}>
        <label>API token <input type="password" autoComplete="off" value={token} onChange={(e) => setValue(e.target.value)} required autoFocus /></label>
        <button type="submit" className="primary" disabled={busy}>Log in</button>
      </form>
      <ErrorBanner error={error} />
    </main>
  );
}
