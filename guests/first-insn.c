/*
 * First-instruction guest: its ELF entry point (linked with -e hg_first_insn,
 * see the Makefile) is an `out` to the POST port 0x80, which hangar-vmm
 * handles (and ignores). So the very first instruction the vCPU executes
 * exits to the VMM, and the VMM's record of each vCPU's first exit from
 * KVM_RUN (GET /metrics) is the moment the guest ran its first instruction.
 * Then it continues into the kit's normal entry, prints "first-insn ready"
 * and waits for a line on the console before powering off, so the VMM is
 * still there to be asked for its metrics.
 */
#include "hangar.h"

__asm__(
    "    .section .text.start, \"ax\"\n"
    "    .globl hg_first_insn\n"
    "    .code64\n"
    "hg_first_insn:\n"
    "    outb %al, $0x80\n" /* the first guest instruction: a port write, one exit */
    "    jmp _start\n"      /* RDI (vCPU index) and RSI (zero page) are untouched */
    "    .text\n");

void guest_main(void) {
  hg_serial_enable_rx_irq();
  hg_printf("first-insn ready\n");
  while (hg_serial_getc_wait() != '\n') {}
}
