/**
 * `hangar events`: VM lifecycle events (created, started, paused, ...).
 * Stored events come from GET /1.0/events; `--follow` then streams new ones
 * over the same route as a WebSocket. The stream is opened before the stored
 * list is read, so nothing that happens in between is lost; sequence numbers
 * drop the duplicates.
 */
import type { Command } from 'commander';
import type { RawData } from 'ws';
import type { LifecycleEvent } from '../../host/api/schemas.js';
import { checkVmName, clientFor, formatFor, note, out, parseIntOption, printJson, withJson } from '../context.js';
import { formatTime, renderRows } from '../output.js';

export const EVENT_HEADERS = ['SEQ', 'TIME', 'VM', 'EVENT', 'REASON'];

export function eventRow(e: LifecycleEvent): string[] {
  return [String(e.seq), formatTime(e.at), e.vm, e.type, e.reason ?? ''];
}

/** One line per event for streaming output, same columns as the table. */
export function eventLine(e: LifecycleEvent): string {
  return `${e.seq}  ${formatTime(e.at)}  ${e.vm}  ${e.type}${e.reason ? `  (${e.reason})` : ''}\n`;
}

export function eventsQuery(o: { since?: number; vm?: string }): string {
  const q = new URLSearchParams();
  if (o.since !== undefined) q.set('since', String(o.since));
  if (o.vm !== undefined) q.set('vm', o.vm);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export function registerEventsCommand(program: Command): void {
  withJson(
    program
      .command('events')
      .description('list VM lifecycle events; --follow streams new ones')
      .option('--vm <name>', 'only events of this VM')
      .option('--since <seq>', 'only events after this sequence number', parseIntOption('--since', 0))
      .option('-f, --follow', 'keep streaming new events until interrupted')
      .option('--format <format>', 'table, json or csv (JSON streams one event per line with --follow)', 'table'),
  ).action(async (o: { vm?: string; since?: number; follow?: boolean; json?: boolean }, cmd: Command) => {
    if (o.vm !== undefined) checkVmName(o.vm);
    const format = formatFor(cmd);
    const client = clientFor(cmd);
    const path = `/1.0/events${eventsQuery(o)}`;
    if (!o.follow) {
      const events = await client.get<LifecycleEvent[]>(path);
      if (format === 'json') return printJson(events);
      out(renderRows(format, EVENT_HEADERS, events.map(eventRow)));
      return;
    }
    const ws = await client.websocket(path);
    const early: LifecycleEvent[] = [];
    let last = o.since ?? 0;
    let live = false;
    const print = (e: LifecycleEvent) => {
      if (e.seq <= last) return;
      if (o.vm !== undefined && e.vm !== o.vm) return;
      last = e.seq;
      out(format === 'json' ? JSON.stringify(e) + '\n' : format === 'csv' ? eventRow(e).join(',') + '\n' : eventLine(e));
    };
    ws.on('message', (d: RawData) => {
      let e: LifecycleEvent;
      try {
        e = JSON.parse(d.toString()) as LifecycleEvent;
      } catch {
        return; // not an event; the stream carries nothing else we know of
      }
      if (live) print(e);
      else early.push(e);
    });
    ws.resume();
    const stored = await client.get<LifecycleEvent[]>(path);
    if (format === 'csv') out(EVENT_HEADERS.join(',') + '\n');
    for (const e of stored) print(e);
    for (const e of early.sort((a, b) => a.seq - b.seq)) print(e);
    live = true;
    note('Following new events (Ctrl-C to stop)...');
    await new Promise<void>((resolve) => ws.on('close', () => resolve()));
  });
}
