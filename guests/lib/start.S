/*
 * Entry of a Hangar test guest: 64-bit mode, interrupts off, RSI = zero page,
 * RDI = vCPU index (Hangar starts every vCPU here when the image carries the
 * Hangar SMP note below). Picks this CPU's kernel stack and calls
 * hg_cpu_start(cpu, boot_params) in cpu.c, which never returns.
 */
#define KSTACK_SIZE 16384

    .section .note.hangar, "a"
    .balign 4
    .long 7              /* namesz: "Hangar\0" */
    .long 0              /* descsz */
    .long 0x4801         /* HANGAR_NOTE_SMP_ENTRY */
    .asciz "Hangar"
    .balign 4

/* PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18): a PVH loader such as QEMU's
   `-M microvm` enters the same image at pvh_start32, in 32-bit protected mode
   with paging off and EBX = the hvm_start_info it built. */
    .balign 4
    .long 4              /* namesz: "Xen\0" */
    .long 4              /* descsz */
    .long 18             /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4

    .section .text.start, "ax"
    .globl _start
    .code64
/* ELF entry (load address). A bzImage-wrapped copy of the same image is entered at
   load address + 0x200 (the 64-bit boot protocol's entry), so both lead to start64. */
_start:
    jmp start64
    .org 0x200
    .globl _start_bzimage
_start_bzimage:
    jmp start64
start64:
    cli
    cld
    mov %rdi, %rax
    cmp $32, %rax
    jae 1f
    inc %rax
    imul $KSTACK_SIZE, %rax
    lea hg_kstacks(%rip), %rsp
    add %rax, %rsp
    mov %rsi, %rsi
    call hg_cpu_start
1:  hlt
    jmp 1b

/*
 * PVH entry: identity-map the first GiB (2 MiB pages), enter long mode with a
 * temporary GDT, turn the hvm_start_info into the zero page the kit reads
 * (hg_pvh_boot_params in cpu.c), then continue as a 64-bit boot of CPU 0.
 * hg_cpu_start replaces these tables with the kit's own.
 */
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi
    mov $pvh_pd, %edi
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    inc %ecx
    cmp $512, %ecx
    jb 2b
    movl $(pvh_pd + 3), pvh_pdpt
    movl $(pvh_pdpt + 3), pvh_pml4
    mov $pvh_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax          /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx   /* EFER */
    rdmsr
    or $0x100, %eax         /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax    /* PG | PE */
    mov %eax, %cr0
    lgdt pvh_gdt_desc
    ljmp $0x08, $pvh_start64
    .code64
pvh_start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    lea hg_kstacks+KSTACK_SIZE(%rip), %rsp
    mov %esi, %edi
    call hg_pvh_boot_params
    mov %rax, %rsi
    xor %edi, %edi
    jmp start64

/* Switches to ring 3: rdi = entry, rsi = user stack top, rdx = argument. */
    .globl hg_enter_user
hg_enter_user:
    mov %rdi, %rcx
    mov %rdx, %rdi
    push $0x23              /* user data selector | RPL 3 */
    push %rsi
    push $0x3202            /* IF | IOPL 3 | reserved bit */
    push $0x2b              /* user code selector | RPL 3 */
    push %rcx
    mov $0x23, %ax
    mov %ax, %ds
    mov %ax, %es
    iretq

/* Interrupt/exception stubs: push a dummy error code where the CPU pushes none, then the vector. */
.macro STUB n, err
    .globl hg_isr\n
hg_isr\n:
    .if \err == 0
    push $0
    .endif
    push $\n
    jmp hg_isr_common
.endm

.altmacro
.macro STUBS from, to
    .if \from == 8 || \from == 10 || \from == 11 || \from == 12 || \from == 13 || \from == 14 || \from == 17 || \from == 21 || \from == 29 || \from == 30
    STUB %from, 1
    .else
    STUB %from, 0
    .endif
    .if \to-\from
    STUBS %(\from+1), \to
    .endif
.endm
STUBS 0, 47

hg_isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    call hg_trap
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    .section .rodata
    .globl hg_isr_table
    .balign 8
hg_isr_table:
.macro ENTRY n
    .quad hg_isr\n
.endm
.macro ENTRIES from, to
    ENTRY %from
    .if \to-\from
    ENTRIES %(\from+1), \to
    .endif
.endm
ENTRIES 0, 47

    .balign 8
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff  /* 0x08 code, 64-bit */
    .quad 0x00cf92000000ffff  /* 0x10 data */
pvh_gdt_desc:
    .word pvh_gdt_desc - pvh_gdt - 1
    .long pvh_gdt

    .section .bss
    .balign 4096
pvh_pml4: .skip 4096
pvh_pdpt: .skip 4096
pvh_pd:   .skip 4096
    .globl hg_kstacks
hg_kstacks:
    .skip KSTACK_SIZE * 33
    .section .note.GNU-stack, "", @progbits
