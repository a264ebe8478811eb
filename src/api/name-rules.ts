/**
 * Name rules for everything that crosses a process boundary (API requests,
 * the CLI, engine configs, hangar-vmm's control API): each rule once, as a
 * pattern and as a test function for code without a schema. The TypeBox
 * schemas that embed them are in names.ts; this file imports nothing, so
 * hangar-vmm's device models can check names without loading TypeBox
 * (hundreds of modules) on the way to their first guest instruction.
 */

/** VM names: also host names of guests and parts of file paths. */
export const VM_NAME_PATTERN = '^[a-z][a-z0-9-]{0,62}$';
export const VM_NAME_RULE = 'lower-case letters, digits and dashes, starting with a letter, at most 63 characters';

/** Image names: also folder names under the data directory. */
export const IMAGE_NAME_PATTERN = '^[a-z][a-z0-9._-]{0,62}$';
export const IMAGE_NAME_RULE = 'lower-case letters, digits, dots, dashes and underscores, starting with a letter, at most 63 characters';

/** Host network interface names as Linux takes them (IFNAMSIZ - 1), never "." or "..". */
export const TAP_NAME_PATTERN = '^(?!\\.{1,2}$)[A-Za-z0-9_.-]{1,15}$';
export const TAP_NAME_RULE = '1-15 letters, digits, ".", "-" or "_", and not "." or ".."';

/** Ids of a VM's devices (drives, NICs): also parts of paths and QEMU option values. */
export const DEVICE_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';
export const DEVICE_ID_RULE = '1-64 letters, digits, "-" or "_"';

/** A MAC address written as six colon-separated hex pairs. */
export const MAC_PATTERN = '^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$';

const VM_NAME_RE = new RegExp(VM_NAME_PATTERN);
const IMAGE_NAME_RE = new RegExp(IMAGE_NAME_PATTERN);
const TAP_NAME_RE = new RegExp(TAP_NAME_PATTERN);
const DEVICE_ID_RE = new RegExp(DEVICE_ID_PATTERN);
const MAC_RE = new RegExp(MAC_PATTERN);

export const isVmName = (s: unknown): s is string => typeof s === 'string' && VM_NAME_RE.test(s);
export const isImageName = (s: unknown): s is string => typeof s === 'string' && IMAGE_NAME_RE.test(s);
export const isTapName = (s: unknown): s is string => typeof s === 'string' && TAP_NAME_RE.test(s);
export const isDeviceId = (s: unknown): s is string => typeof s === 'string' && DEVICE_ID_RE.test(s);
export const isMac = (s: unknown): s is string => typeof s === 'string' && MAC_RE.test(s);
