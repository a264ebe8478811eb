/**
 * Progress of a long operation on stderr, so stdout stays clean for results.
 * On a terminal: one line redrawn in place with a spinner. Otherwise (logs,
 * pipes, tests): a plain line each time the stage changes or the percentage
 * moves by at least 10 points.
 */
import type { Operation } from '../host/api/schemas.js';

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export interface ProgressSink {
  write(s: string): unknown;
  isTTY?: boolean;
}

export class ProgressReporter {
  private frame = 0;
  private timer: NodeJS.Timeout | undefined;
  private current = '';
  private lastStage = '';
  private lastPercent = -100;
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private readonly out: ProgressSink = process.stderr,
    tty?: boolean,
  ) {
    this.tty = tty ?? Boolean(out.isTTY);
  }

  /** Text for one operation state: "building image 40%" or the label when the daemon gives no stage. */
  static describe(op: Pick<Operation, 'progress' | 'description'>, fallback: string): string {
    const p = op.progress;
    if (!p) return fallback;
    return p.percent === undefined ? p.stage : `${p.stage} ${Math.round(p.percent)}%`;
  }

  start(): void {
    this.current = this.label;
    if (this.tty) {
      this.draw();
      this.timer = setInterval(() => this.draw(), 100);
      this.timer.unref();
    } else {
      this.out.write(`${this.label}...\n`);
    }
  }

  update(op: Pick<Operation, 'progress' | 'description'>): void {
    this.current = ProgressReporter.describe(op, this.label);
    if (this.tty) return; // the timer redraws
    const stage = op.progress?.stage;
    if (!stage) return;
    const pct = op.progress?.percent;
    const stageChanged = stage !== this.lastStage;
    const moved = pct !== undefined && Math.abs(pct - this.lastPercent) >= 10;
    if (stageChanged || moved) {
      this.out.write(`  ${this.current}\n`);
      this.lastStage = stage;
      this.lastPercent = pct ?? -100;
    }
  }

  private draw(): void {
    this.frame = (this.frame + 1) % FRAMES.length;
    this.out.write(`\r\x1b[2K${FRAMES[this.frame]} ${this.current}`);
  }

  /** Ends the display; `message` (e.g. "done") replaces the spinner line on a TTY. */
  stop(message?: string): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.tty) this.out.write(`\r\x1b[2K${message ? message + '\n' : ''}`);
    else if (message) this.out.write(`${message}\n`);
  }
}
