/**
 * Name rules for everything that crosses a process boundary (API requests,
 * the CLI, engine configs, hangar-vmm's control API). Each rule lives once
 * in name-rules.ts, as a pattern and a test function; here they are also
 * TypeBox schemas for the API schemas to embed.
 */
import { Type } from 'typebox';
import { DEVICE_ID_PATTERN, DEVICE_ID_RULE, IMAGE_NAME_PATTERN, IMAGE_NAME_RULE, MAC_PATTERN, TAP_NAME_PATTERN, TAP_NAME_RULE, VM_NAME_PATTERN, VM_NAME_RULE } from './name-rules.js';

export * from './name-rules.js';

export const VmName = Type.String({ pattern: VM_NAME_PATTERN, description: `Unique VM name: ${VM_NAME_RULE}` });
export const ImageName = Type.String({ pattern: IMAGE_NAME_PATTERN, description: `Image name: ${IMAGE_NAME_RULE}` });
export const TapName = Type.String({ pattern: TAP_NAME_PATTERN, description: `Host TAP device: ${TAP_NAME_RULE}` });
export const DeviceId = Type.String({ pattern: DEVICE_ID_PATTERN, description: `Device id: ${DEVICE_ID_RULE}` });
export const MacAddress = Type.String({ pattern: MAC_PATTERN, description: 'MAC address, e.g. 02:00:00:00:00:01' });
