export { MicroEngine, createMicroEngine, microIdentity, microRunFiles, vmExitFor, microStartTimeoutMs, type MicroEngineOptions, MicroVmHandle, type MicroSnapshotFiles } from './engine.js';
