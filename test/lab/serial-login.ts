/**
 * Logging in on a Debian guest's serial console in the KVM lab: the lab's
 * cloud-init seed (scripts/kvm-lab.sh, build_debian_seed) gives root the
 * password `hangar-lab`; agetty on ttyS0 asks for it. Shared by the `debian`
 * scenario (test/lab/linux-guest.ts) and bench/lab-guest-io-bench.ts, which
 * each capture a console their own way: all they hand over is its text so far
 * and a way to type.
 */

export const LAB_ROOT_PASSWORD = 'hangar-lab';
/** The prompt set after login; the line that sets it (`PS1='lab''# '`) does not contain it. */
export const LAB_SHELL_PROMPT = 'lab# ';

export interface SerialConsole {
  /** Everything the console showed so far (latin1). */
  readonly text: string;
  type(s: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the index just past the first match of `what` after `from`, or throws after `ms`. */
export async function waitForText(c: SerialConsole, what: string | RegExp, from: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const seen = c.text.slice(from);
    if (typeof what === 'string') {
      const i = seen.indexOf(what);
      if (i >= 0) return from + i + what.length;
    } else {
      const m = what.exec(seen);
      if (m) return from + m.index + m[0].length;
    }
    if (Date.now() > deadline) throw new Error(`console did not show ${String(what)} within ${ms} ms; its tail: ${JSON.stringify(c.text.slice(-400))}`);
    await sleep(100);
  }
}

/**
 * Logs in as root at agetty's prompt (which must be on the console already) and sets the
 * shell's prompt to LAB_SHELL_PROMPT. A wrong password or a prompt drowned in boot messages
 * is retried (cloud-init may still be setting the password when the prompt first shows).
 * Returns where the new prompt starts in the console's text (to hand to shellRun).
 */
export async function loginAsRoot(c: SerialConsole, stepMs: number, attempts = 6, retryDelayMs = 10_000): Promise<number> {
  let lastError = '';
  for (let i = 0; i < attempts; i++) {
    if (i > 0) {
      // A fresh prompt (an empty name makes agetty ask again).
      await sleep(retryDelayMs);
      const f = c.text.length;
      c.type('\n');
      await waitForText(c, /login: /, f, stepMs).catch(() => 0);
    }
    let from = c.text.length;
    c.type('root\n');
    try {
      await waitForText(c, 'Password:', from, stepMs);
      from = c.text.length;
      c.type(`${LAB_ROOT_PASSWORD}\n`);
      const end = await waitForText(c, /Login incorrect|root@[^\r\n]*# /, from, stepMs);
      if (/Login incorrect/.test(c.text.slice(from, end))) { lastError = 'Login incorrect'; continue; }
      from = c.text.length;
      // No bracketed-paste or title escapes around the marker lines the lab parses.
      c.type("bind 'set enable-bracketed-paste off' 2>/dev/null; PS1='lab''# '; export PS1\n");
      // Where the prompt starts: shellRun(c, cmd, returned) finds it there.
      return (await waitForText(c, LAB_SHELL_PROMPT, from, stepMs)) - LAB_SHELL_PROMPT.length;
    } catch (e) {
      lastError = (e as Error).message;
    }
  }
  throw new Error(`could not log in as root on the serial console after ${attempts} attempts: ${lastError}`);
}

/**
 * Runs one shell command at LAB_SHELL_PROMPT (once the prompt is there, after `from`) and
 * returns its output between two markers the typed line itself does not contain, with the
 * index where the next prompt should appear.
 */
export async function shellRun(c: SerialConsole, cmd: string, from: number, ms: number): Promise<{ out: string; next: number }> {
  await waitForText(c, LAB_SHELL_PROMPT, from, ms);
  const start = c.text.length;
  c.type(`echo @@""B; ${cmd}; echo @@""E\n`);
  const end = await waitForText(c, /@@E\r?\n/, start, ms);
  const m = /@@B\r?\n([\s\S]*?)@@E\r?\n/.exec(c.text.slice(start, end));
  return { out: (m?.[1] ?? '').replace(/\r/g, '').trimEnd(), next: end };
}
