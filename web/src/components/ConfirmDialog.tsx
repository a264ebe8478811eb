// A modal question before anything that stops or deletes: Escape or Cancel says no, the focused Cancel makes Enter safe.
import { useEffect, useRef } from 'react';

export interface ConfirmRequest { title: string; body: string; confirm: string; danger?: boolean; onConfirm: () => void }

export function ConfirmDialog({ request, onClose }: { request: ConfirmRequest | null; onClose: () => void }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (request && !d.open) d.showModal();
    if (!request && d.open) d.close();
  }, [request]);
  return (
    <dialog ref={ref} className="confirm" onClose={onClose} aria-labelledby="confirm-title">
      {request && (
        <form method="dialog" onSubmit={(e) => { e.preventDefault(); const r = request; onClose(); r.onConfirm(); }}>
          <h2 id="confirm-title">{request.title}</h2>
          <p>{request.body}</p>
          <div className="buttons">
            <button type="button" autoFocus onClick={onClose}>Cancel</button>
            <button type="submit" className={request.danger ? 'danger' : 'primary'}>{request.confirm}</button>
          </div>
        </form>
      )}
    </dialog>
  );
}
