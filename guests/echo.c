/*
 * Interrupt-driven console: echoes each input line as "echo: <line>".
 * "poweroff", "reset" (i8042) and "panic" end the VM in the three ways a
 * guest can. Ctrl-Alt-Del on the i8042 keyboard (IRQ 1) powers it off.
 */
#include "hangar.h"

/* IRQ 1, ring 0: read scancodes; Delete (e0 53) while Ctrl and Alt are down powers off. */
static void keyboard_irq(int irq) {
  static bool ctrl, alt, ext;
  (void)irq;
  while (hg_inb(0x64) & 1) {
    u8 sc = hg_inb(0x60);
    if (sc == 0xe0) { ext = true; continue; }
    bool up = sc & 0x80;
    u8 key = sc & 0x7f;
    if (key == 0x1d) ctrl = !up;
    else if (key == 0x38) alt = !up;
    else if (key == 0x53 && ext && !up && ctrl && alt) {
      const char *m = "ctrl-alt-del: powering off\n";
      while (*m) hg_outb(HG_COM1, (u8)*m++);
      hg_outb(HG_POWER_PORT, 0);
    }
    ext = false;
  }
}

static bool eq(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }

void guest_main(void) {
  hg_serial_enable_rx_irq();
  hg_irq_register(1, keyboard_irq);
  hg_printf("echo ready\n");
  char line[256];
  size_t n = 0;
  for (;;) {
    int c = hg_serial_getc_wait();
    if (c == '\r') continue;
    if (c != '\n') { if (n < sizeof line - 1) line[n++] = (char)c; continue; }
    line[n] = 0;
    n = 0;
    hg_printf("echo: %s (irqs %lu)\n", line, hg_irq_count[HG_COM1_IRQ]);
    if (eq(line, "poweroff")) hg_poweroff();
    if (eq(line, "reset")) hg_reset();
    if (eq(line, "panic")) hg_panic("asked to");
  }
}
