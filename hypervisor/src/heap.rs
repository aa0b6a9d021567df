//! The hypervisor's heap: a linked-list allocator over a static area, with
//! the bytes in use and their high-water mark counted, so that the shutdown
//! report (and the end-to-end tests that bound memory under a hostile guest)
//! can tell whether anything grows.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use linked_list_allocator::LockedHeap;

/// Bytes of heap (page tables, the vGIC, the PCI segment, the guest DTB,
/// in-flight virtio requests).
pub const HEAP_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

/// In a section of its own after `.bss` (linker.ld), which the entry code
/// does not zero: the allocator needs no zeroed memory (`alloc_zeroed`
/// zeroes what it hands out), and zeroing 8 MiB a word at a time, with the
/// MMU still off, took tens of ms of the boot under QEMU TCG.
#[link_section = ".heap"]
static mut HEAP_AREA: core::mem::MaybeUninit<HeapArea> = core::mem::MaybeUninit::uninit();

/// A [`LockedHeap`] that counts.
pub struct CountingHeap {
    heap: LockedHeap,
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

/// What [`CountingHeap::usage`] reports, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Allocated now (as requested, without the allocator's overhead).
    pub in_use: usize,
    /// The most ever allocated at once.
    pub peak: usize,
    /// The heap's size.
    pub size: usize,
}

impl CountingHeap {
    /// An empty heap; [`CountingHeap::init`] gives it its area.
    pub const fn new() -> Self {
        CountingHeap {
            heap: LockedHeap::empty(),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Hands the static area to the allocator. Called once, at boot, before
    /// the first allocation.
    pub fn init(&self) {
        // SAFETY: the area is a static used by nothing but this allocator from
        // here on, and `init` runs once (on the boot CPU, before any allocation).
        unsafe {
            self.heap
                .lock()
                .init(core::ptr::addr_of_mut!(HEAP_AREA).cast::<u8>(), HEAP_SIZE)
        };
    }

    /// Bytes in use, the high-water mark and the size.
    pub fn usage(&self) -> Usage {
        Usage {
            in_use: self.in_use.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            size: HEAP_SIZE,
        }
    }
}

impl Default for CountingHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: allocation and deallocation are forwarded unchanged to
// `LockedHeap`, a correct `GlobalAlloc`; the counters only observe them.
unsafe impl GlobalAlloc for CountingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            let now = self.in_use.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's contract (`ptr` came from `alloc`
        // with this layout).
        unsafe { self.heap.dealloc(ptr, layout) };
        self.in_use.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}
