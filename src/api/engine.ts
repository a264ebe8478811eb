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

/**
 * Ways a VM can boot: `kernel` (the daemon hands the engine the image's
 * kernel and initrd), `bios` (SeaBIOS runs the boot loader on the VM's
 * CD-ROM or disk) or `uefi` (OVMF does, with the VM's own variable store).
 */
export const BootMode = Type.Union([Type.Literal('kernel'), Type.Literal('bios'), Type.Literal('uefi')]);
export type BootMode = Static<typeof BootMode>;

/**
 * What one VM may ask of an engine. The daemon checks a create request
 * against the chosen engine's limits once, at create, and nowhere else.
 */
export const EngineLimits = Type.Object({
  minMemoryBytes: Type.Integer({ minimum: 0 }),
  maxMemoryBytes: Type.Integer({ minimum: 0 }),
  /** Guest memory must be a whole multiple of this many bytes. */
  memoryGranularityBytes: Type.Integer({ minimum: 1 }),
  maxCpus: Type.Integer({ minimum: 1 }),
});
export type EngineLimits = Static<typeof EngineLimits>;

/** An engine as GET /1.0 reports it. */
export const EngineCapabilities = Type.Object({
  name: EngineName,
  available: Type.Boolean(),
  /** Why not available, when it is not. */
  reason: Type.Optional(Type.String()),
  version: Type.Optional(Type.String()),
  bootModes: Type.Array(BootMode),
  devices: Type.Array(Type.String()),
  accelerators: Type.Array(Accel),
  /** The accelerator a VM of this engine runs with on this host (null: none usable). */
  defaultAccel: Type.Union([Accel, Type.Null()]),
  limits: EngineLimits,
  snapshots: Type.Boolean(),
  migration: Type.Boolean(),
});
export type EngineCapabilities = Static<typeof EngineCapabilities>;
