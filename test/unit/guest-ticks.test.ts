/**
 * The tick counter's readers (test/helpers/guest-ticks.ts), on console text as the tests see
 * it: `waitForCountBack` finds where a restored guest goes on even when the old guest's last
 * ticks arrive after the restore was asked, and gives up on a guest that only counts up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lastTick, waitForCountBack } from '../helpers/guest-ticks.js';

const ticks = (...n: number[]): string => n.map((i) => `tick-${i}\r\n`).join('');

test('lastTick: the highest complete tick line', () => {
  assert.equal(lastTick(`$ echo tick-$i\r\n${ticks(3, 4, 5)}tick-6`), 5);
  assert.equal(lastTick('no ticks'), 0);
});

test('waitForCountBack: the first tick of the lower run, past ticks still in flight', async () => {
  assert.equal(await waitForCountBack(() => ticks(22, 23, 6, 7), 21), 6);
  assert.equal(await waitForCountBack(() => ticks(6, 7), 21), 6, 'nothing in flight');
  let text = ticks(22);
  setTimeout(() => { text += ticks(5, 6); }, 300);
  assert.equal(await waitForCountBack(() => text, 21, 5000), 5, 'waits for the drop');
});

test('waitForCountBack: a guest that only counts up was not restored', async () => {
  await assert.rejects(waitForCountBack(() => ticks(22, 23, 24), 21, 300), /did not go back below tick-21.*seen: 22 23 24/);
});
