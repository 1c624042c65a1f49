/* Multiboot (v1) entry: QEMU's -kernel loader jumps here in 32-bit protected
 * mode with paging off. We load our own flat GDT (the loader's is not
 * guaranteed to stay valid), set up a stack and call kmain(magic, mbi). */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003          /* page-align modules, want memory info */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

/* The stack sits on a page of its own kind: the page under it is left
 * unmapped (paging.c), so an overflow faults instead of overwriting .bss. */
    .section .bss
    .align 4096
    .global stack_guard
stack_guard:
    .skip 4096
stack_bottom:
    .skip 65536
    .global stack_top
stack_top:

    .section .rodata
    .align 8
gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF      /* 0x08: code, flat 4 GiB */
    .quad 0x00CF92000000FFFF      /* 0x10: data, flat 4 GiB */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .section .text
    .global _start
_start:
    cli
    lgdt gdt_ptr
    ljmp $0x08, $1f
1:  mov $0x10, %cx
    mov %cx, %ds
    mov %cx, %es
    mov %cx, %fs
    mov %cx, %gs
    mov %cx, %ss
    mov $stack_top, %esp
    xor %ebp, %ebp
    cld
    push %ebx                     /* multiboot info */
    push %eax                     /* multiboot magic */
    call kmain
2:  cli
    hlt
    jmp 2b

/* Interrupt stubs: each pushes a dummy error code when the CPU does not,
 * then the vector, so isr_common sees one uniform frame. */
.macro ISR_NOERR n
    .global isr\n
isr\n:
    push $0
    push $\n
    jmp isr_common
.endm
.macro ISR_ERR n
    .global isr\n
isr\n:
    push $\n
    jmp isr_common
.endm

ISR_NOERR 0;  ISR_NOERR 1;  ISR_NOERR 2;  ISR_NOERR 3
ISR_NOERR 4;  ISR_NOERR 5;  ISR_NOERR 6;  ISR_NOERR 7
ISR_ERR   8;  ISR_NOERR 9;  ISR_ERR   10; ISR_ERR   11
ISR_ERR   12; ISR_ERR   13; ISR_ERR   14; ISR_NOERR 15
ISR_NOERR 16; ISR_ERR   17; ISR_NOERR 18; ISR_NOERR 19
ISR_NOERR 20; ISR_ERR   21; ISR_NOERR 22; ISR_NOERR 23
ISR_NOERR 24; ISR_NOERR 25; ISR_NOERR 26; ISR_NOERR 27
ISR_NOERR 28; ISR_ERR   29; ISR_ERR   30; ISR_NOERR 31
ISR_NOERR 32; ISR_NOERR 33; ISR_NOERR 34; ISR_NOERR 35
ISR_NOERR 36; ISR_NOERR 37; ISR_NOERR 38; ISR_NOERR 39
ISR_NOERR 40; ISR_NOERR 41; ISR_NOERR 42; ISR_NOERR 43
ISR_NOERR 44; ISR_NOERR 45; ISR_NOERR 46; ISR_NOERR 47
/* 48-63: local APIC vectors (timer, spurious) */
ISR_NOERR 48; ISR_NOERR 49; ISR_NOERR 50; ISR_NOERR 51
ISR_NOERR 52; ISR_NOERR 53; ISR_NOERR 54; ISR_NOERR 55
ISR_NOERR 56; ISR_NOERR 57; ISR_NOERR 58; ISR_NOERR 59
ISR_NOERR 60; ISR_NOERR 61; ISR_NOERR 62; ISR_NOERR 63

isr_common:
    pusha
    mov %esp, %eax
    push %eax                     /* struct isr_frame * */
    call isr_dispatch
    add $4, %esp
    popa
    add $8, %esp                  /* vector + error code */
    iret

    .section .rodata
    .align 4
    .global isr_table
isr_table:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
    .long isr\n
.endr

    .section .note.GNU-stack, "", @progbits
