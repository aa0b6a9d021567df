//! Host configuration-space access: the [`ConfigAccess`] trait one host
//! segment implements (ECAM over MMIO in the hypervisor; later the DesignWare
//! iATU), the [`Delay`] resets wait with, and sub-dword helpers over them.
//!
//! The trait speaks whole dwords only, as the narrowest host mechanism does
//! (DesignWare, some ECAM quirks). A sub-dword write is then a
//! read-modify-write of the dword, which would write back a 1 into every
//! write-1-to-clear bit that reads 1 in the other bytes and clear it. The
//! write helpers therefore take the dword's RW1C mask and write those bits as
//! 0 outside the bytes being written (Linux's `pci_generic_config_write32`
//! warns about the same hazard).

use arch_emu::addr::Pa;
use vbus::Bdf;

/// Config space of the functions of one host segment, dword by dword.
///
/// `offset` is dword-aligned and below 4096; implementations may ignore the
/// low two bits. A read of a function that does not exist returns all ones
/// (PCI Express Base 6.0, 2.3.2: an Unsupported Request to a configuration
/// read completes with all ones at the Root Complex); a write to it is dropped.
pub trait ConfigAccess {
    /// Reads the dword at `offset` of function `bdf`.
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32;
    /// Writes the dword at `offset` of function `bdf`.
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);
}

/// Busy-waiting for the delays resets need.
pub trait Delay {
    /// Waits at least `us` microseconds.
    fn delay_us(&mut self, us: u32);
}

/// Memory accesses to an assigned function's host BARs (its MSI-X table and
/// the rest of a trapped page), by host physical address.
///
/// Callers pass only addresses inside the function's own memory BARs, as
/// the host decodes them ([`crate::layout::LayoutBar::cpu`]), with `size`
/// 1, 2, 4 or 8 and `pa` a multiple of `size` (naturally aligned, as Device
/// memory needs).
pub trait BarAccess {
    /// Reads `size` bytes at `pa`.
    fn bar_read(&mut self, pa: Pa, size: u8) -> u64;
    /// Writes the low `size` bytes of `value` at `pa`.
    fn bar_write(&mut self, pa: Pa, size: u8, value: u64);
}

impl<T: BarAccess + ?Sized> BarAccess for &mut T {
    fn bar_read(&mut self, pa: Pa, size: u8) -> u64 {
        (**self).bar_read(pa, size)
    }
    fn bar_write(&mut self, pa: Pa, size: u8, value: u64) {
        (**self).bar_write(pa, size, value)
    }
}

impl<T: ConfigAccess + ?Sized> ConfigAccess for &mut T {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        (**self).read32(bdf, offset)
    }
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        (**self).write32(bdf, offset, value)
    }
}

impl<T: Delay + ?Sized> Delay for &mut T {
    fn delay_us(&mut self, us: u32) {
        (**self).delay_us(us)
    }
}

/// The shift of byte `offset` within its dword, in bits.
const fn shift(offset: u16) -> u32 {
    8 * (offset as u32 & 3)
}

/// Reads the byte at `offset`.
pub fn read8<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf, offset: u16) -> u8 {
    (a.read32(bdf, offset & !3) >> shift(offset)) as u8
}

/// Reads the 16-bit register at `offset` (2-byte aligned; an odd offset reads
/// the byte pair within the dword, the upper byte 0 past its end).
pub fn read16<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf, offset: u16) -> u16 {
    (a.read32(bdf, offset & !3) >> shift(offset)) as u16
}

/// Writes `size` (1 or 2) bytes of `value` at `offset` by a read-modify-write
/// of the dword. `rw1c` is the dword's write-1-to-clear mask: those bits are
/// written 0 outside the bytes being written, so that the write clears no
/// status bit it was not meant to.
fn write_sub<A: ConfigAccess + ?Sized>(
    a: &mut A,
    bdf: Bdf,
    offset: u16,
    size: u8,
    value: u32,
    rw1c: u32,
) {
    let field: u32 = if size == 1 { 0xff } else { 0xffff };
    let mask = field.checked_shl(shift(offset)).unwrap_or(0);
    let cur = a.read32(bdf, offset & !3);
    let v = (cur & !mask & !rw1c) | ((value & field) << shift(offset) & mask);
    a.write32(bdf, offset & !3, v);
}

/// Writes the byte at `offset`; `rw1c` as for [`write16`].
pub fn write8<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf, offset: u16, value: u8, rw1c: u32) {
    write_sub(a, bdf, offset, 1, value.into(), rw1c)
}

/// Writes the 16-bit register at `offset` (2-byte aligned) by a
/// read-modify-write of its dword; `rw1c` is that dword's write-1-to-clear
/// mask (e.g. `(status::RW1C_ERRORS as u32) << 16` when writing Command).
pub fn write16<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf, offset: u16, value: u16, rw1c: u32) {
    write_sub(a, bdf, offset, 2, value.into(), rw1c)
}

/// Whether a function answers at `bdf` (its Vendor ID is not FFFFh; PCI
/// Express Base 6.0, 7.5.1.1.1).
pub fn present<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf) -> bool {
    read16(a, bdf, vbus::config::reg::VENDOR_ID) != 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One function's first 64 bytes, as dwords; every write recorded.
    struct Regs {
        dwords: [u32; 16],
        writes: alloc::vec::Vec<(u16, u32)>,
    }

    impl ConfigAccess for Regs {
        fn read32(&mut self, _: Bdf, offset: u16) -> u32 {
            self.dwords
                .get(usize::from(offset / 4))
                .copied()
                .unwrap_or(!0)
        }
        fn write32(&mut self, _: Bdf, offset: u16, value: u32) {
            self.writes.push((offset, value));
        }
    }

    fn regs() -> Regs {
        let mut dwords = [0; 16];
        dwords[0] = 0x10d3_8086; // Device 10d3, Vendor 8086
        dwords[1] = 0x4010_0406; // Status: Signaled System Error | Cap List; Command: MSE | BME | Interrupt Disable
        Regs {
            dwords,
            writes: alloc::vec::Vec::new(),
        }
    }

    fn bdf() -> Bdf {
        Bdf::new(1, 0, 0).unwrap()
    }

    #[test]
    fn read16_takes_the_upper_half_of_the_dword() {
        assert_eq!(read16(&mut regs(), bdf(), 2), 0x10d3);
    }

    #[test]
    fn read8_takes_its_byte() {
        assert_eq!(read8(&mut regs(), bdf(), 1), 0x80);
    }

    #[test]
    fn write16_to_command_writes_status_rw1c_bits_as_zero() {
        let mut r = regs();
        let rw1c = u32::from(vbus::config::status::RW1C_ERRORS) << 16;
        write16(&mut r, bdf(), 4, 0x0002, rw1c);
        // Status 0x0010 (Capabilities List kept, Signaled System Error not written 1), Command 0x0002.
        assert_eq!(r.writes, [(4, 0x0010_0002)]);
    }

    #[test]
    fn write8_keeps_the_other_bytes() {
        let mut r = regs();
        write8(&mut r, bdf(), 5, 0x04, 0);
        assert_eq!(r.writes, [(4, 0x4010_0406)]);
    }

    #[test]
    fn absent_function_is_not_present() {
        let mut r = regs();
        r.dwords[0] = !0;
        assert!(!present(&mut r, bdf()));
    }
}
