/**
 * SSH public key lines for tests, made with node:crypto (no ssh-keygen on
 * the test host needed): a fresh ed25519 key in OpenSSH's one-line format.
 */
import { generateKeyPairSync } from 'node:crypto';

function sshString(b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** An OpenSSH key blob: the type name, then the given fields, each length-prefixed. */
export function sshBlob(type: string, ...fields: Buffer[]): Buffer {
  return Buffer.concat([sshString(Buffer.from(type, 'latin1')), ...fields.map(sshString)]);
}

/** "ssh-ed25519 AAAA... comment" for a new key pair. */
export function ed25519PublicKeyLine(comment = 'test@hangar'): string {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url');
  return `ssh-ed25519 ${sshBlob('ssh-ed25519', raw).toString('base64')} ${comment}`.trim();
}
