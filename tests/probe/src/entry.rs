//! The arm64 Image header, self-relocation, the EL1 vectors and the
//! secondary-CPU entry.

use crate::exc::Frame;

/// Bytes of stack per CPU.
pub const STACK_SIZE: usize = 0x10000;
/// CPUs the probe can run on (the linker script reserves their stacks).
pub const MAX_CPUS: usize = 8;
/// The link address (`linker.ld`).
const LINK_ADDRESS: u64 = 0x8020_0000;

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       2f                      // code0
    .word   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size
    .quad   0xa                     // flags: LE, 4 KiB pages, anywhere
    .quad   0, 0, 0                 // res2..res4
    .ascii  "ARM\x64"               // magic
    .word   0                       // res5
2:
    mov     x19, x0                 // DTB
    msr     daifset, #0xf
    adrp    x20, _start
    add     x20, x20, :lo12:_start
    ldr     x21, ={link}
    sub     x21, x20, x21           // load offset
    adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
1:  cmp     x1, x2
    b.hs    1f
    ldp     x3, x4, [x1], #16       // r_offset, r_info
    ldr     x5, [x1], #8            // r_addend
    cmp     w4, #1027               // R_AARCH64_RELATIVE
    b.ne    3f
    add     x5, x5, x21
    str     x5, [x3, x21]
    b       1b
1:  adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    1f
    str     xzr, [x1], #8
    b       1b
1:  msr     tpidr_el1, xzr
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #{stack}
    mov     sp, x1
    adrp    x1, el1_vectors
    add     x1, x1, :lo12:el1_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      mmu_on_boot
    mov     x0, x19
    bl      probe_main
3:  wfe
    b       3b

    .text
    .global secondary_entry
secondary_entry:                    // PSCI CPU_ON: x0 = context_id = CPU index
    msr     daifset, #0xf
    msr     tpidr_el1, x0
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    mov     x2, #{stack}
    madd    x3, x0, x2, x2
    add     x1, x1, x3
    mov     sp, x1
    adrp    x1, el1_vectors
    add     x1, x1, :lo12:el1_vectors
    msr     vbar_el1, x1
    isb
    adrp    x1, SECONDARY_MMU
    add     x1, x1, :lo12:SECONDARY_MMU
    ldp     x2, x3, [x1]            // MAIR_EL1, TCR_EL1
    ldp     x4, x5, [x1, #16]       // TTBR0_EL1, SCTLR_EL1
    msr     mair_el1, x2
    msr     tcr_el1, x3
    msr     ttbr0_el1, x4
    dsb     ish
    tlbi    vmalle1
    dsb     ish
    isb
    msr     sctlr_el1, x5
    isb
    bl      secondary_main
4:  wfe
    b       4b
    .ltorg

.macro vec kind
    .balign 0x80
    sub     sp, sp, #256
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       el1_exception_common
.endm

    .balign 0x800
    .global el1_vectors
el1_vectors:
    vec 0
    vec 1
    vec 2
    vec 3
    vec 4                           // current EL, SP_ELx: sync
    vec 5                           // IRQ
    vec 6                           // FIQ
    vec 7                           // SError
    vec 8
    vec 9
    vec 10
    vec 11
    vec 12
    vec 13
    vec 14
    vec 15

el1_exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mov     x0, sp
    bl      el1_exception
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #256
    eret
"#,
    stack = const STACK_SIZE,
    link = const LINK_ADDRESS,
);

extern "C" {
    fn secondary_entry();
}

/// MAIR_EL1, TCR_EL1, TTBR0_EL1 and SCTLR_EL1 for a secondary's first
/// instructions (read with its MMU off: cleaned to the point of coherency).
#[no_mangle]
static mut SECONDARY_MMU: [u64; 4] = [0; 4];

/// Publishes the boot CPU's MMU registers for the secondaries.
pub fn set_secondary_mmu(regs: [u64; 4]) {
    let p = core::ptr::addr_of_mut!(SECONDARY_MMU);
    // SAFETY: written by the boot CPU before any secondary starts; secondaries
    // only read it, in assembly, after PSCI CPU_ON.
    unsafe { p.write_volatile(regs) };
    crate::mmu::clean_to_poc(p as usize, core::mem::size_of::<[u64; 4]>());
}

/// Where PSCI CPU_ON starts a secondary (with x0 = its CPU index).
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as usize as u64
}

/// This CPU's index (TPIDR_EL1, set at entry).
pub fn cpu_index() -> usize {
    let v: u64;
    // SAFETY: reading TPIDR_EL1 has no side effect.
    unsafe { core::arch::asm!("mrs {}, tpidr_el1", out(reg) v) };
    v as usize
}

/// The Rust side of the exception vectors.
#[no_mangle]
extern "C" fn el1_exception(frame: &mut Frame, kind: u64) {
    crate::exc::handle(frame, kind);
}

/// A secondary's Rust entry (MMU on): runs the job the boot CPU left, then
/// switches itself off.
#[no_mangle]
extern "C" fn secondary_main(idx: u64) -> ! {
    crate::psci::secondary_main(idx as usize)
}
