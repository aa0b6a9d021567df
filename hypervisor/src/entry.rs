//! Entry points in assembly: the arm64 Image header and boot entry, the
//! secondary-CPU entry, the EL2 exception vectors, and guest entry.
//!
//! Exceptions from the guest push a [`Frame`] of its x0..x30 on this CPU's EL2
//! stack, call [`crate::exits::handle_exit`] with it, restore and `eret`.
//! Exceptions taken at EL2 itself are hypervisor bugs: [`crate::exits::hv_fault`].

/// Bytes of EL2 stack per physical CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// The address the binary is linked at (`linker.ld`); it relocates itself at entry
/// when loaded elsewhere.
pub const LINK_ADDRESS: u64 = 0x4020_0000;
/// Most physical CPUs the hypervisor brings up.
pub const MAX_CPUS: usize = 64;

/// A guest's general-purpose registers as saved on exception entry.
#[repr(C)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    _pad: u64,
}

impl Frame {
    /// Register `n`, with 31 reading as XZR (zero).
    pub fn reg(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Sets register `n`; 31 (XZR) discards the value.
    pub fn set_reg(&mut self, n: u8, v: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = v;
        }
    }
}

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
    mov     x19, x0                 // host DTB
    msr     daifset, #0xf
    // Self-relocation: we may run anywhere (booti, -kernel). Apply the
    // R_AARCH64_RELATIVE entries of .rela.dyn for the load offset, using
    // PC-relative addressing only until done.
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
    b.ne    3f                      // anything else: refuse to run
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
1:  msr     tpidr_el2, xzr
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #{stack}
    mov     sp, x1
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      rust_main
3:  wfe
    b       3b

    .text
    .global secondary_entry
secondary_entry:                    // PSCI CPU_ON: x0 = our CPU index
    msr     daifset, #0xf
    msr     tpidr_el2, x0
    // Translation and caches on before any Rust code: everything the boot CPU
    // wrote since its own MMU came on may still sit in its caches, and only
    // SECONDARY_MMU (cleaned to the point of coherency) is read with them off.
    adrp    x1, SECONDARY_MMU
    add     x1, x1, :lo12:SECONDARY_MMU
    ldp     x2, x3, [x1]            // MAIR_EL2, TCR_EL2
    ldp     x4, x5, [x1, #16]       // TTBR0_EL2, SCTLR_EL2
    msr     mair_el2, x2
    msr     tcr_el2, x3
    msr     ttbr0_el2, x4
    dsb     ish
    tlbi    alle2
    dsb     ish
    isb
    msr     sctlr_el2, x5
    isb
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    mov     x2, #{stack}
    madd    x3, x0, x2, x2
    add     x1, x1, x3
    mov     sp, x1
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    bl      secondary_main
4:  wfe
    b       4b

    .global enter_guest
enter_guest:                        // x0 = guest x0, x1 = EL2 stack top
    mov     sp, x1
    mov     x1, xzr
    mov     x2, xzr
    mov     x3, xzr
    mov     x4, xzr
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    mov     x8, xzr
    mov     x9, xzr
    mov     x10, xzr
    mov     x11, xzr
    mov     x12, xzr
    mov     x13, xzr
    mov     x14, xzr
    mov     x15, xzr
    mov     x16, xzr
    mov     x17, xzr
    mov     x18, xzr
    mov     x19, xzr
    mov     x20, xzr
    mov     x21, xzr
    mov     x22, xzr
    mov     x23, xzr
    mov     x24, xzr
    mov     x25, xzr
    mov     x26, xzr
    mov     x27, xzr
    mov     x28, xzr
    mov     x29, xzr
    mov     x30, xzr
    eret
    .ltorg

.macro vec kind, target
    .balign 0x80
    sub     sp, sp, #256
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       \target
.endm

    .balign 0x800
    .global el2_vectors
el2_vectors:
    vec 0, el2_fault_common         // current EL, SP_EL0
    vec 1, el2_fault_common
    vec 2, el2_fault_common
    vec 3, el2_fault_common
    vec 4, el2_fault_common         // current EL, SP_ELx
    vec 5, el2_fault_common
    vec 6, el2_fault_common
    vec 7, el2_fault_common
    vec 0, guest_exit_common        // lower EL, AArch64: sync, IRQ, FIQ, SError
    vec 1, guest_exit_common
    vec 2, guest_exit_common
    vec 3, guest_exit_common
    vec 12, el2_fault_common        // lower EL, AArch32
    vec 13, el2_fault_common
    vec 14, el2_fault_common
    vec 15, el2_fault_common

.macro save_rest
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
.endm

guest_exit_common:
    save_rest
    mov     x0, sp
    bl      handle_exit
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

el2_fault_common:
    save_rest
    mov     x0, sp
    bl      hv_fault
5:  wfe
    b       5b
"#,
    stack = const STACK_SIZE,
    link = const LINK_ADDRESS,
);

extern "C" {
    /// Starts the guest at ELR_EL2/SPSR_EL2 with x0 = `x0`, on a fresh EL2 stack.
    fn enter_guest(x0: u64, stack_top: usize) -> !;
    /// Where PSCI CPU_ON starts a secondary CPU (x0 = its index).
    fn secondary_entry();
    static __stacks_start: u8;
}

/// MAIR_EL2, TCR_EL2, TTBR0_EL2 and SCTLR_EL2 for the secondaries' first
/// instructions; written and cleaned to PoC by the boot CPU before PSCI CPU_ON.
#[no_mangle]
static mut SECONDARY_MMU: [u64; 4] = [0; 4];

/// Publishes the MMU registers secondaries load before any Rust code runs.
pub fn set_secondary_mmu(regs: [u64; 4]) {
    let p = core::ptr::addr_of_mut!(SECONDARY_MMU);
    // SAFETY: written once on the boot CPU before any secondary starts; secondaries
    // only read it (in assembly) after PSCI CPU_ON.
    unsafe { p.write_volatile(regs) };
    crate::sysreg::clean_dcache_range(p as usize, core::mem::size_of::<[u64; 4]>());
}

/// The address secondaries start at.
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as usize as u64
}

/// Whether the linker script reserved a stack for each of [`MAX_CPUS`] CPUs.
pub fn stacks_fit() -> bool {
    extern "C" {
        static __stacks_end: u8;
    }
    let start = core::ptr::addr_of!(__stacks_start) as usize;
    let end = core::ptr::addr_of!(__stacks_end) as usize;
    end - start >= MAX_CPUS * STACK_SIZE
}

/// Where the image runs (after self-relocation).
pub fn image_start() -> u64 {
    extern "C" {
        static __image_start: u8;
    }
    core::ptr::addr_of!(__image_start) as u64
}

/// This CPU's index (TPIDR_EL2, set at entry).
pub fn cpu_index() -> usize {
    use aarch64_cpu::registers::{Readable, TPIDR_EL2};
    TPIDR_EL2.get() as usize
}

/// Enters the guest at the ELR_EL2/SPSR_EL2 already set, with x0 = `x0`,
/// resetting this CPU's EL2 stack.
pub fn run_guest(x0: u64) -> ! {
    let idx = cpu_index().min(MAX_CPUS - 1);
    let base = core::ptr::addr_of!(__stacks_start) as usize;
    let top = base + (idx + 1) * STACK_SIZE;
    // SAFETY: ELR_EL2/SPSR_EL2 hold a guest EL1 entry prepared by the caller and the
    // stage-2/trap configuration is installed; `top` is this CPU's own stack top, and
    // nothing on the current stack is used after the jump.
    unsafe { enter_guest(x0, top) }
}
