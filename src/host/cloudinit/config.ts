/**
 * What a VM's cloud-init seed says, as text: meta-data, user-data and the
 * optional network-config, and the checks on what users hand in.
 *
 * User-data and SSH keys (a choice, documented in docs/cloud-init.md):
 * - without user-data of the user's own, Hangar's default is a
 *   `#cloud-config` that gives the keys to the image's default user
 *   (`ssh_authorized_keys`);
 * - user-data of the user's own REPLACES that default whole (cloud-config,
 *   a script or a MIME multipart: Hangar never edits it);
 * - the keys are in meta-data as well (`public-keys`), which cloud-init gives
 *   to the default user whatever the user-data says, so `--ssh-key` and
 *   `--user-data` work together without Hangar having to merge YAML.
 *
 * Every string Hangar writes into YAML is a JSON string: JSON's escapes are
 * a subset of YAML's double-quoted scalars, so no value can break the syntax.
 */
import { HangarError } from '../../common/errors.js';

/** Largest user-data accepted (cloud-init has no limit of its own; clouds allow 16-64 KiB). */
export const MAX_USER_DATA = 256 * 1024;
/** Largest network-config accepted. */
export const MAX_NETWORK_CONFIG = 64 * 1024;

/** What a VmSpec keeps about cloud-init (schemas.ts: VmCloudInit). */
export interface CloudInitSpec {
  sshKeys: string[];
  userData?: string;
  networkConfig?: string;
}

/** What one seed holds. */
export interface SeedContent {
  /** The VM's id: cloud-init runs its once-per-instance steps once per id, not at every boot. */
  instanceId: string;
  hostname: string;
  cloudInit: CloudInitSpec;
}

function invalid(field: string, message: string): never {
  throw new HangarError('INVALID_ARGUMENT', `${field}: ${message}`, { field });
}

function checkText(field: string, text: unknown, max: number): string {
  if (typeof text !== 'string') invalid(field, 'must be text');
  const bytes = Buffer.byteLength(text);
  if (bytes === 0) invalid(field, 'is empty');
  if (bytes > max) invalid(field, `is ${bytes} bytes; at most ${max} (${max / 1024} KiB) are accepted`);
  if (text.includes('\0')) invalid(field, 'contains a NUL byte: only text is accepted (not gzip or other binary)');
  return text;
}

/** The first line, without a trailing CR and blanks. */
function firstLine(text: string): string {
  const nl = text.indexOf('\n');
  return (nl < 0 ? text : text.slice(0, nl)).replace(/[\r \t]+$/, '');
}

/** True when the text opens with MIME headers announcing a multipart body (as cloud-init's own tools write it). */
function isMimeMultipart(text: string): boolean {
  const end = text.search(/\r?\n\r?\n/);
  if (end < 0) return false;
  const headers = text.slice(0, end).split(/\r?\n/);
  // Header lines only ("Name: value", or continuation lines starting with a blank).
  if (!headers.every((h) => /^[A-Za-z0-9-]+:/.test(h) || /^[ \t]/.test(h))) return false;
  return headers.some((h) => /^content-type:[ \t]*multipart\//i.test(h));
}

/**
 * Checks user-data: text within MAX_USER_DATA that cloud-init will take as
 * a cloud-config (`#cloud-config`), a script (`#!`) or a MIME multipart.
 */
export function validateUserData(text: unknown): string {
  const t = checkText('userData', text, MAX_USER_DATA);
  if (t.charCodeAt(0) === 0xfeff) invalid('userData', 'starts with a byte-order mark: save it as UTF-8 without BOM');
  const first = firstLine(t);
  if (first === '#cloud-config' || first.startsWith('#!') || isMimeMultipart(t)) return t;
  invalid('userData', `must start with "#cloud-config", a "#!" script line, or MIME multipart headers (Content-Type: multipart/mixed); it starts with ${JSON.stringify(first.slice(0, 40))}`);
}

/**
 * Checks network-config: text within MAX_NETWORK_CONFIG that names a
 * cloud-init network config version (1 or 2), at the top or under `network:`.
 * Its YAML is cloud-init's to read; what Hangar can check without parsing it is checked.
 */
export function validateNetworkConfig(text: unknown): string {
  const t = checkText('networkConfig', text, MAX_NETWORK_CONFIG);
  if (!/^[ \t]*version:[ \t]*["']?[12]["']?[ \t]*(#.*)?\r?$/m.test(t)) {
    invalid('networkConfig', 'must be a cloud-init network configuration: YAML with "version: 1" or "version: 2" (see docs/cloud-init.md)');
  }
  return t;
}

const q = (s: string): string => JSON.stringify(s);

/** meta-data: instance id, host name, and the SSH keys (so they reach the default user whatever the user-data). */
export function renderMetaData(c: SeedContent): string {
  const lines = [`instance-id: ${q(c.instanceId)}`, `local-hostname: ${q(c.hostname)}`];
  if (c.cloudInit.sshKeys.length > 0) {
    lines.push('public-keys:', ...c.cloudInit.sshKeys.map((k) => `  - ${q(k)}`));
  }
  return `${lines.join('\n')}\n`;
}

/** Hangar's default user-data: the keys for the image's default user, and no password logins over SSH. */
export function defaultUserData(sshKeys: readonly string[]): string {
  const lines = ['#cloud-config', '# Written by Hangar: the default user-data of a VM launched without --user-data.', 'ssh_pwauth: false'];
  if (sshKeys.length > 0) lines.push('ssh_authorized_keys:', ...sshKeys.map((k) => `  - ${q(k)}`));
  return `${lines.join('\n')}\n`;
}

/** The user-data the seed carries: the user's own, or Hangar's default. */
export function renderUserData(c: SeedContent): string {
  return c.cloudInit.userData ?? defaultUserData(c.cloudInit.sshKeys);
}
