import { pino, type Logger } from 'pino';

/** One structured logger per process; components take a child with `component`. */
export function createLogger(name: string, level = process.env.HANGAR_LOG_LEVEL ?? 'info', dest?: string): Logger {
  return pino({ name, level }, dest ? pino.destination({ dest, sync: false, mkdir: true }) : pino.destination(2));
}
export type { Logger };
