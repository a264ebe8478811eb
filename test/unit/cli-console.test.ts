/**
 * `hangar console` against a fake daemon: the scripted mode (settle, until,
 * the daemon closing the stream) and the interactive mode on a real
 * pseudo-terminal (util-linux `script`): raw keys reach the guest, Ctrl-]
 * detaches, and the terminal is back in cooked mode afterwards.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../src/common/paths.js';
import { FakeDaemon, runHangar } from './cli-fake-daemon.js';

let fake: FakeDaemon;

before(async () => {
  fake = await new FakeDaemon()
    .onWebSocket('/1.0/vms/shell/console', (ws) => {
      // Echoes keys like a terminal would and answers each completed line.
      let line = '';
      ws.on('message', (d: Buffer) => {
        for (const ch of d.toString('latin1')) {
          if (ch === '\r' || ch === '\n') {
            ws.send(Buffer.from(`\r\nout:${line.toUpperCase()}\r\ntiny# `));
            line = '';
          } else {
            line += ch;
            ws.send(Buffer.from(ch === '\x03' ? '^C' : ch));
          }
        }
      });
    })
    .onWebSocket('/1.0/vms/slow/console', (ws) => {
      // Answers late and in pieces: the settle timer must restart with each piece.
      ws.on('message', () => {
        let n = 0;
        const t = setInterval(() => {
          ws.send(Buffer.from(`part${n}\n`));
          if (++n === 4) clearInterval(t);
        }, 200);
      });
    })
    .onWebSocket('/1.0/vms/prompt/console', (ws) => {
      // A busybox prompt as a UART delivers it: the cursor query split over frames, and last of all.
      ws.on('message', () => {
        for (const f of ['tiny# \x1b', '[6', 'necho hi\r\nhi\r\n\x1b[31mred\x1b[0m \x1b[', '5n\x1b[2', 'Jtiny# \x1b[', '6n']) ws.send(Buffer.from(f, 'latin1'));
      });
    })
    .onWebSocket('/1.0/vms/partial/console', (ws) => {
      // Output that ends in what could have become a query, but did not.
      ws.on('message', () => { for (const f of ['done \x1b', '[']) ws.send(Buffer.from(f, 'latin1')); });
    })
    .onWebSocket('/1.0/vms/slowdrop/console', (ws) => ws.close(4001, 'dropped: more than 1048576 bytes of console output left unread'))
    .onWebSocket('/1.0/vms/crowded/console', (ws) => ws.close(4002, 'the console already has 16 clients, the most it serves at once'))
    .onWebSocket('/1.0/vms/failing/console', (ws) => ws.close(1011, 'engine has no console stream'))
    .onWebSocket('/1.0/vms/stopping/console', (ws) => {
      ws.send(Buffer.from('reboot: Power down\n'));
      ws.close(1000, 'VM stopped');
    })
    .listen();
});

after(async () => {
  await fake.close();
});

test('scripted: the quiet period restarts with every chunk of output', async () => {
  const r = await runHangar(['console', 'slow', '--settle', '500ms'], { env: fake.env(), input: 'go\n' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'part0\npart1\npart2\npart3\n');
});

test('scripted: the daemon ending the console ends the session', async () => {
  const r = await runHangar(['console', 'stopping', '--settle', '10s'], { env: fake.env(), input: '' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'reboot: Power down\n');
  const j = await runHangar(['console', 'stopping', '--json'], { env: fake.env(), input: '' });
  assert.equal(JSON.parse(j.stdout).end, 'closed');
});

test('scripted: a console the daemon cannot attach is an error', async () => {
  const r = await runHangar(['console', 'failing'], { env: fake.env(), input: 'x\n' });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Error: console closed by the daemon: engine has no console stream (ENGINE_FAILED)\n');
});

test('scripted: bad --until and --settle values are refused', async () => {
  const a = await runHangar(['console', 'shell', '--until', '(x'], { env: fake.env() });
  assert.equal(a.code, 2);
  assert.match(a.stderr, /--until "\(x" is not a valid regular expression/);
  const b = await runHangar(['console', 'shell', '--settle', 'soon'], { env: fake.env() });
  assert.equal(b.code, 2);
  assert.match(b.stderr, /--settle must be a duration such as 500ms, 2s or 1m, got "soon"/);
  // A bare number once meant milliseconds: refused rather than silently read in another unit.
  const c = await runHangar(['console', 'shell', '--settle', '2'], { env: fake.env() });
  assert.equal(c.code, 2);
  assert.match(c.stderr, /--settle needs a unit: 2s or 2ms/);
  const d = await runHangar(['console', 'shell', '--timeout', '2h'], { env: fake.env() });
  assert.equal(d.code, 2);
  const h = await runHangar(['console', '--help'], { env: fake.env() });
  assert.match(h.stdout, /--settle <duration>.*with a unit: 500ms, 2s/s);
});

test('scripted: --settle takes seconds (2s, 1.5s) and milliseconds, and waits that long for quiet', async () => {
  // The slow console answers in four parts 200 ms apart: a 1.5s quiet period waits for all of them.
  const r = await runHangar(['console', 'slow', '--settle', '1.5s'], { env: fake.env(), input: 'go\n' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'part0\npart1\npart2\npart3\n');
});

test('scripted: the daemon dropping or refusing the session is an error naming why', async () => {
  const a = await runHangar(['console', 'slowdrop'], { env: fake.env(), input: 'x\n' });
  assert.equal(a.code, 5);
  assert.match(a.stderr, /console dropped: more than 1048576 bytes of console output left unread \(UNAVAILABLE\)/);
  const b = await runHangar(['console', 'crowded'], { env: fake.env(), input: 'x\n' });
  assert.equal(b.code, 7);
  assert.match(b.stderr, /console refused by the daemon: the console already has 16 clients.*\(RESOURCE_EXHAUSTED\)/);
});

test('interactive: raw keys reach the guest, Ctrl-] detaches and the terminal is restored', async () => {
  const root = projectRoot();
  const underTsx = fileURLToPath(import.meta.url).endsWith('.ts');
  const cli = underTsx ? `${process.execPath} --import tsx ${path.join(root, 'src/cli/main.ts')}` : `${process.execPath} ${path.join(root, 'dist/src/cli/main.js')}`;
  // `script` gives the CLI a real pseudo-terminal; afterwards stty reports the mode it left behind.
  const inner = `${cli} console shell; echo "exit=$?"; stty -a`;
  const child = spawn('script', ['-qfec', inner, '/dev/null'], { cwd: root, env: { ...process.env, ...fake.env() }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString('latin1');
    for (const w of [...waiters]) w();
  });
  const seen = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!re.test(out)) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${re} in ${JSON.stringify(out)}`));
      }, 30_000);
      waiters.add(check);
      check();
    });
  const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  try {
    await seen(/detach with Ctrl-\]/);
    // Ctrl-C (0x03) must travel to the guest as a byte, not kill the CLI.
    child.stdin.write('ls\x03');
    await seen(/ls\^C/);
    child.stdin.write('\r');
    await seen(/out:LS/);
    child.stdin.write('\x1d');
    await seen(/speed .*baud/);
  } catch (e) {
    child.kill('SIGKILL'); // only our own `script` child; its pty going away ends the CLI inside
    throw e;
  } finally {
    child.stdin.end();
  }
  assert.equal(await closed, 0);
  assert.match(out, /Detached from shell\./);
  assert.match(out, /exit=0/);
  // Cooked mode again: canonical input and echo are on.
  assert.match(out, /(^|\s)icanon(\s|$)/m);
  assert.match(out, /(^|\s)echo(\s|$)/m);
});

test('piped output drops the terminal queries, also split across frames and at the very end', async () => {
  const r = await runHangar(['console', 'prompt', '--settle', '300ms'], { env: fake.env(), input: 'echo hi\n' });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes('\x1b[6n') && !r.stdout.includes('\x1b[5n'), JSON.stringify(r.stdout));
  assert.equal(r.stdout, 'tiny# echo hi\r\nhi\r\n\x1b[31mred\x1b[0m \x1b[2Jtiny# ');
  const j = await runHangar(['console', 'prompt', '--settle', '300ms', '--json'], { env: fake.env(), input: 'echo hi\n' });
  assert.equal(JSON.parse(j.stdout).output, 'tiny# echo hi\r\nhi\r\n\x1b[31mred\x1b[0m \x1b[2Jtiny# ');
  // A piece held back as a possible query is printed when the output ends without completing it.
  const p = await runHangar(['console', 'partial', '--settle', '300ms'], { env: fake.env(), input: 'x\n' });
  assert.equal(p.stdout, 'done \x1b[');
});

test('scripted output drops the cursor-position queries a guest shell sends with its prompt', async () => {
  const { stripTerminalQueries } = await import('../../src/cli/commands/console.js');
  assert.equal(stripTerminalQueries('tiny# \x1b[6necho hi\r\nhi\r\ntiny# \x1b[6n'), 'tiny# echo hi\r\nhi\r\ntiny# ');
  assert.equal(stripTerminalQueries('colour \x1b[31mred\x1b[0m stays'), 'colour \x1b[31mred\x1b[0m stays');
});
