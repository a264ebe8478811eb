/**
 * A strict reader of Prometheus' text exposition format (version 0.0.4), for
 * tests: it throws on anything the format does not allow (a bad metric or
 * label name, an unescaped quote, a value that is not a float, a sample
 * before its family's TYPE or of another family, a family declared twice,
 * a duplicate series), so a test that parses /metrics fails on output that
 * Prometheus would reject.
 */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(s: string, where: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`${where}: "${s}" is not a float value`);
  return Number(s);
}

/** Labels inside the braces; returns them and where parsing stopped (just after '}'). */
function parseLabels(line: string, start: number, where: string): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start;
  for (;;) {
    if (line[i] === '}') return { labels, end: i + 1 };
    const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
    if (!m) throw new Error(`${where}: bad label name at column ${i}`);
    const name = m[0];
    i += name.length;
    if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`${where}: label ${name} wants ="value"`);
    i += 2;
    let value = '';
    for (;;) {
      const c = line[i];
      if (c === undefined) throw new Error(`${where}: unterminated label value`);
      if (c === '"') { i++; break; }
      if (c === '\\') {
        const n = line[i + 1];
        if (n === 'n') value += '\n';
        else if (n === '\\' || n === '"') value += n;
        else throw new Error(`${where}: bad escape \\${n ?? ''} in a label value`);
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    if (name in labels) throw new Error(`${where}: label ${name} given twice`);
    labels[name] = value;
    if (line[i] === ',') { i++; continue; }
    if (line[i] === '}') return { labels, end: i + 1 };
    throw new Error(`${where}: expected , or } after label ${name}`);
  }
}

/** The family a sample name belongs to (histogram and summary series carry suffixes). */
function familyOf(sample: string, families: Map<string, PromFamily>): PromFamily | undefined {
  const direct = families.get(sample);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sample.endsWith(suffix)) {
      const f = families.get(sample.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, PromFamily> {
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, PromFamily>();
  const seen = new Set<string>();
  const helps = new Map<string, string>();
  let current: PromFamily | null = null;
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, idx) => {
    const where = `line ${idx + 1}`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
      if (kind === 'HELP') {
        if (helps.has(name)) throw new Error(`${where}: second HELP for ${name}`);
        if (/\\[^n\\]/.test(rest)) throw new Error(`${where}: bad escape in HELP`);
        helps.set(name, rest);
        return;
      }
      if (!TYPES.has(rest)) throw new Error(`${where}: unknown type "${rest}"`);
      if (families.has(name)) throw new Error(`${where}: second TYPE for ${name}`);
      current = { name, type: rest as PromFamily['type'], help: helps.get(name) ?? '', samples: [] };
      families.set(name, current);
      return;
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nm) throw new Error(`${where}: a sample line must start with a metric name`);
    const name = nm[0];
    let i = name.length;
    let labels: Record<string, string> = {};
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i + 1, where));
    if (line[i] !== ' ') throw new Error(`${where}: expected a space before the value`);
    const parts = line.slice(i + 1).split(' ');
    if (parts.length < 1 || parts.length > 2) throw new Error(`${where}: expected a value and at most a timestamp`);
    const value = parseValue(parts[0]!, where);
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new Error(`${where}: bad timestamp`);
    const fam = familyOf(name, families);
    if (!fam) throw new Error(`${where}: sample ${name} comes before any TYPE line of its family`);
    if (fam !== current) throw new Error(`${where}: sample ${name} is not next to its family's other lines`);
    if ((fam.type === 'counter' || name.endsWith('_count')) && value < 0) throw new Error(`${where}: counter ${name} is negative`);
    for (const l of Object.keys(labels)) if (!LABEL_NAME.test(l) || l.startsWith('__')) throw new Error(`${where}: reserved label name ${l}`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new Error(`${where}: series ${key} given twice`);
    seen.add(key);
    fam.samples.push({ name, labels, value });
  });
  return families;
}
