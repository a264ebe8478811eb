/* Hangar test-guest kit: port I/O wrappers, console, printf, power, strings, allocator. */
#include <stdarg.h>
#include "hangar.h"
#include "internal.h"

int hg_cpl(void) { u16 cs; __asm__ volatile("mov %%cs, %0" : "=r"(cs)); return cs & 3; }

u64 hg_trap_call(u64 op, u64 rdx, u64 rcx, u64 rsi) {
  u64 rax = (HG_TRAP_MAGIC << 16) | op;
  __asm__ volatile("ud2" : "+a"(rax), "+d"(rdx), "+c"(rcx), "+S"(rsi) : : "memory");
  return rax;
}

void hg_outb(u16 port, u8 v) {
  if (hg_cpl() == 0) __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
  else hg_trap_call(HG_OP_OUTB, port, v, 0);
}
void hg_outw(u16 port, u16 v) {
  if (hg_cpl() == 0) __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port));
  else hg_trap_call(HG_OP_OUTW, port, v, 0);
}
void hg_outl(u16 port, u32 v) {
  if (hg_cpl() == 0) __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
  else hg_trap_call(HG_OP_OUTL, port, v, 0);
}
u8 hg_inb(u16 port) {
  if (hg_cpl() == 0) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
  return (u8)hg_trap_call(HG_OP_INB, port, 0, 0);
}
u16 hg_inw(u16 port) {
  if (hg_cpl() == 0) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
  return (u16)hg_trap_call(HG_OP_INW, port, 0, 0);
}
u32 hg_inl(u16 port) {
  if (hg_cpl() == 0) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
  return (u32)hg_trap_call(HG_OP_INL, port, 0, 0);
}

u64 hg_ring0(u64 (*fn)(u64), u64 arg) {
  if (hg_cpl() == 0) return fn(arg);
  return hg_trap_call(HG_OP_RING0, arg, (u64)fn, 0);
}

void hg_wait_for_interrupt(void) {
  if (hg_cpl() == 0) { __asm__ volatile("sti; hlt; cli"); return; }
  hg_trap_call(HG_OP_HALT, 0, 0, 0);
}

/* Halts unless *word != seen (checked in ring 0 with interrupts off, so a wake-up is never lost). */
void hg_wait_change(volatile u32 *word, u32 seen) {
  if (hg_cpl() == 0) { __asm__ volatile("sti; hlt; cli"); return; }
  hg_trap_call(HG_OP_HALT, seen, (u64)word, 0);
}

/* ---- console ---- */

static hg_lock_t console_lock;

static void write_bytes(const char *s, size_t n) {
  if (n == 0) return;
  if (hg_cpl() == 0) { for (size_t i = 0; i < n; i++) __asm__ volatile("outb %0, %1" ::"a"((u8)s[i]), "Nd"((u16)HG_COM1)); return; }
  hg_trap_call(HG_OP_OUTSB, HG_COM1, n, (u64)s);
}

void hg_putc(char c) { write_bytes(&c, 1); }
void hg_puts(const char *s) { hg_lock(&console_lock); write_bytes(s, strlen(s)); hg_unlock(&console_lock); }

static volatile u8 rx_buf[1024];
static volatile u32 rx_head, rx_tail;

static void serial_irq(int irq) {
  (void)irq;
  /* Ring 0: drain the receiver while LSR says data is ready. */
  while (hg_inb(HG_COM1 + 5) & 1) {
    u8 c = hg_inb(HG_COM1);
    u32 h = rx_head;
    if (h - rx_tail < sizeof(rx_buf)) { rx_buf[h % sizeof(rx_buf)] = c; __atomic_store_n(&rx_head, h + 1, __ATOMIC_RELEASE); }
  }
}

void hg_serial_enable_rx_irq(void) {
  hg_irq_register(HG_COM1_IRQ, serial_irq);
  hg_outb(HG_COM1 + 4, 0x0b); /* DTR | RTS | OUT2 */
  hg_outb(HG_COM1 + 1, 0x01); /* IER: receive data available */
}

int hg_serial_getc(void) {
  u32 t = rx_tail;
  if (t == __atomic_load_n(&rx_head, __ATOMIC_ACQUIRE)) return -1;
  int c = rx_buf[t % sizeof(rx_buf)];
  rx_tail = t + 1;
  return c;
}

int hg_serial_getc_wait(void) {
  for (;;) {
    u32 seen = __atomic_load_n(&rx_head, __ATOMIC_ACQUIRE);
    int c = hg_serial_getc();
    if (c >= 0) return c;
    hg_wait_change(&rx_head, seen);
  }
}

/* ---- printf ---- */

struct out { char *buf; size_t n, len; };

static void emit(struct out *o, char c) {
  if (o->len + 1 < o->n) o->buf[o->len] = c;
  o->len++;
}

static void fmt_num(struct out *o, u64 v, int base, bool neg, int width, char pad, bool upper) {
  char tmp[24];
  int i = 0;
  const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  do { tmp[i++] = digits[v % (u64)base]; v /= (u64)base; } while (v);
  int len = i + (neg ? 1 : 0);
  if (neg && pad == '0') emit(o, '-');
  for (; len < width; len++) emit(o, pad);
  if (neg && pad != '0') emit(o, '-');
  while (i) emit(o, tmp[--i]);
}

static int vformat(char *buf, size_t n, const char *f, va_list ap) {
  struct out o = { buf, n, 0 };
  for (; *f; f++) {
    if (*f != '%') { emit(&o, *f); continue; }
    f++;
    char pad = ' ';
    int width = 0, lng = 0;
    if (*f == '0') { pad = '0'; f++; }
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    while (*f == 'l') { lng++; f++; }
    switch (*f) {
      case 'd': case 'i': { i64 v = lng ? va_arg(ap, i64) : va_arg(ap, int); fmt_num(&o, v < 0 ? (u64)-v : (u64)v, 10, v < 0, width, pad, false); break; }
      case 'u': { u64 v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned); fmt_num(&o, v, 10, false, width, pad, false); break; }
      case 'x': case 'X': { u64 v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned); fmt_num(&o, v, 16, false, width, pad, *f == 'X'); break; }
      case 'p': { u64 v = (u64)va_arg(ap, void *); emit(&o, '0'); emit(&o, 'x'); fmt_num(&o, v, 16, false, width, pad, false); break; }
      case 's': { const char *s = va_arg(ap, const char *); if (!s) s = "(null)"; int l = (int)strlen(s); for (; l < width; l++) emit(&o, ' '); while (*s) emit(&o, *s++); break; }
      case 'c': emit(&o, (char)va_arg(ap, int)); break;
      case '%': emit(&o, '%'); break;
      case 0: f--; break;
      default: emit(&o, '%'); emit(&o, *f); break;
    }
  }
  if (n) buf[o.len < n ? o.len : n - 1] = 0;
  return (int)o.len;
}

int hg_snprintf(char *buf, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vformat(buf, n, fmt, ap);
  va_end(ap);
  return r;
}

int hg_printf(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int r = vformat(buf, sizeof buf, fmt, ap);
  va_end(ap);
  size_t len = (size_t)r < sizeof buf ? (size_t)r : sizeof buf - 1;
  hg_lock(&console_lock);
  write_bytes(buf, len);
  hg_unlock(&console_lock);
  return r;
}

/* ---- power ---- */

void hg_poweroff(void) { for (;;) hg_outb(HG_POWER_PORT, 0); }
void hg_reset(void) { for (;;) hg_outb(0x64, 0xfe); }
void hg_panic(const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vformat(buf, sizeof buf, fmt, ap);
  va_end(ap);
  hg_puts("PANIC: ");
  hg_puts(buf);
  hg_puts("\n");
  for (;;) hg_outb(HG_POWER_PORT, 2);
}

/* ---- CPUs ---- */

/* hg_cpu_id and hg_cpu_count live in cpu.c. */

/* ---- memory ---- */

void *memset(void *d, int c, size_t n) { u8 *p = d; while (n--) *p++ = (u8)c; return d; }
void *memcpy(void *d, const void *s, size_t n) { u8 *p = d; const u8 *q = s; while (n--) *p++ = *q++; return d; }
int memcmp(const void *a, const void *b, size_t n) { const u8 *p = a, *q = b; for (; n; n--, p++, q++) if (*p != *q) return *p - *q; return 0; }
size_t strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

extern char __image_end[];
static u64 heap_next;
static hg_lock_t heap_lock;

void *hg_alloc(size_t size, size_t align) {
  if (align == 0) align = 16;
  hg_lock(&heap_lock);
  if (!heap_next) heap_next = (u64)__image_end;
  u64 p = (heap_next + align - 1) & ~(u64)(align - 1);
  if (p + size > hg_ram_size()) { hg_unlock(&heap_lock); hg_panic("hg_alloc: out of memory (%lu bytes)", (u64)size); }
  heap_next = p + size;
  hg_unlock(&heap_lock);
  memset((void *)p, 0, size);
  return (void *)p;
}

u64 hg_ram_size(void) {
  const u8 *bp = (const u8 *)hg_boot_params;
  u8 n = bp[0x1e8];
  u64 top = 0;
  for (int i = 0; i < n && i < 128; i++) {
    const u8 *e = bp + 0x2d0 + 20 * i;
    u64 addr = *(const u64 *)e, size = *(const u64 *)(e + 8);
    u32 type = *(const u32 *)(e + 16);
    if (type == 1 && addr + size > top) top = addr + size;
  }
  return top;
}

const char *hg_cmdline(void) {
  const u8 *bp = (const u8 *)hg_boot_params;
  return (const char *)(u64)*(const u32 *)(bp + 0x228);
}
