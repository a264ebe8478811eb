/*
 * Hangar test-guest kit: the API a freestanding test guest uses.
 *
 * A guest is an ELF64 image entered like a Linux vmlinux (64-bit mode, flat
 * GDT, RSI = zero page). The kit's startup (start.S + cpu.c) gives every CPU
 * its own GDT/TSS, an IDT, identity page tables for the first 4 GiB (user
 * accessible, so MMIO works from ring 3), programs the 8259 PICs (IRQ n ->
 * vector 32+n, all masked), and then drops to ring 3 with IOPL 3 and
 * interrupts enabled to call the guest's entry points:
 *
 *     void guest_main(void);          CPU 0, ring 3 (required)
 *     void guest_ap_main(int cpu);    CPUs 1..n-1, ring 3 (optional, weak)
 *
 * Ring 3 runs natively even on a nested KVM that emulates ring 0, so do the
 * work there. Port I/O is done for you by a small ring-0 handler reached with
 * a deliberate `ud2` (hg_outb/hg_inb...). MMIO is plain loads/stores from
 * ring 3 (hg_mmio_*). IRQ handlers run in ring 0 (keep them short).
 */
#ifndef HANGAR_GUEST_H
#define HANGAR_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef unsigned long size_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#define HG_MAX_CPUS 32
#define HG_PAGE_SIZE 4096

/* Fixed addresses and IRQs (mirror of src/vmm/layout.ts). */
#define HG_COM1 0x3f8
#define HG_COM1_IRQ 4
#define HG_POWER_PORT 0x600
#define HG_VIRTIO_MMIO_BASE 0xd0000000UL
#define HG_VIRTIO_MMIO_SIZE 0x1000UL
#define HG_VIRTIO_MMIO_SLOTS 8
/* IRQ of virtio-mmio slot i (0..7). */
static const u8 hg_virtio_mmio_irqs[HG_VIRTIO_MMIO_SLOTS] = {5, 6, 7, 9, 10, 11, 14, 15};

/* ---- port I/O (any ring; from ring 3 it traps through ud2) ---- */
void hg_outb(u16 port, u8 v);
void hg_outw(u16 port, u16 v);
void hg_outl(u16 port, u32 v);
u8 hg_inb(u16 port);
u16 hg_inw(u16 port);
u32 hg_inl(u16 port);

/* ---- MMIO (plain volatile accesses; work from ring 3) ---- */
static inline u8 hg_mmio_read8(u64 a) { return *(volatile u8 *)a; }
static inline u16 hg_mmio_read16(u64 a) { return *(volatile u16 *)a; }
static inline u32 hg_mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline u64 hg_mmio_read64(u64 a) { return *(volatile u64 *)a; }
static inline void hg_mmio_write8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline void hg_mmio_write16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void hg_mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline void hg_mmio_write64(u64 a, u64 v) { *(volatile u64 *)a = v; }
static inline void hg_barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

/* ---- console (COM1, polled output; interrupt-driven input) ---- */
void hg_putc(char c);
void hg_puts(const char *s);                 /* no newline added */
int hg_printf(const char *fmt, ...);         /* %d %i %u %x %X %p %s %c %%, with l/ll, width and 0-pad */
int hg_snprintf(char *buf, size_t n, const char *fmt, ...);
/* Enables the UART receive interrupt; bytes then arrive in a ring buffer. */
void hg_serial_enable_rx_irq(void);
/* Returns the next received byte, or -1 when none is buffered. */
int hg_serial_getc(void);
/* Blocks (halting the CPU between interrupts) until a byte arrives. */
int hg_serial_getc_wait(void);

/* ---- interrupts ---- */
typedef void (*hg_irq_fn)(int irq);
/* Installs `fn` for ISA IRQ `irq` (0..15) and unmasks it at the PIC. fn runs in ring 0. */
void hg_irq_register(int irq, hg_irq_fn fn);
void hg_irq_mask(int irq);
void hg_irq_unmask(int irq);
/* Halts until the next interrupt (ring 3 cannot `hlt`; this traps to ring 0 to do it). */
void hg_wait_for_interrupt(void);
/* Halts until *word != seen (checked in ring 0 with interrupts off, so a wake-up between
   your check and the halt is never lost). Use it to wait for an IRQ handler's progress. */
void hg_wait_change(volatile u32 *word, u32 seen);
/* Counts of interrupts delivered per IRQ. */
extern volatile u64 hg_irq_count[16];

/* ---- ring 0 ---- */
/* Runs fn(arg) at CPL 0 (emulated on nested KVM: keep it short); returns its result. */
u64 hg_ring0(u64 (*fn)(u64), u64 arg);

/* ---- CPUs ---- */
int hg_cpu_id(void);                          /* 0 = boot CPU */
int hg_cpu_count(void);                       /* vCPUs the VMM gave this VM */
static inline void hg_pause(void) { __asm__ volatile("pause"); }

/* ---- spinlock (ring 3 safe) ---- */
typedef struct { volatile u32 v; } hg_lock_t;
static inline void hg_lock(hg_lock_t *l) { while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE)) hg_pause(); }
static inline void hg_unlock(hg_lock_t *l) { __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE); }

/* ---- power ---- */
void hg_poweroff(void) __attribute__((noreturn));   /* VM ends, hangar-vmm exits 0 */
void hg_reset(void) __attribute__((noreturn));      /* VM ends as reboot, exit 3 */
void hg_panic(const char *fmt, ...) __attribute__((noreturn)); /* prints, VM ends as crashed, exit 4 */

/* ---- memory and strings ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
/* A bump allocator over guest RAM after the image (page-aligned when align = 4096). Never freed. */
void *hg_alloc(size_t size, size_t align);
/* Guest RAM size in bytes, from the e820 map the VMM passed. */
u64 hg_ram_size(void);
/* The kernel command line the VMM passed (NUL-terminated). */
const char *hg_cmdline(void);

/* ---- time ---- */
static inline u64 hg_rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }

/* Entry points the guest program provides. */
void guest_main(void);
void guest_ap_main(int cpu);

#endif
