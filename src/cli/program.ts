/**
 * The `hangar` command tree. Built by a function so tests can parse
 * arguments without running anything.
 */
import { Command } from 'commander';
import { registerConsoleCommand } from './commands/console.js';
import { registerDiskCommands } from './commands/disk.js';
import { registerDaemonCommands } from './commands/daemon.js';
import { registerDisplayCommands } from './commands/display.js';
import { registerEventsCommand } from './commands/events.js';
import { registerExecCommands } from './commands/exec.js';
import { registerHostCommands } from './commands/host.js';
import { registerImageCommands } from './commands/image.js';
import { registerIsoCommands } from './commands/iso.js';
import { registerLogsCommand } from './commands/logs.js';
import { registerNetworkCommands } from './commands/network.js';
import { registerOperationCommands } from './commands/operation.js';
import { registerRemoteCommands } from './commands/remote.js';
import { registerStorageCommands } from './commands/storage.js';
import { registerUpCommand } from './commands/up.js';
import { registerVmCommands } from './commands/vm.js';
import { registerSnapshotCommands } from './commands/snapshot.js';
import { registerMonitorCommands } from './commands/monitor.js';
import { registerUiCommand } from './commands/ui.js';

export const CLI_VERSION = '0.1.0';

export function buildProgram(): Command {
  const program = new Command('hangar')
    .description('Hangar: VMs on KVM. Talks to the hangard daemon over its REST API.')
    .version(CLI_VERSION, '-V, --version')
    .option('--socket <path>', 'daemon Unix socket (default: $HANGAR_SOCKET or <data dir>/hangard.sock)')
    .option('--remote <url>', 'daemon listening on TCP, e.g. https://host:8443 (token from $HANGAR_API_TOKEN; see `hangar remote`)')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 failure, 2 bad usage or input, 3 not found, 4 conflicting state,\n' +
        '5 daemon unavailable, 6 timeout, 7 unsupported, 8 unauthorized. See docs/cli.md.',
    );
  registerUpCommand(program);
  registerVmCommands(program);
  registerSnapshotCommands(program);
  registerDiskCommands(program);
  registerConsoleCommand(program);
  registerExecCommands(program);
  registerDisplayCommands(program);
  registerIsoCommands(program);
  registerLogsCommand(program);
  registerEventsCommand(program);
  registerOperationCommands(program);
  registerImageCommands(program);
  registerStorageCommands(program);
  registerNetworkCommands(program);
  registerHostCommands(program);
  registerMonitorCommands(program);
  registerDaemonCommands(program);
  registerRemoteCommands(program);
  registerUiCommand(program);
  return program;
}
