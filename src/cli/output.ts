/**
 * How the CLI prints: aligned tables for people, JSON (`--json`) or CSV for
 * scripts, and a YAML-like block for one object. Pure functions that return
 * strings, so they are easy to test; commands decide where to write them.
 */
import Table from 'cli-table3';
import { HangarError } from '../common/errors.js';

export type Format = 'table' | 'json' | 'csv';

export interface FormatOptions {
  json?: boolean;
  format?: string;
}

/** `--json` wins; otherwise `--format table|json|csv`, default table. */
export function resolveFormat(opts: FormatOptions): Format {
  if (opts.json) return 'json';
  const f = (opts.format ?? 'table').toLowerCase();
  if (f === 'table' || f === 'json' || f === 'csv') return f;
  throw new HangarError('INVALID_ARGUMENT', `--format must be table, json or csv, got "${opts.format}"`);
}

export function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

/** A borderless table with a header row, columns padded to fit. */
export function renderTable(headers: string[], rows: string[][]): string {
  const t = new Table({
    head: headers,
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
      bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
      left: '', 'left-mid': '', mid: '', 'mid-mid': '',
      right: '', 'right-mid': '', middle: '  ',
    },
    // No colours: output is often piped, and tests compare text.
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0, compact: true },
  });
  for (const r of rows) t.push(r);
  // cli-table3 pads the last column too; trailing blanks only get in the way of grep and diff.
  return t.toString().split('\n').map((l) => l.replace(/\s+$/, '')).join('\n') + '\n';
}

/**
 * Sizes measured rather than chosen (host memory, RSS) are rarely round:
 * one decimal in the largest fitting unit reads better than "24731708K".
 */
export function formatSizeApprox(bytes: number): string {
  for (const [u, n] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= n) {
      const v = bytes / n;
      return Number.isInteger(v) ? `${v}${u}` : `${v.toFixed(1)}${u}`;
    }
  }
  return `${bytes}B`;
}

function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function renderCsv(headers: string[], rows: string[][]): string {
  return [headers, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}

/** Table or CSV of the same rows; JSON callers print their own objects. */
export function renderRows(format: Exclude<Format, 'json'>, headers: string[], rows: string[][]): string {
  return format === 'csv' ? renderCsv(headers, rows) : renderTable(headers, rows);
}

/** 59 → "59s", 61 → "1m01s", 3725 → "1h02m", 90061 → "1d01h"; null → "-". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.floor(seconds);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${pad(Math.floor((s % 86400) / 3600))}h`;
}

function scalar(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'string') return v === '' ? '""' : v;
  return String(v);
}

/**
 * A YAML-like rendering of a nested object for `show` commands:
 * nested objects indent, arrays of scalars list with dashes, null prints "-".
 */
export function renderKeyValues(obj: Record<string, unknown>, indent = 0): string {
  const pad = ' '.repeat(indent);
  let out = '';
  for (const [k, v] of Object.entries(obj)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const entries = Object.keys(v as object);
      out += entries.length === 0 ? `${pad}${k}: {}\n` : `${pad}${k}:\n${renderKeyValues(v as Record<string, unknown>, indent + 2)}`;
    } else if (Array.isArray(v)) {
      if (v.length === 0) out += `${pad}${k}: []\n`;
      else {
        out += `${pad}${k}:\n`;
        for (const item of v) {
          if (item !== null && typeof item === 'object') {
            // Same width as "  - ", so the first key sits on the dash line and the rest align under it.
            const inner = renderKeyValues(item as Record<string, unknown>, indent + 4);
            out += `${pad}  - ${inner.slice(indent + 4)}`;
          } else out += `${pad}  - ${scalar(item)}\n`;
        }
      }
    } else out += `${pad}${k}: ${scalar(v)}\n`;
  }
  return out;
}

/** Local time-free rendering of an ISO timestamp: "2026-11-26 09:30:12Z"; anything else unchanged. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '-';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$/.exec(iso);
  return m ? `${m[1]} ${m[2]}Z` : iso;
}
