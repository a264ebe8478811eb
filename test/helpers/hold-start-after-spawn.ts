/**
 * Test-only preload for hangard (`node --import <this compiled file>`, given
 * through NODE_OPTIONS): every QEMU start, once QEMU runs, writes the pid to
 * the file named by HANGAR_TEST_HOLD_MARKER and then never returns, so the
 * daemon has not recorded the pid. Killing the daemon then is a crash in
 * the middle of a start, every time. Nothing of this is in the product.
 */
import fs from 'node:fs';
import { QemuEngine } from '../../src/engines/qemu/engine.js';
import type { EngineVmConfig, VmHandle } from '../../src/engines/engine.js';

const marker = process.env.HANGAR_TEST_HOLD_MARKER;
// The VM processes the daemon starts must not load this module too.
delete process.env.NODE_OPTIONS;
delete process.env.HANGAR_TEST_HOLD_MARKER;

if (marker) {
  const start = QemuEngine.prototype.start;
  QemuEngine.prototype.start = async function held(this: QemuEngine, config: EngineVmConfig): Promise<VmHandle> {
    const handle = await start.call(this, config);
    fs.writeFileSync(marker, `${handle.pid}\n`);
    return new Promise<VmHandle>(() => { /* held until the test kills the daemon */ });
  };
}
