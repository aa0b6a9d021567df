//! Polled output on the guest's PL011 (Arm PL011 TRM 3.3.1 UARTDR, 3.3.3 UARTFR).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// UARTDR.
const DR: usize = 0x000;
/// UARTFR and its TXFF bit.
const FR: usize = 0x018;
const FR_TXFF: u32 = 1 << 5;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

/// Takes the UART at `base` (from the DT).
pub fn init(base: usize) {
    BASE.store(base, Ordering::Relaxed);
}

struct Uart(usize);

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

impl Uart {
    fn put(&self, b: u8) {
        if self.0 == 0 {
            return;
        }
        // SAFETY: the base comes from the DT's PL011 node, mapped as Device
        // memory by `mmu`; DR and FR are 32-bit registers.
        unsafe {
            while core::ptr::read_volatile((self.0 + FR) as *const u32) & FR_TXFF != 0 {}
            core::ptr::write_volatile((self.0 + DR) as *mut u32, u32::from(b));
        }
    }
}

/// Prints a whole line, never interleaved with another CPU's.
pub fn line(args: fmt::Arguments) {
    while LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let mut u = Uart(BASE.load(Ordering::Relaxed));
    let _ = u.write_fmt(args);
    let _ = u.write_str("\n");
    LOCK.store(false, Ordering::Release);
}

/// `println!` on the guest console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::line(format_args!($($arg)*)) };
}
