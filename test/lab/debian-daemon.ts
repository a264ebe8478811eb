/**
 * issue 7 through the daemon, in the KVM lab: the debian-12 image on the micro
 * engine the way a user runs it — hangard and the `hangar` CLI — against L1's
 * real /dev/kvm. Not in the suite (a Debian boot under nested TCG takes ~10
 * minutes, and this scenario boots it twice). Run it with
 *
 *   scripts/kvm-lab.sh --with-debian --timeout 3600 -- node dist/test/lab/debian-daemon.js
 *
 * Inside L1:
 *  1. the debian-12 image from the lab's data disk (scripts/kvm-lab.sh --with-debian:
 *     /data/debian-12, its kernel, initramfs and a raw copy of its disk) becomes the
 *     daemon's built-in debian-12 in an image folder of its own on the same disk
 *     (hard links; its image.json names the raw disk);
 *  2. hangard starts on a data folder there (SQLite, volumes, VM folders), with
 *     HANGAR_IMAGE_DIR at that image folder. VM processes run unconfined
 *     (HANGAR_VM_SANDBOX=0): L1's root has no groupadd and no cgroup mounts;
 *  3. `hangar launch debian-12 NAME --engine micro --memory 1G --network none
 *     --user-data FILE`: the daemon makes the VM's raw root volume from the image's
 *     disk (qemu-img) and its cloud-init seed (mkfs.vfat, mcopy) with the VM's name
 *     as host name; the user-data sets root's password for the console (the lab
 *     has no SSH);
 *  4. the daemon's console (WebSocket /1.0/vms/NAME/console): agetty's banner and
 *     prompt name the host NAME (cloud-init set it); root logs in
 *     (test/lab/serial-login.ts), checks the host name, kernel command line and
 *     disks, writes a file on the root disk;
 *  5. `hangar stop NAME --timeout 900`: the graceful stop (ACPI power button →
 *     systemd powers off → S5): the VM ends `stopped` with lastExit `poweroff`
 *     (a forced stop would say `killed`), the console shows the kernel's
 *     "reboot: Power down", the stopped event says poweroff;
 *  6. `hangar start NAME`: a new hangar-vmm on the same root volume boots to a
 *     login again; root logs in and reads the file back;
 *  7. stop again (graceful), `hangar delete NAME`: its folder and root volume go.
 *
 * Prints progress lines (`lab: +SECONDS what`), one `LAB-RESULT {json}` line
 * (answers and timings) and, on failure, `LAB-CONSOLE` lines with the console's
 * tail and the daemon's and hangar-vmm's logs; exits 0 only when all passed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, ConsoleSession, type TestDaemon } from '../helpers/daemon.js';
import { runHangar, type CliResult } from '../helpers/cli.js';
import { loginAsRoot, shellRun, LAB_ROOT_PASSWORD, type SerialConsole } from './serial-login.js';

/** What scripts/kvm-lab.sh --with-debian puts in L1 (HANGAR_LAB_DEBIAN_DIR: elsewhere, for a dry run outside the lab). */
const LAB_DEBIAN = process.env.HANGAR_LAB_DEBIAN_DIR ?? '/data/debian-12';
/** On the same file system as LAB_DEBIAN (hard links); in L1 the data disk, written through QEMU's snapshot overlay. */
const WORK = process.env.HANGAR_LAB_WORK_DIR ?? '/data';
const IMAGE_DIR = path.join(WORK, 'hangar-images');
const DATA_DIR = path.join(WORK, 'hangard');
const VM = process.env.HANGAR_LAB_VM_NAME ?? 'lab-debian';
const TOKEN = `hangar-daemon-persist-${Date.now()}`;
const BOOT_MS = Number(process.env.HANGAR_LAB_DEBIAN_TIMEOUT_S ?? 2400) * 1000;
const STEP_MS = 120_000;
/** One shell command: journalctl and friends stay quiet for minutes under nested TCG. */
const COMMAND_MS = 600_000;
/**
 * systemd's way down under nested TCG takes a minute or more; the daemon forces the stop only after
 * this. HANGAR_LAB_STOP_TIMEOUT_S=5 makes the daemon force it: the scenario must then fail (killed).
 */
const STOP_TIMEOUT_S = Number(process.env.HANGAR_LAB_STOP_TIMEOUT_S ?? 900);
/** Each `hangar` is a Node start in L1 (~10–20 s under TCG). */
const CLI_MS = 300_000;

const t0 = Date.now();
const secs = (ms: number) => Math.round(ms / 100) / 10;
const say = (what: string) => process.stdout.write(`lab: +${secs(Date.now() - t0)}s ${what}\n`);

interface Result {
  scenario: 'debian-daemon';
  ok: boolean;
  error?: string;
  vm: string;
  /** Seconds (wall, in L1). */
  s: Record<string, number>;
  answers: Record<string, string>;
}
const r: Result = { scenario: 'debian-daemon', ok: false, vm: VM, s: {}, answers: {} };

/**
 * The daemon's built-in debian-12, as hangard finds built images: vmlinuz, initrd.img and the
 * image.json under IMAGE_DIR/debian-12, the disk named there. Hard links to the lab's copy (no
 * 2 GiB copy); the image.json is the image's own with the raw disk's name.
 */
function stageImage(): void {
  const dir = path.join(IMAGE_DIR, 'debian-12');
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ['vmlinuz', 'initrd.img', 'disk.raw']) {
    const to = path.join(dir, f);
    if (!fs.existsSync(to)) fs.linkSync(path.join(LAB_DEBIAN, f), to);
  }
  const meta = JSON.parse(fs.readFileSync(path.join(LAB_DEBIAN, 'image.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(dir, 'image.json'), `${JSON.stringify({ ...meta, disk: 'disk.raw' }, null, 2)}\n`);
}

let d: TestDaemon | undefined;
let con: ConsoleSession | undefined;

async function hangar(args: string[], what: string, timeoutMs = CLI_MS): Promise<CliResult> {
  const started = Date.now();
  const res = await runHangar(args, { env: d!.env, timeoutMs });
  say(`hangar ${args.join(' ')} → exit ${res.code} (${secs(Date.now() - started)} s)`);
  if (res.code !== 0) throw new Error(`${what}: hangar ${args.join(' ')} exited ${res.code}: ${res.stderr.trim()}`);
  return res;
}

interface VmJson { state: string; spec: { engine: string; image: string; disks?: Array<{ name: string; volume: string }> }; runtime: { pid: number | null; accel: string | null; lastExit: { reason: string; detail?: string } | null } }

/** The default pool's volumes, by name (a JSON list). */
async function volumeNames(): Promise<string> {
  const res = await d!.request('GET', '/1.0/storage-pools/default/volumes');
  if (res.status !== 200 || !Array.isArray(res.body?.metadata)) throw new Error(`listing volumes: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  return JSON.stringify((res.body.metadata as Array<{ name: string }>).map((v) => v.name));
}

/**
 * Seconds from hangar-vmm's spawn (its start time in /proc) to its "VM started" log line (the
 * guest's vCPUs run): what the micro engine's start limit must cover.
 */
function vmmSpawnToStarted(pid: number, vmmLog: string): number | undefined {
  try {
    const btime = Number(/^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))![1]);
    // Field 22 of /proc/PID/stat, counted after the ")" that ends the command name; clock ticks of 1/100 s.
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const spawnedMs = (btime + Number(fields[19]) / 100) * 1000;
    const line = fs.readFileSync(vmmLog, 'utf8').split('\n').reverse().find((l) => l.includes('"msg":"VM started"'));
    return line ? secs((JSON.parse(line) as { time: number }).time - spawnedMs) : undefined;
  } catch { return undefined; }
}

/** The daemon's console as serial-login.ts wants it: the text so far and a way to type. */
function serial(c: ConsoleSession): SerialConsole {
  return { get text() { return c.output; }, type: (s: string) => c.send(s) };
}

/** Attaches to the VM's console and waits for agetty's banner and prompt, which must name the VM. */
async function toLoginPrompt(which: string, since: number): Promise<ConsoleSession> {
  const c = await ConsoleSession.open(d!, VM);
  con = c;
  // agetty's banner names the host: cloud-init set it to the VM's name before the getty started.
  const banner = /Debian GNU\/Linux 12 (\S+) ttyS0/;
  await c.waitFor(banner, BOOT_MS);
  const m = banner.exec(c.output)!;
  r.answers[`${which}Banner`] = m[0];
  if (m[1] !== VM) throw new Error(`${which} boot: the getty banner names the host ${JSON.stringify(m[1])}, not the VM's name ${VM}`);
  // Only "login: ": cloud-init's console messages may split "NAME login: ".
  await c.waitFor(/login: /, BOOT_MS, m.index);
  r.s[`${which}ToLogin`] = secs(Date.now() - since);
  say(`${which} boot: login prompt ${r.s[`${which}ToLogin`]} s after the CLI was asked`);
  return c;
}

/** root logs in (the user-data's password); returns a function that runs a command at the shell. */
async function login(c: ConsoleSession, which: string): Promise<(cmd: string) => Promise<string>> {
  const s = serial(c);
  let from = await loginAsRoot(s, STEP_MS);
  say(`${which} boot: logged in as root`);
  return async (cmd: string) => {
    const { out, next } = await shellRun(s, cmd, from, COMMAND_MS);
    from = next;
    say(`  ${cmd.slice(0, 70)}`);
    return out;
  };
}

/** `hangar stop` (graceful): the VM must end stopped by the guest's own poweroff, not killed. */
async function gracefulStop(which: string): Promise<void> {
  const c = con!;
  const from = c.output.length;
  const started = Date.now();
  const stopped = JSON.parse((await hangar(['stop', VM, '--timeout', String(STOP_TIMEOUT_S), '--json'], `${which} stop`, (STOP_TIMEOUT_S + 300) * 1000)).stdout) as VmJson;
  r.s[`${which}Stop`] = secs(Date.now() - started);
  r.answers[`${which}StopState`] = stopped.state;
  r.answers[`${which}LastExit`] = JSON.stringify(stopped.runtime.lastExit);
  if (stopped.state !== 'stopped') throw new Error(`${which} stop: the VM is ${stopped.state}, expected stopped`);
  if (stopped.runtime.lastExit?.reason !== 'poweroff') throw new Error(`${which} stop: lastExit ${JSON.stringify(stopped.runtime.lastExit)}: the guest did not power off by itself (a forced stop says killed)`);
  // The kernel's last words on the console: systemd went all the way down to ACPI S5. The console
  // log (hangar-vmm writes it itself) has them even if the daemon closed the socket first.
  let tail = c.output.slice(from);
  if (!/reboot: Power down/.test(tail)) tail = fs.readFileSync(path.join(DATA_DIR, 'vms', VM, 'console.log'), 'latin1').slice(-20_000);
  r.answers[`${which}PowerDown`] = /reboot: Power down/.test(tail) ? 'seen' : 'missing';
  if (r.answers[`${which}PowerDown`] !== 'seen') throw new Error(`${which} stop: the console did not show "reboot: Power down"; its tail: ${JSON.stringify(tail.slice(-600))}`);
  const events = (await d!.request('GET', `/1.0/events?vm=${VM}`)).body.metadata as Array<{ type: string; reason?: string }>;
  const last = events.filter((e) => e.type === 'stopped').at(-1);
  r.answers[`${which}StopEvent`] = JSON.stringify(last ?? null);
  if (!last || !/^poweroff/.test(last.reason ?? '')) throw new Error(`${which} stop: the last stopped event is ${JSON.stringify(last)}, expected reason poweroff`);
  say(`${which} stop: stopped by the guest's poweroff after ${r.s[`${which}Stop`]} s (${last.reason})`);
  await c.close();
}

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(LAB_DEBIAN, 'disk.raw'))) throw new Error(`${LAB_DEBIAN} is missing: run the lab with --with-debian`);
  stageImage();
  process.env.HANGAR_IMAGE_DIR = IMAGE_DIR;
  let at = Date.now();
  d = await startDaemon({ dataDir: DATA_DIR, startTimeoutMs: 300_000, env: { HANGAR_VM_SANDBOX: '0', HANGAR_LOG_LEVEL: 'info' } });
  r.s.daemonUp = secs(Date.now() - at);
  say(`hangard answers (pid ${d.pid}) after ${r.s.daemonUp} s`);
  const images = (await hangar(['image', 'list'], 'image list')).stdout;
  r.answers.imageList = images.split('\n').find((l) => l.startsWith('debian-12')) ?? '';

  const userData = path.join(DATA_DIR, 'user-data.yaml');
  fs.writeFileSync(userData, ['#cloud-config', '# test/lab/debian-daemon.ts: root logs in on the serial console (the lab has no SSH).',
    'bootcmd:', `  - [sh, -c, "echo root:${LAB_ROOT_PASSWORD} | chpasswd"]`, 'ssh_pwauth: false', ''].join('\n'));

  // 3. launch: root volume, seed, hangar-vmm.
  at = Date.now();
  const launched = JSON.parse((await hangar(['launch', 'debian-12', VM, '--engine', 'micro', '--memory', '1G', '--network', 'none', '--user-data', userData, '--json'], 'launch', 1_800_000)).stdout) as VmJson;
  r.s.launch = secs(Date.now() - at);
  r.answers.launchState = launched.state;
  r.answers.engine = `${launched.spec.engine} ${launched.runtime.accel}`;
  if (launched.state !== 'running' || launched.spec.engine !== 'micro') throw new Error(`launch: ${JSON.stringify(launched)}`);
  const rootVolume = launched.spec.disks?.find((x) => x.name === 'root')?.volume;
  r.answers.rootVolume = rootVolume ?? '';
  const runDir = path.join(DATA_DIR, 'vms', VM);
  const cfg = JSON.parse(fs.readFileSync(path.join(runDir, 'engine-config.json'), 'utf8')) as { boot?: { cmdline?: string }; disks?: Array<{ id: string; path: string; format: string; readOnly?: boolean }> };
  r.answers.engineCmdline = cfg.boot?.cmdline ?? '';
  r.answers.engineDisks = (cfg.disks ?? []).map((x) => `${x.id}:${x.format}${x.readOnly ? ':ro' : ''}`).join(' ');
  const firstVmm = vmmSpawnToStarted(launched.runtime.pid!, path.join(runDir, 'vmm.log'));
  if (firstVmm !== undefined) r.s.firstVmmSpawnToStarted = firstVmm;

  // 4. first boot, through the daemon's console.
  let c = await toLoginPrompt('first', at);
  let sh = await login(c, 'first');
  r.answers.hostname = await sh('hostname');
  if (r.answers.hostname !== VM) throw new Error(`the guest's host name is ${JSON.stringify(r.answers.hostname)}, expected the VM's name ${VM}`);
  r.answers.cmdline = await sh('cat /proc/cmdline');
  r.answers.disks = await sh("lsblk -rno NAME,SIZE,RO,LABEL | tr '\\n' ';'");
  r.answers.cloudInit = await sh('cloud-init status --long 2>&1 | head -4 | tr "\\n" ";"; grep -h instance-id /run/cloud-init/instance-data.json 2>/dev/null | head -1');
  r.answers.write = await sh(`echo ${TOKEN} > /root/hangar-daemon-persist && sync && cat /root/hangar-daemon-persist`);
  if (r.answers.write !== TOKEN) throw new Error(`the root disk did not take the write: ${r.answers.write}`);

  // 5. graceful stop.
  await gracefulStop('first');

  // 6. start again; the file is there.
  at = Date.now();
  const started = JSON.parse((await hangar(['start', VM, '--json'], 'start')).stdout) as VmJson;
  r.s.start = secs(Date.now() - at);
  if (started.state !== 'running') throw new Error(`start: the VM is ${started.state}`);
  const secondVmm = vmmSpawnToStarted(started.runtime.pid!, path.join(runDir, 'vmm.log'));
  if (secondVmm !== undefined) r.s.secondVmmSpawnToStarted = secondVmm;
  c = await toLoginPrompt('second', at);
  sh = await login(c, 'second');
  r.answers.persisted = await sh('cat /root/hangar-daemon-persist 2>&1');
  if (r.answers.persisted !== TOKEN) throw new Error(`after stop and start the file holds ${JSON.stringify(r.answers.persisted)}, expected ${TOKEN}`);
  r.answers.previousShutdown = await sh("journalctl -b -1 --no-pager -o cat -u systemd-logind 2>&1 | tail -3 | tr '\\n' ';'");

  // 7. stop again, delete: the VM's folder and its root volume go.
  await gracefulStop('second');
  r.answers.volumesBeforeDelete = await volumeNames();
  if (!r.answers.volumesBeforeDelete.includes(`"${VM}-root"`)) throw new Error(`the VM's root volume is not listed: ${r.answers.volumesBeforeDelete}`);
  await hangar(['delete', VM], 'delete');
  r.answers.runDirAfterDelete = fs.existsSync(runDir) ? 'present' : 'gone';
  r.answers.volumesAfterDelete = await volumeNames();
  if (r.answers.runDirAfterDelete !== 'gone') throw new Error(`after delete ${runDir} is still there`);
  if (rootVolume && r.answers.volumesAfterDelete.includes(`${VM}-root`)) throw new Error(`after delete the root volume is still there: ${r.answers.volumesAfterDelete}`);
  r.ok = true;
}

function tailOf(file: string, lines: number): string[] {
  try { return fs.readFileSync(file, 'utf8').replace(/\r/g, '').split('\n').slice(-lines); } catch { return [`(${file}: not there)`]; }
}

try {
  await main();
} catch (e) {
  r.error = (e as Error).message;
  say(`FAILED: ${r.error}`);
  for (const l of (con?.output ?? '').replace(/\r/g, '').split('\n').slice(-60)) process.stdout.write(`LAB-CONSOLE console: ${l}\n`);
  for (const l of tailOf(path.join(DATA_DIR, 'vms', VM, 'vmm.log'), 20)) process.stdout.write(`LAB-CONSOLE vmm.log: ${l}\n`);
  for (const f of ['hangard.stderr', 'hangard.log']) for (const l of tailOf(path.join(DATA_DIR, f), 30)) process.stdout.write(`LAB-CONSOLE ${f}: ${l.slice(0, 400)}\n`);
} finally {
  r.s.total = secs(Date.now() - t0);
  process.stdout.write(`LAB-RESULT ${JSON.stringify(r)}\n`);
  await d?.cleanup().catch(() => {});
}
process.exit(r.ok ? 0 : 1);
