export { MicroEngine, createMicroEngine, microIdentity, microRunFiles, vmExitFor, type MicroEngineOptions } from './engine.js';
