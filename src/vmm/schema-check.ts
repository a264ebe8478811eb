/**
 * Checks a value against a JSON Schema of the subset hangar-vmm's API
 * schemas use (type, properties, required, additionalProperties: false,
 * minimum/maximum/multipleOf, minLength/maxLength/pattern, items/maxItems,
 * anyOf, const). The schemas themselves are TypeBox's (src/api/vmm.ts),
 * carried as plain JSON in src/api/vmm-schemas.generated.ts: loading the
 * TypeBox runtime costs hangar-vmm 0.3–1.5 s of start-up on our hosts, this
 * costs nothing. test/unit/vmm-config.test.ts checks that the JSON equals the
 * TypeBox schemas and that this agrees with TypeBox's Value.Check.
 */

export interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: readonly string[];
  additionalProperties?: boolean | JsonSchema;
  minimum?: number;
  maximum?: number;
  multipleOf?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  items?: JsonSchema;
  maxItems?: number;
  anyOf?: readonly JsonSchema[];
  const?: unknown;
  description?: string;
}

export interface SchemaError {
  keyword: string;
  instancePath: string;
  params: { requiredProperties?: string[]; additionalProperties?: string[] };
  message: string;
}

const patterns = new Map<string, RegExp>();
function re(p: string): RegExp {
  let r = patterns.get(p);
  if (!r) { r = new RegExp(p, 'u'); patterns.set(p, r); }
  return r;
}

function typeOk(type: string, v: unknown): boolean {
  switch (type) {
    case 'object': return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'array': return Array.isArray(v);
    case 'string': return typeof v === 'string';
    case 'boolean': return typeof v === 'boolean';
    case 'integer': return Number.isInteger(v);
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'null': return v === null;
    default: return false;
  }
}

/** The first thing wrong with `v`, or null when it matches. */
export function firstSchemaError(s: JsonSchema, v: unknown, at = ''): SchemaError | null {
  const err = (keyword: string, message: string, params: SchemaError['params'] = {}): SchemaError => ({ keyword, instancePath: at, params, message });
  if (s.anyOf) return s.anyOf.some((b) => firstSchemaError(b, v, at) === null) ? null : err('anyOf', 'must match a schema in anyOf');
  if ('const' in s && v !== s.const) return err('anyOf', `must be ${JSON.stringify(s.const)}`);
  if (s.type && !typeOk(s.type, v)) return err('type', `must be ${s.type}`);
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) return err('minimum', `must be >= ${s.minimum}`);
    if (s.maximum !== undefined && v > s.maximum) return err('maximum', `must be <= ${s.maximum}`);
    if (s.multipleOf !== undefined && v % s.multipleOf !== 0) return err('multipleOf', `must be multiple of ${s.multipleOf}`);
  }
  if (typeof v === 'string') {
    const len = [...v].length;
    if (s.minLength !== undefined && len < s.minLength) return err('minLength', `must have at least ${s.minLength} characters`);
    if (s.maxLength !== undefined && len > s.maxLength) return err('maxLength', `must have at most ${s.maxLength} characters`);
    if (s.pattern !== undefined && !re(s.pattern).test(v)) return err('pattern', `must match ${s.pattern}`);
  }
  if (Array.isArray(v)) {
    if (s.maxItems !== undefined && v.length > s.maxItems) return err('maxItems', `must have at most ${s.maxItems} items`);
    if (s.items) for (let i = 0; i < v.length; i++) { const e = firstSchemaError(s.items, v[i], `${at}/${i}`); if (e) return e; }
  }
  if (s.type === 'object' && typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    const props = s.properties ?? {};
    const missing = (s.required ?? []).filter((k) => !Object.prototype.hasOwnProperty.call(o, k) || o[k] === undefined);
    if (missing.length) return err('required', `must have required properties ${missing.join(', ')}`, { requiredProperties: missing });
    if (s.additionalProperties === false) {
      const extra = Object.keys(o).filter((k) => !Object.prototype.hasOwnProperty.call(props, k));
      if (extra.length) return err('additionalProperties', 'must not have additional properties', { additionalProperties: extra });
    }
    for (const [k, ps] of Object.entries(props)) {
      if (!Object.prototype.hasOwnProperty.call(o, k) || o[k] === undefined) continue;
      const e = firstSchemaError(ps, o[k], `${at}/${k}`);
      if (e) return e;
    }
  }
  return null;
}
