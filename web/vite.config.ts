// Vite build of Hangar's web UI: web/ → dist/web, served by hangard under /ui/ (docs/ui.md).
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';
import { precompress } from './precompress.ts';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: '/ui/',
  // precompress: .br and .gz next to each text file, served as they are by hangard.
  plugins: [react(), precompress()],
  build: {
    outDir: `${here}../dist/web`,
    emptyOutDir: true,
    // noVNC uses top-level await.
    target: 'es2022',
    // No inline scripts: the page's Content-Security-Policy allows script files from the daemon only.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 2000,
  },
});
