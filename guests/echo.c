/*
 * Interrupt-driven console: echoes each input line as "echo: <line>".
 * "poweroff", "reset" (i8042) and "panic" end the VM in the three ways a
 * guest can.
 */
#include "hangar.h"

static bool eq(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }

void guest_main(void) {
  hg_serial_enable_rx_irq();
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
