//! Volatile loads and stores for every check group: device registers the DT
//! names (mapped as Device memory by `mmu`) and the probe's own DMA memory.
//! One width each; callers pass naturally aligned addresses.

pub fn r8(a: usize) -> u8 {
    // SAFETY: see the module: a mapped device register or probe-owned memory.
    unsafe { core::ptr::read_volatile(a as *const u8) }
}

pub fn r16(a: usize) -> u16 {
    // SAFETY: as for `r8`, 2-byte aligned.
    unsafe { core::ptr::read_volatile(a as *const u16) }
}

pub fn r32(a: usize) -> u32 {
    // SAFETY: as for `r8`, 4-byte aligned.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}

pub fn r64(a: usize) -> u64 {
    // SAFETY: as for `r8`, 8-byte aligned (64-bit registers such as GICR_TYPER).
    unsafe { core::ptr::read_volatile(a as *const u64) }
}

pub fn w8(a: usize, v: u8) {
    // SAFETY: as for `r8`.
    unsafe { core::ptr::write_volatile(a as *mut u8, v) }
}

pub fn w16(a: usize, v: u16) {
    // SAFETY: as for `r16`.
    unsafe { core::ptr::write_volatile(a as *mut u16, v) }
}

pub fn w32(a: usize, v: u32) {
    // SAFETY: as for `r32`.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}

/// A 64-bit field as two 32-bit halves, low first (virtio 1.2 4.1.3.1).
pub fn w64(a: usize, v: u64) {
    w32(a, v as u32);
    w32(a + 4, (v >> 32) as u32);
}
