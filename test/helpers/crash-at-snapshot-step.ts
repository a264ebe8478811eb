/**
 * Test-only preload for hangard (`node --import <this compiled file>`, given
 * through NODE_OPTIONS): when a snapshot operation reaches the step named by
 * HANGAR_TEST_CRASH_AT_STEP (e.g. `create:disk:data`, see
 * SnapshotManager.stepReached), the daemon SIGKILLs itself right there, so a
 * test can check what the next daemon makes of a crash at that exact point.
 * Nothing of this is in the product.
 */
import { SnapshotManager } from '../../src/host/snapshots/manager.js';
import type { ReportProgress } from '../../src/host/operations.js';

const step = process.env.HANGAR_TEST_CRASH_AT_STEP;
// The VM processes the daemon starts must not load this module too.
delete process.env.NODE_OPTIONS;
delete process.env.HANGAR_TEST_CRASH_AT_STEP;

if (step) {
  const reached = SnapshotManager.prototype.stepReached;
  SnapshotManager.prototype.stepReached = function crashAt(this: SnapshotManager, name: string, progress?: ReportProgress): void {
    reached.call(this, name, progress);
    if (name === step) process.kill(process.pid, 'SIGKILL');
  };
}
