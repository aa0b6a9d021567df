//! Leaving QEMU with an exit status through Arm semihosting (SYS_EXIT_EXTENDED).

/// SYS_EXIT_EXTENDED.
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// ADP_Stopped_ApplicationExit.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Ends the run with `code`: 0 guest powered off, 3 guest reset, 2 hypervisor fault.
/// Where semihosting is not enabled the HLT traps; we then spin.
pub fn exit(code: u64) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code];
    // SAFETY: HLT #0xf000 is the A64 semihosting call; x1 points at a valid
    // two-word parameter block that lives across the call.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            in("x0") SYS_EXIT_EXTENDED,
            in("x1") block.as_ptr(),
        );
    }
    loop {
        core::hint::spin_loop();
    }
}
