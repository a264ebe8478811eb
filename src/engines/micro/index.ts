export { MicroEngine, createMicroEngine, microRunFiles, vmExitFor, type MicroEngineOptions } from './engine.js';
