/* Private to the kit: the ud2 trap protocol between ring 3 and the ring-0 #UD handler. */
#ifndef HANGAR_GUEST_INTERNAL_H
#define HANGAR_GUEST_INTERNAL_H
/* rax = HG_TRAP_MAGIC << 16 | op; rdx = port; rcx = value / pointer / length; rsi = buffer. */
#define HG_TRAP_MAGIC 0x4847
#define HG_OP_OUTB 0x0101
#define HG_OP_OUTW 0x0102
#define HG_OP_OUTL 0x0104
#define HG_OP_INB 0x0201
#define HG_OP_INW 0x0202
#define HG_OP_INL 0x0204
#define HG_OP_OUTSB 0x0301
#define HG_OP_HALT 0x0400
#define HG_OP_RING0 0x0500
extern u64 hg_boot_params;
extern volatile u32 hg_cpus_online;
u64 hg_trap_call(u64 op, u64 rdx, u64 rcx, u64 rsi);
int hg_cpl(void);
#endif
