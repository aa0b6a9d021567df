//! The EL2 hypervisor (aarch64-unknown-none).
//!
//! First light: a Linux arm64 Image header so QEMU `-kernel` and U-Boot
//! `booti` start it at EL2 with x0 = host DTB; it reports the host platform
//! on the host PL011 (every line prefixed `[hv] `) and leaves QEMU through
//! semihosting when its bootargs say `semihosting`. Guest execution is not
//! implemented yet, so it ends with the hypervisor-fault status 2.
//!
//! Limitation: linked at 0x4020_0000, where QEMU `-kernel` places an Image
//! with text_offset 0; the entry code refuses to run anywhere else.
#![no_std]
#![no_main]

mod console;
mod semihosting;

use core::fmt::Write;

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
    adr     x1, _start
    ldr     x2, =_start
    cmp     x1, x2
    b.ne    3f                      // not where we were linked: stop
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
1:  cmp     x1, x2
    b.hs    1f
    str     xzr, [x1], #8
    b       1b
1:  ldr     x1, =__stack_top
    mov     sp, x1
    mov     x0, x19
    bl      rust_main
3:  wfe
    b       3b
    .ltorg
"#
);

/// The Rust entry point, on the boot CPU at EL2, with the host DTB address.
#[no_mangle]
extern "C" fn rust_main(dtb: usize) -> ! {
    // SAFETY: firmware (QEMU, U-Boot) passes a valid flattened device tree in x0,
    // mapped (the MMU is off) and left untouched while we read it.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) };
    let Ok(fdt) = fdt else {
        // No DT means no console to say so on; stop as a fault.
        semihosting::exit(2)
    };
    let Some(uart) = console::find_pl011(&fdt) else {
        semihosting::exit(2)
    };
    // SAFETY: the base comes from the host DT's PL011 node; nothing else drives it.
    let mut con = unsafe { console::Pl011::new(uart) };
    let bootargs = fdt.chosen().bootargs().unwrap_or("");
    let semihosting = bootargs.split_whitespace().any(|a| a == "semihosting");
    let _ = writeln!(con, "[hv] synthetic-pci hypervisor, EL{}", current_el());
    let _ = writeln!(con, "[hv] host DT at {dtb:#x}, bootargs \"{bootargs}\"");
    for r in fdt.memory().regions() {
        let _ = writeln!(
            con,
            "[hv] memory {:#x} size {:#x}",
            r.starting_address as usize,
            r.size.unwrap_or(0)
        );
    }
    let _ = writeln!(con, "[hv] cpus {}", fdt.cpus().count());
    if let Some(gic) = fdt.find_compatible(&["arm,gic-v3"]) {
        let mut regs = gic.reg().into_iter().flatten();
        if let (Some(d), Some(r)) = (regs.next(), regs.next()) {
            let _ = writeln!(
                con,
                "[hv] gicv3 gicd {:#x} gicr {:#x}",
                d.starting_address as usize, r.starting_address as usize
            );
        }
    } else {
        let _ = writeln!(con, "[hv] error: no arm,gic-v3 node in the host DT");
    }
    let _ = writeln!(con, "[hv] pl011 {uart:#x}");
    if let Some(psci) = fdt.find_node("/psci") {
        let method = psci
            .property("method")
            .and_then(|p| p.as_str())
            .unwrap_or("?");
        let _ = writeln!(con, "[hv] psci method {method}");
    }
    if let Some(chosen) = fdt.find_node("/chosen") {
        for m in chosen.children() {
            let Some(compat) = m.compatible() else {
                continue;
            };
            if !compat.all().any(|c| c == "multiboot,module") {
                continue;
            }
            let kind = compat
                .all()
                .find(|c| *c != "multiboot,module")
                .unwrap_or("?");
            // QEMU's guest-loader writes 2 address + 2 size cells without saying so
            // in /chosen (whose defaults would be 2 + 1): read them as the root's.
            let reg = m.property("reg").map(|p| p.value).unwrap_or(&[]);
            let cell = |i: usize| {
                reg.get(i * 4..i * 4 + 4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
            };
            let (addr, size) = (cell(0) << 32 | cell(1), cell(2) << 32 | cell(3));
            let _ = writeln!(con, "[hv] module {kind} at {addr:#x} size {size:#x}");
        }
    }
    let _ = writeln!(con, "[hv] error: running a guest is not implemented yet");
    if semihosting {
        semihosting::exit(2)
    }
    loop {
        core::hint::spin_loop();
    }
}

fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el) };
    (el >> 2) & 3
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    semihosting::exit(2)
}
