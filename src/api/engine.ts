/**
 * Engine names and accelerators: wire values shared by the API, the CLI,
 * the daemon and the engines.
 */
import { Type, type Static } from 'typebox';

export const EngineName = Type.Union([Type.Literal('qemu'), Type.Literal('micro')]);
export type EngineName = Static<typeof EngineName>;
export const ENGINE_NAMES: readonly EngineName[] = ['qemu', 'micro'];

export const Accel = Type.Union([Type.Literal('kvm'), Type.Literal('tcg')]);
export type Accel = Static<typeof Accel>;
