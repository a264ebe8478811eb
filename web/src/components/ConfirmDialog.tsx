// A modal question before anything that stops or deletes: Escape or Cancel says no, the focused Cancel makes Enter safe.
import { useEffect, useRef, useState } from 'react';

export interface ConfirmRequest {
  title: string; body: string; confirm: string; danger?: boolean;
  /** A checkbox offered with the question (e.g. force); its value goes to onConfirm. */
  option?: string;
  onConfirm: (option: boolean) => void;
}

export function ConfirmDialog({ request, onClose }: { request: ConfirmRequest | null; onClose: () => void }) {
  const ref = useRef<HTMLDialogElement>(null);
  const [option, setOption] = useState(false);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (request && !d.open) { setOption(false); d.showModal(); }
    if (!request && d.open) d.close();
  }, [request]);
  return (
    <dialog ref={ref} className="confirm" onClose={onClose} aria-labelledby="confirm-title">
      {request && (
        <form method="dialog" onSubmit={(e) => { e.preventDefault(); const r = request; onClose(); r.onConfirm(option); }}>
          <h2 id="confirm-title">{request.title}</h2>
          <p>{request.body}</p>
          {request.option && <label className="check"><input type="checkbox" checked={option} onChange={(e) => setOption(e.target.checked)} /> {request.option}</label>}
          <div className="buttons">
            <button type="button" autoFocus onClick={onClose}>Cancel</button>
            <button type="submit" className={request.danger ? 'danger' : 'primary'}>{request.confirm}</button>
          </div>
        </form>
      )}
    </dialog>
  );
}
