/**
 * SSH public keys a user hands to a VM (they end up in the guest's
 * ~/.ssh/authorized_keys through cloud-init). Each must be one line of the
 * OpenSSH public key format: `TYPE BASE64 [COMMENT]`, with a type Hangar
 * knows, base64 that decodes to a key blob naming that same type, and sizes
 * within bounds. authorized_keys options (`from=...`, `command=...`) are
 * refused: they belong to whoever writes authorized_keys, not to a key.
 */
import { HangarError } from '../../common/errors.js';

/** Key types OpenSSH accepts today. DSA (ssh-dss) is gone from OpenSSH 9.8 and refused. */
export const SSH_KEY_TYPES = [
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
] as const;

/** At most this many keys per VM. */
export const MAX_SSH_KEYS = 32;
/** One key line at most (a 16384-bit RSA key is about 2.8 KiB of base64). */
export const MAX_SSH_KEY_LINE = 8192;
/** A comment at most. */
export const MAX_SSH_KEY_COMMENT = 1024;

const KNOWN = new Set<string>(SSH_KEY_TYPES);

function bad(index: number, message: string): never {
  throw new HangarError('INVALID_ARGUMENT', `sshKeys[${index}]: ${message}`, { field: 'sshKeys', index });
}

/**
 * The type named inside a key blob, or null when the blob is not one: a
 * blob is a sequence of length-prefixed strings (uint32 big-endian, then
 * the bytes), the type first and at least one key field after it, and
 * nothing left over (a truncated copy fails here).
 */
function blobType(blob: Buffer): string | null {
  const fields: Buffer[] = [];
  for (let at = 0; at < blob.length;) {
    if (blob.length - at < 4) return null;
    const n = blob.readUInt32BE(at);
    if (n > blob.length - at - 4) return null;
    fields.push(blob.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  const [type, ...key] = fields;
  if (!type || type.length === 0 || type.length > 64 || key.length === 0) return null;
  const name = type.toString('latin1');
  // An ed25519 key is exactly 32 bytes.
  if (name === 'ssh-ed25519' && key[0]!.length !== 32) return null;
  return name;
}

/**
 * Checks one key line and returns it normalised (single spaces, no
 * surrounding blanks). `index` names it in the error.
 */
export function validateSshKey(line: string, index = 0): string {
  if (typeof line !== 'string') bad(index, 'must be a string');
  if (Buffer.byteLength(line) > MAX_SSH_KEY_LINE) bad(index, `is longer than ${MAX_SSH_KEY_LINE} bytes`);
  // One line only: a line break would smuggle a second authorized_keys entry in.
  if (/[\0-\x08\x0a-\x1f\x7f]/.test(line)) bad(index, 'must be one line without control characters');
  const parts = line.trim().split(/[ \t]+/);
  const [type, data, ...rest] = parts;
  if (!type) bad(index, 'is empty');
  if (!KNOWN.has(type)) {
    if (type === 'ssh-dss') bad(index, 'DSA keys (ssh-dss) are not accepted: OpenSSH no longer supports them; use ssh-ed25519');
    const why = /[=,"]/.test(type) ? 'authorized_keys options are not accepted, only the key itself' : `unknown key type "${type.slice(0, 40)}"`;
    bad(index, `${why} (a public key line is "TYPE BASE64 [COMMENT]", TYPE one of ${SSH_KEY_TYPES.join(', ')}); is this the .pub file?`);
  }
  if (!data) bad(index, `has no key data after "${type}"`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(data) || data.length % 4 !== 0) bad(index, 'key data is not base64');
  const blob = Buffer.from(data, 'base64');
  // The blob names its own type: a key pasted under the wrong name, or a truncated copy, is caught here.
  const inner = blobType(blob);
  if (inner !== type) bad(index, inner === null ? 'key data is not an SSH public key blob (truncated?)' : `key data is a ${inner} key, but the line says ${type}`);
  const comment = rest.join(' ');
  if (Buffer.byteLength(comment) > MAX_SSH_KEY_COMMENT) bad(index, `comment is longer than ${MAX_SSH_KEY_COMMENT} bytes`);
  return comment ? `${type} ${data} ${comment}` : `${type} ${data}`;
}

/** Checks a VM's key list: count, each key, no duplicates (same key data twice). Returns the normalised keys. */
export function validateSshKeys(keys: readonly string[]): string[] {
  if (!Array.isArray(keys)) throw new HangarError('INVALID_ARGUMENT', 'sshKeys must be a list of public key lines', { field: 'sshKeys' });
  if (keys.length > MAX_SSH_KEYS) throw new HangarError('INVALID_ARGUMENT', `at most ${MAX_SSH_KEYS} SSH keys per VM, got ${keys.length}`, { field: 'sshKeys' });
  const seen = new Set<string>();
  const out: string[] = [];
  keys.forEach((k, i) => {
    const norm = validateSshKey(k, i);
    const data = norm.split(' ')[1]!;
    if (seen.has(data)) return; // the same key twice adds nothing
    seen.add(data);
    out.push(norm);
  });
  return out;
}
