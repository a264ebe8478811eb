/**
 * The web UI's secrets (src/host/ui/): login codes and WebSocket tickets work
 * once and only before their deadline; tickets are found in the subprotocol
 * header; only the UI's files and the code exchange pass without a token.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OneTimeSecrets } from '../../src/host/ui/one-time-secrets.js';
import { isPublicUiRequest, ticketFromProtocols } from '../../src/host/ui/ws-ticket.js';
import { UiService, LOGIN_CODE_TTL_MS, WS_TICKET_TTL_MS } from '../../src/host/ui/service.js';

test('a secret is redeemed once, never after its deadline, never when unknown or malformed', () => {
  let now = 1_000_000;
  const s = new OneTimeSecrets({ ttlMs: 1000, now: () => now });
  const a = s.issue();
  assert.match(a.secret, /^[0-9a-f]{64}$/);
  assert.equal(a.expiresAt, now + 1000);
  assert.equal(s.redeem(a.secret), true);
  assert.equal(s.redeem(a.secret), false, 'second use');
  const b = s.issue();
  now += 1001;
  assert.equal(s.redeem(b.secret), false, 'expired');
  const c = s.issue();
  assert.equal(s.redeem(c.secret.toUpperCase()), false);
  assert.equal(s.redeem(c.secret.slice(1)), false);
  assert.equal(s.redeem(undefined), false);
  assert.equal(s.redeem('0'.repeat(64)), false);
  assert.equal(s.redeem(c.secret), true, 'wrong guesses do not spoil the real one');
});

test('secrets are unique, bounded in number (oldest forgotten first), and expired ones are dropped', () => {
  let now = 0;
  const s = new OneTimeSecrets({ ttlMs: 50, max: 3, now: () => now });
  const issued = [s.issue(), s.issue(), s.issue(), s.issue()];
  assert.equal(new Set(issued.map((i) => i.secret)).size, 4);
  assert.equal(s.size(), 3);
  assert.equal(s.redeem(issued[0]!.secret), false, 'the oldest was forgotten');
  assert.equal(s.redeem(issued[3]!.secret), true);
  now = 100;
  assert.equal(s.size(), 0);
});

test('the UI service: login codes live 2 minutes, tickets 30 s, and the two are separate', () => {
  let now = 0;
  const ui = new UiService('/nonexistent', () => now);
  assert.equal(LOGIN_CODE_TTL_MS, 120_000);
  assert.equal(WS_TICKET_TTL_MS, 30_000);
  const code = ui.loginCodes.issue();
  const t = ui.wsTickets.issue();
  assert.equal(ui.wsTickets.redeem(code.secret), false, 'a login code is no ticket');
  now = 60_000;
  assert.equal(ui.wsTickets.redeem(t.secret), false, 'ticket expired');
  assert.equal(ui.loginCodes.redeem(code.secret), true);
});

test('the ticket is read from the offered subprotocols', () => {
  assert.equal(ticketFromProtocols(undefined), undefined);
  assert.equal(ticketFromProtocols('hangar.v1'), undefined);
  assert.equal(ticketFromProtocols('hangar.v1, hangar.ticket.abc'), 'abc');
  assert.equal(ticketFromProtocols(['hangar.v1', 'hangar.ticket.def']), 'def');
  assert.equal(ticketFromProtocols('binary,hangar.ticket.x1 ,other'), 'x1');
});

test('only the UI files and the login-code exchange are public', () => {
  assert.equal(isPublicUiRequest('GET', '/ui/'), true);
  assert.equal(isPublicUiRequest('GET', '/ui'), true);
  assert.equal(isPublicUiRequest('HEAD', '/ui/assets/index.js'), true);
  assert.equal(isPublicUiRequest('GET', '/ui/assets/x.js?v=1'), true);
  assert.equal(isPublicUiRequest('POST', '/1.0/ui/login'), true);
  assert.equal(isPublicUiRequest('POST', '/1.0/ui/login?x'), true);
  for (const [m, u] of [['GET', '/1.0/ui/login'], ['POST', '/1.0/ui/login-links'], ['POST', '/1.0/ui/ws-tickets'], ['GET', '/uix'], ['GET', '/1.0/vms'], ['POST', '/ui/'], ['GET', '/1.0/ui/login/../vms'], ['GET', '/metrics']] as const) {
    assert.equal(isPublicUiRequest(m, u), false, `${m} ${u}`);
  }
});
