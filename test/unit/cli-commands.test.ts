/**
 * The `hangar` command end to end against a fake daemon on a temporary Unix
 * socket: which requests each verb sends, how answers are printed, and how
 * error envelopes become `Error: <message> (<CODE>)` with an exit code.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDaemon, HangarProcess, asyncOp, errorEnv, operation, runHangar, sync } from './cli-fake-daemon.js';

const vm = {
  id: 'vm-1',
  name: 'web1',
  state: 'running',
  spec: { image: 'tiny', engine: 'qemu', cpus: 2, memoryBytes: 268435456, cmdline: '', disks: [] },
  runtime: { pid: 4242, accel: 'tcg', startedAt: '2026-11-26T09:00:00.000Z', uptimeSeconds: 61, lastExit: null },
  createdAt: '2026-11-26T08:59:58.000Z',
};

let fake: FakeDaemon;
let waits = 0;
/** The console log of VM "grow" gains a line each time it is read, up to five lines. */
let growReads = 0;

before(async () => {
  fake = await new FakeDaemon()
    .on('GET', '/1.0', sync({ version: '0.1.0' }))
    .on('GET', '/1.0/vms', sync([vm]))
    .on('GET', '/1.0/vms/web1', sync(vm))
    .on('GET', '/1.0/vms/nope', errorEnv(404, 'NOT_FOUND', 'VM "nope" not found'))
    .on('POST', '/1.0/vms', asyncOp(operation('op-launch', 'running', { progress: { stage: 'building image', percent: 10 } })))
    // The blocking wait answers "running" twice with progress, then success.
    .on('GET', '/1.0/operations/op-launch/wait', () => {
      waits++;
      if (waits === 1) return sync(operation('op-launch', 'running', { progress: { stage: 'building image', percent: 60 } }));
      if (waits === 2) return sync(operation('op-launch', 'running', { progress: { stage: 'booting' } }));
      return sync(operation('op-launch', 'success'));
    })
    .on('PUT', '/1.0/vms/web1/state', asyncOp(operation('op-state', 'running')))
    .on('GET', '/1.0/operations/op-state/wait', sync(operation('op-state', 'success')))
    .on('DELETE', '/1.0/vms/web1', errorEnv(409, 'INVALID_STATE', 'VM "web1" is running; stop it first or use force'))
    .on('DELETE', '/1.0/vms/web1?force=true', asyncOp(operation('op-del', 'success')))
    .on('PUT', '/1.0/vms/broken/state', asyncOp(operation('op-fail', 'running')))
    .on('GET', '/1.0/operations/op-fail/wait', sync(operation('op-fail', 'failure', { error: { code: 'ENGINE_FAILED', message: 'qemu exited with status 1' } })))
    .on('GET', '/1.0/vms/web1/logs', { text: 'line1\nline2\nline3\n' })
    .on('GET', '/1.0/vms/web1/logs?tail=2', { text: 'line2\nline3\n' })
    .on('GET', '/1.0/vms/grow/logs', () => {
      growReads = Math.min(growReads + 1, 5);
      return { text: Array.from({ length: growReads }, (_, i) => `boot ${i + 1}\n`).join('') };
    })
    .on('GET', '/1.0/events', sync([
      { seq: 1, at: '2026-11-26T09:00:00.000Z', vm: 'web1', type: 'created' },
      { seq: 2, at: '2026-11-26T09:00:01.000Z', vm: 'web1', type: 'started' },
    ]))
    .onWebSocket('/1.0/vms/web1/console', (ws) => {
      // A toy shell: answers each line it receives, like the guest's shell would.
      ws.send(Buffer.from('tiny# '));
      ws.on('message', (d: Buffer) => {
        for (const line of d.toString().split('\n').filter(Boolean)) ws.send(Buffer.from(`${line}\r\nout:${line.toUpperCase()}\r\ntiny# `));
      });
    })
    .listen();
});

after(async () => {
  await fake.close();
});

const run = (args: string[], input?: string) => runHangar(args, { env: fake.env(), ...(input !== undefined ? { input } : {}) });
const requestsTo = (method: string, prefix: string) => fake.requests.filter((r) => r.method === method && r.url.startsWith(prefix));

test('launch sends the create request, follows the operation and reports progress on stderr', async () => {
  const r = await run(['launch', 'tiny', 'web1', '--cpus', '2', '--memory', '256M']);
  assert.equal(r.code, 0, r.stderr);
  const post = requestsTo('POST', '/1.0/vms').at(-1)!;
  assert.deepEqual(post.body, { name: 'web1', image: 'tiny', cpus: 2, memory: 268435456 });
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^Launching web1 from tiny\.\.\.$/m);
  assert.match(r.stderr, /building image 60%/);
  assert.match(r.stderr, /booting/);
  assert.match(r.stderr, /^Launched web1$/m);
  assert.match(r.stderr, /hangar console web1/);
});

test('launch --no-wait prints the operation id; --json prints the operation', async () => {
  const r = await run(['launch', 'tiny', 'web1', '--no-wait', '--no-start']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'op-launch\n');
  assert.equal((requestsTo('POST', '/1.0/vms').at(-1)!.body as { start?: boolean }).start, false);
  const j = await run(['launch', 'tiny', 'web1', '--no-wait', '--json']);
  assert.equal(JSON.parse(j.stdout).id, 'op-launch');
});

test('bad input fails before any request, with exit code 2', async () => {
  const before = fake.requests.length;
  for (const [args, msg] of [
    [['launch', 'tiny', 'web1', '--memory', '12XB'], /--memory "12XB" has an unknown unit "XB".*\(INVALID_ARGUMENT\)/],
    [['launch', 'tiny', 'web1', '--cpus', '0'], /--cpus must be between 1 and .*, got 0 \(INVALID_ARGUMENT\)/],
    [['launch', 'tiny', 'web1', '--cpus', 'two'], /--cpus must be a whole number, got "two" \(INVALID_ARGUMENT\)/],
    [['launch', 'tiny', 'Bad_Name'], /not a valid VM name/],
    [['launch', 'tiny', 'web1', '--engine', 'xen'], /Allowed choices are qemu, micro/],
    [['list', '--format', 'yaml'], /--format must be table, json or csv/],
    [['launch', 'tiny'], /missing required argument 'name'/],
  ] as const) {
    const r = await run([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
  assert.equal(fake.requests.length, before, 'no request reached the daemon');
});

test('list prints the table, --json the API objects, --format csv', async () => {
  const t = await run(['list']);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /^NAME\s+STATE\s+ENGINE\s+ACCEL\s+CPUS\s+MEMORY\s+UPTIME\s+IPV4\nweb1\s+running\s+qemu\s+tcg\s+2\s+256M\s+1m01s\s+-\n$/);
  const j = await run(['ls', '--json']);
  assert.deepEqual(JSON.parse(j.stdout), [vm]);
  const c = await run(['list', '--format', 'csv']);
  assert.equal(c.stdout, 'NAME,STATE,ENGINE,ACCEL,CPUS,MEMORY,UPTIME,IPV4\nweb1,running,qemu,tcg,2,256M,1m01s,-\n');
});

test('show prints readable text or JSON', async () => {
  const t = await run(['show', 'web1']);
  assert.match(t.stdout, /^state: running$/m);
  assert.match(t.stdout, /^ {2}memory: 256M$/m);
  const j = await run(['show', 'web1', '--json']);
  assert.deepEqual(JSON.parse(j.stdout), vm);
});

test('an error envelope becomes "Error: message (CODE)" and its exit code', async () => {
  const nf = await run(['show', 'nope']);
  assert.equal(nf.code, 3);
  assert.equal(nf.stderr, 'Error: VM "nope" not found (NOT_FOUND)\n');
  assert.equal(nf.stdout, '');
  const del = await run(['delete', 'web1']);
  assert.equal(del.code, 4);
  assert.equal(del.stderr, 'Error: VM "web1" is running; stop it first or use force (INVALID_STATE)\n');
});

test('delete --force sends force=true', async () => {
  const r = await run(['delete', 'web1', '--force']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(requestsTo('DELETE', '/1.0/vms/web1?force=true').length >= 1);
});

test('state verbs send their action; stop carries --force and --timeout', async () => {
  for (const verb of ['start', 'pause', 'resume', 'restart']) {
    const r = await run([verb, 'web1']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(requestsTo('PUT', '/1.0/vms/web1/state').at(-1)!.body, { action: verb });
  }
  const s = await run(['stop', 'web1', '--force', '--timeout', '5']);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stderr, /Stopped web1/);
  assert.deepEqual(requestsTo('PUT', '/1.0/vms/web1/state').at(-1)!.body, { action: 'stop', force: true, timeout: 5 });
  const j = await run(['pause', 'web1', '--json']);
  assert.equal(JSON.parse(j.stdout).name, 'web1');
});

test('a failed operation exits with the code of its error', async () => {
  const r = await run(['start', 'broken']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: qemu exited with status 1 \(ENGINE_FAILED\)$/m);
});

test('logs prints the log, --tail asks the daemon for the last lines', async () => {
  assert.equal((await run(['logs', 'web1'])).stdout, 'line1\nline2\nline3\n');
  assert.equal((await run(['logs', 'web1', '--tail', '2'])).stdout, 'line2\nline3\n');
  assert.deepEqual(JSON.parse((await run(['logs', 'web1', '--json'])).stdout), { vm: 'web1', log: 'line1\nline2\nline3\n' });
});

test('logs --follow prints each appended line once', async () => {
  const p = new HangarProcess(['logs', 'grow', '--follow'], fake.env());
  try {
    await p.waitFor(/boot 5\n/);
  } finally {
    await p.stop();
  }
  assert.equal(p.stdout, 'boot 1\nboot 2\nboot 3\nboot 4\nboot 5\n');
});

test('events lists stored events with filters in the query', async () => {
  const r = await run(['events', '--vm', 'web1', '--since', '0']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^SEQ\s+TIME\s+VM\s+EVENT\s+REASON\n1\s+2026-11-26 09:00:00Z\s+web1\s+created\n2\s+.*started\n$/);
  assert.ok(requestsTo('GET', '/1.0/events?since=0&vm=web1').length >= 1);
});

test('piped console sends stdin, prints the answer and exits once quiet', async () => {
  const r = await run(['console', 'web1', '--settle', '300ms'], 'echo hi\n');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /out:ECHO HI/);
  const j = await run(['console', 'web1', '--json', '--until', 'out:\\S+'], 'abc\n');
  const parsed = JSON.parse(j.stdout);
  assert.equal(parsed.end, 'matched');
  assert.match(parsed.output, /out:ABC/);
});

test('console --until that never matches times out with exit code 6', async () => {
  const r = await run(['console', 'web1', '--until', 'never-printed', '--timeout', '1'], 'x\n');
  assert.equal(r.code, 6);
  assert.match(r.stderr, /did not match \/never-printed\/ .*\(TIMEOUT\)/);
});

test('console to an unknown VM reports the daemon\'s error', async () => {
  const r = await run(['console', 'nope']);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /VM "nope" not found \(NOT_FOUND\)/);
});

test('no daemon: a clear message and exit code 5', async () => {
  const r = await runHangar(['list'], { env: { HANGAR_SOCKET: `${fake.dir}/missing.sock`, HANGAR_DATA_DIR: fake.dir } });
  assert.equal(r.code, 5);
  assert.match(r.stderr, /^Error: the Hangar daemon is not running at unix:.*missing\.sock \(start it with `hangar daemon start`\) \(UNAVAILABLE\)$/m);
  const s = await runHangar(['daemon', 'status'], { env: { HANGAR_SOCKET: `${fake.dir}/missing.sock`, HANGAR_DATA_DIR: fake.dir } });
  assert.equal(s.code, 5);
  assert.match(s.stdout, /hangard is not running/);
});

test('--remote talks HTTP with the bearer token', async () => {
  const http = await import('node:http');
  let auth: string | undefined;
  const srv = http.createServer((req, res) => {
    auth = req.headers.authorization;
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ type: 'error', error: { code: 'UNAUTHORIZED', message: 'bad token' } }));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  try {
    const r = await runHangar(['--remote', `http://127.0.0.1:${port}`, 'list'], { env: { HANGAR_API_TOKEN: 's3cret' } });
    assert.equal(r.code, 8);
    assert.equal(r.stderr, 'Error: bad token (UNAUTHORIZED)\n');
    assert.equal(auth, 'Bearer s3cret');
  } finally {
    srv.close();
  }
});
