export { sandboxFor, prepareVmSandbox, loadVmSandbox, cleanupStaleSandbox, sandboxEnabled, kvmGroups, limitsFor, type VmSandbox, type SandboxRequest, type SandboxRecord } from './sandbox.js';
