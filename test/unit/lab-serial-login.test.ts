/**
 * The lab's serial login (test/lab/serial-login.ts), against a fake agetty +
 * login + bash that answers typed lines the way Debian's do on ttyS0: the
 * first password is refused (cloud-init had not set it yet), the retry gets
 * in, the prompt is switched to `lab# `, and a command's output comes back
 * between the markers even with a kernel message in front of it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LAB_ROOT_PASSWORD, LAB_SHELL_PROMPT, loginAsRoot, shellRun, type SerialConsole } from '../lab/serial-login.js';

class FakeDebianConsole implements SerialConsole {
  text = 'Debian GNU/Linux 12 debian ttyS0\r\n\r\ndebian login: ';
  typed: string[] = [];
  private state: 'login' | 'password' | 'shell' = 'login';
  private refusals: number;
  private prompt = 'root@debian:~# ';

  constructor(refusals: number) { this.refusals = refusals; }

  type(s: string): void {
    this.typed.push(s);
    const line = s.replace(/\n$/, '');
    // Answers come a little later, as over a serial line.
    setTimeout(() => this.answer(line), 5);
  }

  private answer(line: string): void {
    if (this.state === 'login') {
      this.text += `${line}\r\n`;
      if (line === '') { this.text += 'debian login: '; return; }
      this.text += 'Password: ';
      this.state = 'password';
    } else if (this.state === 'password') {
      this.text += '\r\n';
      if (line !== LAB_ROOT_PASSWORD || this.refusals-- > 0) {
        this.text += '\r\nLogin incorrect\r\ndebian login: ';
        this.state = 'login';
        return;
      }
      this.text += `Linux debian 6.1.0-57-cloud-amd64\r\n${this.prompt}`;
      this.state = 'shell';
    } else {
      this.text += `${line}\r\n`;
      const ps1 = /PS1='lab''# '/.exec(line);
      if (ps1) this.prompt = 'lab# ';
      const m = /^echo @@""B; (.*); echo @@""E$/.exec(line);
      if (m) this.text += `@@B\r\n[  612.0] cloud-init[471]: a late message\r\n${m[1] === 'uname -r' ? '6.1.0-57-cloud-amd64' : m[1]}\r\n@@E\r\n`;
      this.text += this.prompt;
    }
  }
}

test('loginAsRoot retries a refused password, sets the lab prompt; shellRun returns the output between the markers', async () => {
  const c = new FakeDebianConsole(1);
  const at = await loginAsRoot(c, 5_000, 3, 10);
  assert.equal(c.typed.filter((t) => t === 'root\n').length, 2, 'root typed once per attempt');
  assert.equal(c.text.slice(at, at + LAB_SHELL_PROMPT.length), LAB_SHELL_PROMPT);
  const r = await shellRun(c, 'uname -r', at, 5_000);
  assert.equal(r.out, '[  612.0] cloud-init[471]: a late message\n6.1.0-57-cloud-amd64');
  const r2 = await shellRun(c, 'echo second', r.next, 5_000);
  assert.equal(r2.out.split('\n').pop(), 'echo second');
});

test('loginAsRoot gives up after its attempts, saying why', async () => {
  const c = new FakeDebianConsole(99);
  await assert.rejects(loginAsRoot(c, 2_000, 2, 10), /after 2 attempts: Login incorrect/);
});
