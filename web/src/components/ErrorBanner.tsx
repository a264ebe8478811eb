// An API error as the API words it: its message, and its code for reference.
import type { ApiError } from '../api';

export function ErrorBanner({ error, onClose }: { error: ApiError | null; onClose?: () => void }) {
  if (!error) return null;
  return (
    <div className="error" role="alert">
      <span className="error-message">{error.message}</span> <code className="error-code">{error.code}</code>
      {onClose && <button type="button" className="link" onClick={onClose} aria-label="Dismiss">×</button>}
    </div>
  );
}
