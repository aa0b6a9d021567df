//! Guest memory for device-visible buffers (virtqueues, requests): a bump
//! allocator over the linker script's `__heap` area, identity-mapped (the
//! probe runs with VA = IPA), zeroed on allocation.

use core::sync::atomic::{AtomicUsize, Ordering};

extern "C" {
    static __heap_start: u8;
    static __heap_end: u8;
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `size` bytes aligned to `align` (a power of two), zeroed; its address is
/// also its IPA. `None` when the area is used up.
pub fn alloc(size: usize, align: usize) -> Option<usize> {
    let start = core::ptr::addr_of!(__heap_start) as usize;
    let end = core::ptr::addr_of!(__heap_end) as usize;
    let mut cur = NEXT.load(Ordering::Relaxed);
    loop {
        let base = if cur == 0 { start } else { cur };
        let at = base.checked_add(align - 1)? & !(align - 1);
        let next = at.checked_add(size).filter(|&e| e <= end)?;
        match NEXT.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                // SAFETY: [at, next) lies in the heap area reserved by the linker
                // script, handed out once.
                unsafe { core::ptr::write_bytes(at as *mut u8, 0, size) };
                return Some(at);
            }
            Err(now) => cur = now,
        }
    }
}
