/**
 * A tiny encoder for the ACPI Machine Language (AML) Hangar's DSDT needs:
 * scopes, devices, named integers, strings, packages and buffers, EISA ids,
 * and resource templates with I/O ranges and ISA IRQs (ACPI 6.5, chapters
 * 19 and 20). Encoders return bytes; callers nest them. Hand-built AML keeps
 * hangar-vmm free of an ASL compiler at build time.
 */

const SCOPE_OP = 0x10;
const NAME_OP = 0x08;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const QWORD_PREFIX = 0x0e;
const STRING_PREFIX = 0x0d;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const METHOD_OP = 0x14;
const NOTIFY_OP = 0x86;
const ROOT_CHAR = 0x5c;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;

/** PkgLength counts itself: one byte up to 63, else a lead byte plus 1-3 bytes (28 bits at most). */
export const PKG_LENGTH_MAX = 0x0fff_ffff;

function concat(parts: Array<Uint8Array | number[]>): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

/**
 * PkgLength for a body of `bodyLen` bytes: the encoded length covers the
 * PkgLength bytes themselves plus the body.
 */
export function pkgLength(bodyLen: number): Uint8Array {
  if (!Number.isInteger(bodyLen) || bodyLen < 0) throw new RangeError(`bad AML body length ${bodyLen}`);
  if (bodyLen + 1 <= 0x3f) return Uint8Array.of(bodyLen + 1);
  for (let extra = 1; extra <= 3; extra++) {
    const total = bodyLen + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const b = new Uint8Array(1 + extra);
      b[0] = (extra << 6) | (total & 0x0f);
      for (let i = 0; i < extra; i++) b[1 + i] = (total >>> (4 + 8 * i)) & 0xff;
      return b;
    }
  }
  throw new RangeError(`AML package of ${bodyLen} bytes exceeds PkgLength's ${PKG_LENGTH_MAX}`);
}

/** One NameSeg: up to four characters A-Z, 0-9, _ (not starting with a digit), padded with '_'. */
function nameSeg(seg: string): number[] {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) throw new RangeError(`bad AML name segment "${seg}"`);
  return [...seg.padEnd(4, '_')].map((c) => c.charCodeAt(0));
}

/**
 * A NameString: "\\_SB_.COM1" (rooted, dotted segments) or "COM1" (relative).
 * Two segments use DualNamePrefix, more use MultiNamePrefix.
 */
export function nameString(name: string): Uint8Array {
  const rooted = name.startsWith('\\');
  const body = rooted ? name.slice(1) : name;
  const segs = body === '' ? [] : body.split('.');
  if (segs.length === 0 && !rooted) throw new RangeError('empty AML name');
  if (segs.length > 255) throw new RangeError('AML name has too many segments');
  const out: number[] = rooted ? [ROOT_CHAR] : [];
  if (segs.length === 0) out.push(0x00); // NullName (only meaningful rooted: "\\")
  else if (segs.length === 2) out.push(DUAL_NAME_PREFIX);
  else if (segs.length > 2) out.push(MULTI_NAME_PREFIX, segs.length);
  for (const s of segs) out.push(...nameSeg(s));
  return Uint8Array.from(out);
}

/** An integer constant in its shortest encoding. */
export function integer(v: number | bigint): Uint8Array {
  const n = BigInt(v);
  if (n < 0n || n > 0xffff_ffff_ffff_ffffn) throw new RangeError(`AML integer ${n} out of range`);
  if (n === 0n) return Uint8Array.of(ZERO_OP);
  if (n === 1n) return Uint8Array.of(ONE_OP);
  const le = (bytes: number) => Array.from({ length: bytes }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
  if (n <= 0xffn) return Uint8Array.from([BYTE_PREFIX, ...le(1)]);
  if (n <= 0xffffn) return Uint8Array.from([WORD_PREFIX, ...le(2)]);
  if (n <= 0xffff_ffffn) return Uint8Array.from([DWORD_PREFIX, ...le(4)]);
  return Uint8Array.from([QWORD_PREFIX, ...le(8)]);
}

/** A string constant (printable ASCII, NUL-terminated). */
export function string(s: string): Uint8Array {
  if (!/^[\x01-\x7f]*$/.test(s)) throw new RangeError('AML strings are ASCII without NUL');
  return concat([[STRING_PREFIX], [...s].map((c) => c.charCodeAt(0)), [0]]);
}

/**
 * The 32-bit compressed EISA id of a PNP id such as "PNP0501": three letters
 * of five bits each, then four hex digits, stored big-endian as a DWord.
 */
export function eisaIdValue(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`bad EISA id "${id}"`);
  const c = (i: number) => id.charCodeAt(i) - 0x40;
  const hex = parseInt(id.slice(3), 16);
  const b0 = (c(0) << 2) | (c(1) >> 3);
  const b1 = ((c(1) & 7) << 5) | c(2);
  const b2 = hex >> 8;
  const b3 = hex & 0xff;
  return (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)) >>> 0;
}

/** EISAID("PNP0501") as AML: a DWord constant. */
export function eisaId(id: string): Uint8Array {
  const v = eisaIdValue(id);
  return Uint8Array.of(DWORD_PREFIX, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
}

/** Name (NAME, value). */
export function name(n: string, value: Uint8Array): Uint8Array {
  return concat([[NAME_OP], nameString(n), value]);
}

/** Buffer { bytes }: the size is an integer term, then the bytes. */
export function buffer(bytes: Uint8Array): Uint8Array {
  const body = concat([integer(bytes.length), bytes]);
  return concat([[BUFFER_OP], pkgLength(body.length), body]);
}

/** Package { elements } (each element already an encoded data object). */
export function pkg(elements: Uint8Array[]): Uint8Array {
  if (elements.length > 255) throw new RangeError('AML Package holds at most 255 elements');
  const body = concat([[elements.length], ...elements]);
  return concat([[PACKAGE_OP], pkgLength(body.length), body]);
}

/** Scope (NAME) { terms }. */
export function scope(n: string, terms: Uint8Array[]): Uint8Array {
  const body = concat([nameString(n), ...terms]);
  return concat([[SCOPE_OP], pkgLength(body.length), body]);
}

/** Device (NAME) { terms }. */
export function device(n: string, terms: Uint8Array[]): Uint8Array {
  const body = concat([nameString(n), ...terms]);
  return concat([[EXT_OP_PREFIX, DEVICE_OP], pkgLength(body.length), body]);
}

/**
 * Method (NAME, argCount, NotSerialized) { terms }: the flags byte holds the argument count
 * (bits 0-2); the methods Hangar writes only notify, so they need no serialization.
 */
export function method(n: string, argCount: number, terms: Uint8Array[]): Uint8Array {
  if (!Number.isInteger(argCount) || argCount < 0 || argCount > 7) throw new RangeError(`AML methods take 0 to 7 arguments, not ${argCount}`);
  const body = concat([nameString(n), [argCount], ...terms]);
  return concat([[METHOD_OP], pkgLength(body.length), body]);
}

/** Notify (\\_SB.DEV, value): tells the OS's driver for that device about an event (0x80 for a button: pressed). */
export function notify(target: string, value: number): Uint8Array {
  return concat([[NOTIFY_OP], nameString(target), integer(value)]);
}

// ---- resource templates (ACPI 6.5, 6.4: resource data types) --------------

const RES_IRQ = 0x04; // small item, IRQ descriptor
const RES_IO = 0x08; // small item, I/O port descriptor
const RES_END = 0x0f; // small item, end tag
const RES_MEMORY32_FIXED = 0x86; // large item, 32-bit fixed memory range
const RES_EXTENDED_IRQ = 0x89; // large item, extended interrupt descriptor

/** A large resource item: tag, 16-bit body length, body. */
function largeItem(tag: number, body: number[]): Uint8Array {
  return Uint8Array.from([tag, body.length & 0xff, body.length >> 8, ...body]);
}

const u32le = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];

/** Memory32Fixed (ReadWrite, base, length): a fixed MMIO window below 4 GiB. */
export function memory32Fixed(base: number, length: number, writable = true): Uint8Array {
  for (const v of [base, length]) if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`Memory32Fixed value ${v} out of range`);
  if (base + length > 0x1_0000_0000) throw new RangeError('Memory32Fixed range crosses 4 GiB');
  return largeItem(RES_MEMORY32_FIXED, [writable ? 1 : 0, ...u32le(base), ...u32le(length)]);
}

export interface InterruptFlags {
  /** Level triggered (true) or edge triggered (false). */
  level: boolean;
  activeLow?: boolean;
  shared?: boolean;
}

/**
 * Interrupt (ResourceConsumer, Level|Edge, ActiveHigh|ActiveLow, Exclusive|Shared) { gsis }:
 * the extended interrupt descriptor, which names GSIs of any number and carries the trigger mode.
 */
export function extendedInterrupt(gsis: number[], flags: InterruptFlags): Uint8Array {
  if (gsis.length === 0 || gsis.length > 255) throw new RangeError('an Interrupt descriptor holds 1 to 255 GSIs');
  for (const g of gsis) if (!Number.isInteger(g) || g < 0 || g > 0xffff_ffff) throw new RangeError(`GSI ${g} out of range`);
  // Bit 0 consumer, bit 1 edge (1) / level (0), bit 2 active low, bit 3 shared.
  const f = 1 | (flags.level ? 0 : 2) | (flags.activeLow ? 4 : 0) | (flags.shared ? 8 : 0);
  return largeItem(RES_EXTENDED_IRQ, [f, gsis.length, ...gsis.flatMap(u32le)]);
}

/** IO (Decode16, min, max, alignment, length): an I/O port range with 16-bit decoding. */
export function ioPort(min: number, max: number, alignment: number, length: number): Uint8Array {
  for (const v of [min, max]) if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`I/O port ${v} out of range`);
  if (!Number.isInteger(alignment) || alignment < 0 || alignment > 0xff || !Number.isInteger(length) || length < 0 || length > 0xff) throw new RangeError('bad I/O alignment or length');
  return Uint8Array.of((RES_IO << 3) | 7, 0x01, min & 0xff, min >> 8, max & 0xff, max >> 8, alignment, length);
}

/** IRQNoFlags () { irqs }: ISA IRQs, edge triggered, active high, exclusive. */
export function irqNoFlags(irqs: number[]): Uint8Array {
  let mask = 0;
  for (const i of irqs) {
    if (!Number.isInteger(i) || i < 0 || i > 15) throw new RangeError(`ISA IRQ ${i} out of range 0..15`);
    mask |= 1 << i;
  }
  return Uint8Array.of((RES_IRQ << 3) | 2, mask & 0xff, mask >> 8);
}

/** ResourceTemplate () { descriptors } as a Buffer object, closed by an end tag (checksum 0: "treat as correct"). */
export function resourceTemplate(descriptors: Uint8Array[]): Uint8Array {
  return buffer(concat([...descriptors, [(RES_END << 3) | 1, 0x00]]));
}
