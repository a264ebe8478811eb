export { MicroEngine, createMicroEngine, microIdentity, microRunFiles, vmExitFor, type MicroEngineOptions, MicroVmHandle, type MicroSnapshotFiles } from './engine.js';
