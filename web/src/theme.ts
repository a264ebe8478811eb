// Light and dark: the system's choice (prefers-color-scheme) unless the user picked one with the toggle.
const KEY = 'hangar.theme';
export type Theme = 'light' | 'dark' | 'system';

export function storedTheme(): Theme {
  const t = localStorage.getItem(KEY);
  return t === 'light' || t === 'dark' ? t : 'system';
}

export function applyTheme(t: Theme): void {
  if (t === 'system') { localStorage.removeItem(KEY); delete document.documentElement.dataset.theme; }
  else { localStorage.setItem(KEY, t); document.documentElement.dataset.theme = t; }
}

export function effectiveTheme(): 'light' | 'dark' {
  const t = storedTheme();
  if (t !== 'system') return t;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}
