/*
 * Per-CPU bring-up of a Hangar test guest, all in ring 0 (emulated on nested
 * KVM, so it is kept short): page tables, GDT + TSS, IDT, PICs, then the drop
 * to ring 3. Also the trap handler that gives ring 3 its port I/O, halt and
 * ring-0 calls through a deliberate `ud2`.
 */
#include "hangar.h"
#include "internal.h"

#define USTACK_SIZE 65536
#define KSTACK_SIZE 16384

struct tss {
  u32 reserved0;
  u64 rsp0, rsp1, rsp2;
  u64 reserved1;
  u64 ist[7];
  u64 reserved2;
  u16 reserved3;
  u16 iomap_base;
} __attribute__((packed));

struct idt_entry {
  u16 off_lo, sel;
  u8 ist, type;
  u16 off_mid;
  u32 off_hi, zero;
} __attribute__((packed));

extern char hg_kstacks[];
extern const u64 hg_isr_table[48];
extern void hg_enter_user(void (*entry)(u64), u64 stack_top, u64 arg) __attribute__((noreturn));

static u64 pml4[512] __attribute__((aligned(4096)));
static u64 pdpt[512] __attribute__((aligned(4096)));
static u64 pd[4][512] __attribute__((aligned(4096)));
static struct idt_entry idt[256] __attribute__((aligned(16)));
static u64 gdt[HG_MAX_CPUS][8] __attribute__((aligned(16)));
static struct tss tss[HG_MAX_CPUS] __attribute__((aligned(16)));
static u8 ustacks[HG_MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));
static volatile u32 boot_ready;
volatile u32 hg_cpus_online;
u64 hg_boot_params;
static hg_irq_fn irq_handlers[16];
volatile u64 hg_irq_count[16];

static inline void outb0(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb0(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void build_page_tables(void) {
  /* Identity map of 4 GiB with 2 MiB pages, user accessible: ring 3 reaches RAM and MMIO alike. */
  pml4[0] = (u64)pdpt | 7;
  for (int i = 0; i < 4; i++) {
    pdpt[i] = (u64)pd[i] | 7;
    u64 base = (u64)i << 30;
    for (int j = 0; j < 512; j++) pd[i][j] = (base + ((u64)j << 21)) | 0x87;
  }
}

static void build_idt(void) {
  for (int v = 0; v < 48; v++) {
    u64 a = hg_isr_table[v];
    idt[v].off_lo = a & 0xffff;
    idt[v].sel = 0x08;
    idt[v].ist = 0;
    idt[v].type = v == 6 ? 0xee : 0x8e; /* #UD reachable from ring 3; interrupt gates clear IF */
    idt[v].off_mid = (a >> 16) & 0xffff;
    idt[v].off_hi = a >> 32;
    idt[v].zero = 0;
  }
}

static void init_pic(void) {
  outb0(0x20, 0x11); outb0(0xa0, 0x11);   /* ICW1: edge, cascade, ICW4 */
  outb0(0x21, 0x20); outb0(0xa1, 0x28);   /* vector bases 32 and 40 */
  outb0(0x21, 0x04); outb0(0xa1, 0x02);   /* cascade on IRQ 2 */
  outb0(0x21, 0x01); outb0(0xa1, 0x01);   /* 8086 mode */
  outb0(0x21, 0xfb); outb0(0xa1, 0xff);   /* all masked but the cascade */
}

static void load_cpu_tables(int cpu) {
  u64 *g = gdt[cpu];
  struct tss *t = &tss[cpu];
  t->rsp0 = (u64)hg_kstacks + (u64)(cpu + 1) * KSTACK_SIZE;
  t->iomap_base = sizeof(struct tss);
  u64 base = (u64)t, limit = sizeof(struct tss) - 1;
  g[0] = 0;
  g[1] = 0x00af9a000000ffffUL; /* 0x08 kernel code */
  g[2] = 0x00cf92000000ffffUL; /* 0x10 kernel data */
  g[3] = 0;
  g[4] = 0x00cff2000000ffffUL; /* 0x23 user data */
  g[5] = 0x00affa000000ffffUL; /* 0x2b user code */
  g[6] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) | (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
  g[7] = base >> 32;
  struct { u16 limit; u64 base; } __attribute__((packed)) gp = { sizeof(gdt[0]) - 1, (u64)g }, ip = { sizeof(idt) - 1, (u64)idt };
  __asm__ volatile(
      "lgdt %0\n"
      "pushq $0x08\n"
      "leaq 1f(%%rip), %%rax\n"
      "pushq %%rax\n"
      "lretq\n"
      "1: movw $0x10, %%ax\n"
      "movw %%ax, %%ds\n movw %%ax, %%es\n movw %%ax, %%ss\n movw %%ax, %%fs\n movw %%ax, %%gs\n"
      "movw $0x30, %%ax\n ltr %%ax\n"
      "lidt %1\n"
      : : "m"(gp), "m"(ip) : "rax", "memory");
  __asm__ volatile("mov %0, %%cr3" ::"r"((u64)pml4) : "memory");
}

static void user_main(u64 arg) {
  (void)arg;
  guest_main();
  hg_poweroff();
}

static void user_ap(u64 cpu) {
  guest_ap_main((int)cpu);
  for (;;) hg_wait_for_interrupt();
}

__attribute__((weak)) void guest_ap_main(int cpu) { (void)cpu; }

/*
 * Which CPU am I, from ring 3? Not CPUID: on some nested KVMs the guest sees the
 * host's CPUID whatever the VMM set. Each CPU runs on its own kit stack, so the
 * stack pointer says it.
 */
int hg_cpu_id(void) {
  u64 sp;
  __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
  u64 base = (u64)ustacks;
  if (sp < base || sp >= base + sizeof(ustacks)) return 0;
  return (int)((sp - base) / USTACK_SIZE);
}

static int sum_ok(const u8 *p, u32 n) { u8 s = 0; for (u32 i = 0; i < n; i++) s = (u8)(s + p[i]); return s == 0; }

/* vCPUs this VM has: the enabled local APICs of the ACPI MADT the VMM passed (zero page → RSDP → XSDT → APIC). */
int hg_cpu_count(void) {
  static int cached;
  if (cached) return cached;
  const u8 *bp = (const u8 *)hg_boot_params;
  const u8 *rsdp = (const u8 *)*(const u64 *)(bp + 0x70);
  int n = 0;
  /* Revision 2+ only: an ACPI 1.0 RSDP (as some PVH loaders give) has no XSDT address. */
  if (rsdp && memcmp(rsdp, "RSD PTR ", 8) == 0 && sum_ok(rsdp, 20) && rsdp[15] >= 2 && *(const u64 *)(rsdp + 24) != 0) {
    const u8 *xsdt = (const u8 *)*(const u64 *)(rsdp + 24);
    u32 xlen = *(const u32 *)(xsdt + 4);
    for (u32 o = 36; o + 8 <= xlen; o += 8) {
      const u8 *t = (const u8 *)*(const u64 *)(xsdt + o);
      if (memcmp(t, "APIC", 4) != 0) continue;
      u32 len = *(const u32 *)(t + 4);
      for (u32 e = 44; e + 2 <= len && t[e + 1] >= 2; e += t[e + 1])
        if (t[e] == 0 && (t[e + 4] & 1)) n++;
    }
  }
  cached = n > 0 ? n : 1;
  return cached;
}

/*
 * PVH boot (QEMU -M microvm): the loader passes an hvm_start_info instead of a
 * Linux zero page. Copy what the kit reads from the zero page (command line,
 * ACPI RSDP, e820 map) into one of our own, so the rest of the kit sees one
 * boot protocol. Runs in ring 0 once, before anything else. hvm_start_info:
 * magic, version, flags, nr_modules (u32 each), modlist, cmdline, rsdp,
 * memmap (u64 physical addresses at 16..40), memmap_entries (u32 at 48).
 */
#define PVH_START_MAGIC 0x336ec578
static u8 pvh_zero_page[4096] __attribute__((aligned(4096)));

u64 hg_pvh_boot_params(u64 start_info) {
  const u8 *si = (const u8 *)start_info;
  u8 *bp = pvh_zero_page;
  if (*(const u32 *)si != PVH_START_MAGIC) return (u64)bp;
  u32 version = *(const u32 *)(si + 4);
  *(u32 *)(bp + 0x228) = (u32)*(const u64 *)(si + 24); /* cmd_line_ptr */
  *(u64 *)(bp + 0x70) = *(const u64 *)(si + 32);       /* acpi_rsdp_addr */
  u32 n = 0;
  if (version >= 1) {
    const u8 *map = (const u8 *)*(const u64 *)(si + 40);
    u32 entries = *(const u32 *)(si + 48);
    for (; n < entries && n < 128; n++) {
      u8 *e = bp + 0x2d0 + 20 * n; /* e820: addr u64, size u64, type u32 */
      const u8 *m = map + 24 * n;  /* hvm_memmap_table_entry: addr u64, size u64, type u32, reserved u32 */
      memcpy(e, m, 20);
    }
  }
  bp[0x1e8] = (u8)n;
  return (u64)bp;
}

void hg_cpu_start(u64 cpu, u64 boot_params) {
  if (cpu == 0) {
    hg_boot_params = boot_params;
    build_page_tables();
    build_idt();
    init_pic();
    __atomic_store_n(&boot_ready, 1, __ATOMIC_RELEASE);
  } else {
    while (!__atomic_load_n(&boot_ready, __ATOMIC_ACQUIRE)) __asm__ volatile("pause");
  }
  load_cpu_tables((int)cpu);
  __atomic_fetch_add(&hg_cpus_online, 1, __ATOMIC_SEQ_CST);
  u64 stack = (u64)ustacks[cpu] + USTACK_SIZE;
  if (cpu == 0) hg_enter_user(user_main, stack, 0);
  hg_enter_user(user_ap, stack, cpu);
}

/* ---- traps ---- */

struct frame {
  u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
  u64 vector, error, rip, cs, rflags, rsp, ss;
};

static void ring0_puts(const char *s) { while (*s) outb0(HG_COM1, (u8)*s++); }

static void ring0_hex(u64 v) {
  char b[19] = "0x";
  for (int i = 0; i < 16; i++) b[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
  b[18] = 0;
  ring0_puts(b);
}

static void do_ud(struct frame *f) {
  u8 *ip = (u8 *)f->rip;
  if (ip[0] != 0x0f || ip[1] != 0x0b || (f->rax >> 16) != HG_TRAP_MAGIC) {
    ring0_puts("\nhangar-guest: unexpected #UD at ");
    ring0_hex(f->rip);
    ring0_puts("\n");
    outb0(HG_POWER_PORT, 2);
    for (;;) __asm__ volatile("cli; hlt");
  }
  u32 op = f->rax & 0xffff;
  u16 port = (u16)f->rdx;
  switch (op) {
    case HG_OP_OUTB: outb0(port, (u8)f->rcx); break;
    case HG_OP_OUTW: __asm__ volatile("outw %0, %1" ::"a"((u16)f->rcx), "Nd"(port)); break;
    case HG_OP_OUTL: __asm__ volatile("outl %0, %1" ::"a"((u32)f->rcx), "Nd"(port)); break;
    case HG_OP_INB: f->rax = inb0(port); break;
    case HG_OP_INW: { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); f->rax = v; break; }
    case HG_OP_INL: { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); f->rax = v; break; }
    case HG_OP_OUTSB: { const u8 *p = (const u8 *)f->rsi; for (u64 i = 0; i < f->rcx; i++) outb0(port, p[i]); break; }
    case HG_OP_HALT:
      /* Halt unless the watched word already changed; sti;hlt is atomic, so no wake-up is lost. */
      if (f->rcx == 0 || *(volatile u32 *)f->rcx == (u32)f->rdx) __asm__ volatile("sti; hlt; cli" ::: "memory");
      break;
    case HG_OP_RING0: f->rax = ((u64(*)(u64))f->rcx)(f->rdx); break;
    default: break;
  }
  f->rip += 2;
}

void hg_trap(struct frame *f) {
  u64 v = f->vector;
  if (v == 6) { do_ud(f); return; }
  if (v >= 32 && v < 48) {
    int irq = (int)v - 32;
    hg_irq_count[irq]++;
    if (irq_handlers[irq]) irq_handlers[irq](irq);
    if (irq >= 8) outb0(0xa0, 0x20);
    outb0(0x20, 0x20);
    return;
  }
  ring0_puts("\nhangar-guest: exception ");
  ring0_hex(v);
  ring0_puts(" error ");
  ring0_hex(f->error);
  ring0_puts(" rip ");
  ring0_hex(f->rip);
  if (v == 14) { u64 cr2; __asm__ volatile("mov %%cr2, %0" : "=r"(cr2)); ring0_puts(" cr2 "); ring0_hex(cr2); }
  ring0_puts("\n");
  outb0(HG_POWER_PORT, 2);
  for (;;) __asm__ volatile("cli; hlt");
}

static u64 set_mask(u64 arg) {
  int irq = (int)(arg & 0xff), masked = (int)(arg >> 8);
  u16 port = irq < 8 ? 0x21 : 0xa1;
  u8 m = inb0(port);
  if (masked) m |= (u8)(1 << (irq & 7)); else m &= (u8)~(1 << (irq & 7));
  outb0(port, m);
  return 0;
}

void hg_irq_register(int irq, hg_irq_fn fn) {
  if (irq < 0 || irq > 15) return;
  irq_handlers[irq] = fn;
  hg_irq_unmask(irq);
}
void hg_irq_mask(int irq) { hg_ring0(set_mask, (u64)irq | (1UL << 8)); }
void hg_irq_unmask(int irq) { hg_ring0(set_mask, (u64)irq); }
