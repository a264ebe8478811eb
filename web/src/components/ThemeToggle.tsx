import { useState } from 'react';
import { applyTheme, storedTheme, type Theme } from '../theme';

const NEXT: Record<Theme, Theme> = { system: 'light', light: 'dark', dark: 'system' };

export function ThemeToggle() {
  const [theme, setTheme] = useState<Theme>(storedTheme);
  return (
    <button type="button" className="theme-toggle" title="Theme: system, light or dark" onClick={() => { const t = NEXT[theme]; applyTheme(t); setTheme(t); }}>
      Theme: {theme}
    </button>
  );
}
