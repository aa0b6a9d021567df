//! A type-0 endpoint with trapped memory BARs, for building topologies in tests.
//!
//! BAR semantics follow PCI Local Bus 3.0, 6.2.5.1: address bits below the
//! BAR's size and the type bits are read-only, so writing all ones reads back
//! the size mask; a 64-bit BAR's upper dword is fully writable (sizes up to
//! 2 GiB here). Only memory BARs exist: guests get no I/O space. Decoding is
//! the segment's business; the BARs' memory is a small scratch store that
//! reads back what was written (0 elsewhere), so routing can be observed.

use crate::config::{command, reg, ConfigSpace};
use crate::function::{BarBacking, BarInfo, Intx, PciFunction, Request};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// One memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarProfile {
    /// BAR index 0..=5 (a 64-bit BAR takes `index` and `index + 1`).
    pub index: u8,
    /// Size in bytes: a power of two in 16 ..= 2 GiB.
    pub size: u64,
    /// A 64-bit BAR.
    pub is_64bit: bool,
    /// Prefetchable.
    pub prefetchable: bool,
}

/// Most distinct BAR words the scratch store keeps (later writes to new
/// offsets are dropped): a guest cannot grow it without bound.
const SCRATCH_WORDS: usize = 1024;

/// A type-0 function with IDs, a class code and trapped memory BARs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    cs: ConfigSpace,
    bars: Vec<BarInfo>,
    scratch: BTreeMap<(u8, u64), u64>,
}

impl Endpoint {
    /// An endpoint; BARs that are invalid or do not fit the header are left out.
    pub fn new(vendor: u16, device: u16, class: u32, bars: &[BarProfile]) -> Self {
        let mut cs = ConfigSpace::new();
        cs.set_u16(reg::VENDOR_ID, vendor);
        cs.set_u16(reg::DEVICE_ID, device);
        cs.set_u32(0x08, (class & 0x00ff_ffff) << 8);
        cs.set_writable(
            reg::COMMAND,
            2,
            u32::from(command::MEMORY_SPACE | command::BUS_MASTER | command::INTERRUPT_DISABLE),
        );
        let mut kept: Vec<BarInfo> = Vec::new();
        for bar in bars {
            let last = bar.index + u8::from(bar.is_64bit);
            let taken = kept
                .iter()
                .any(|b| b.index <= last && bar.index <= b.index + u8::from(b.is_64bit));
            if last > 5
                || taken
                || !bar.size.is_power_of_two()
                || !(16..=1 << 31).contains(&bar.size)
            {
                continue;
            }
            let off = reg::BAR0 + 4 * u16::from(bar.index);
            let flags =
                if bar.is_64bit { 0b100 } else { 0 } | if bar.prefetchable { 0b1000 } else { 0 };
            cs.set_u32(off, flags);
            cs.set_writable(off, 4, !(bar.size as u32 - 1) & !0xf);
            if bar.is_64bit {
                cs.set_writable(off + 4, 4, 0xffff_ffff);
            }
            kept.push(BarInfo {
                index: bar.index,
                size: bar.size,
                is_64bit: bar.is_64bit,
                prefetchable: bar.prefetchable,
                backing: BarBacking::Trapped,
            });
        }
        cs.set_writable(reg::INTERRUPT_LINE, 1, 0xff);
        cs.set_u8(reg::INTERRUPT_PIN, 1);
        Endpoint {
            cs,
            bars: kept,
            scratch: BTreeMap::new(),
        }
    }

    /// The address a BAR holds now.
    pub fn bar_address(&self, bar: &BarInfo) -> u64 {
        crate::decode::bar_address(&self.cs, bar.index, bar.is_64bit)
    }
}

impl PciFunction for Endpoint {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.cs.read(offset, size)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32, _: &mut Vec<Request>) {
        self.cs.write(offset, size, value);
    }

    fn config_space(&self) -> &ConfigSpace {
        &self.cs
    }

    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        None
    }

    fn bars(&self) -> &[BarInfo] {
        &self.bars
    }

    fn bar_read(&mut self, bar: u8, offset: u64, _size: u8, _: &mut Vec<Request>) -> u64 {
        self.scratch.get(&(bar, offset)).copied().unwrap_or(0)
    }

    fn bar_write(&mut self, bar: u8, offset: u64, _size: u8, value: u64, _: &mut Vec<Request>) {
        if self.scratch.len() < SCRATCH_WORDS || self.scratch.contains_key(&(bar, offset)) {
            self.scratch.insert((bar, offset), value);
        }
    }

    fn reset(&mut self) {
        let bars: Vec<BarProfile> = self
            .bars
            .iter()
            .map(|b| BarProfile {
                index: b.index,
                size: b.size,
                is_64bit: b.is_64bit,
                prefetchable: b.prefetchable,
            })
            .collect();
        let class = self.cs.raw(0x08, 4) >> 8;
        *self = Endpoint::new(
            self.cs.raw(reg::VENDOR_ID, 2) as u16,
            self.cs.raw(reg::DEVICE_ID, 2) as u16,
            class,
            &bars,
        );
    }

    fn intx(&self) -> Intx {
        Intx::None
    }

    fn poll(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic() -> Endpoint {
        Endpoint::new(
            0x8086,
            0x10d3,
            0x020000,
            &[
                BarProfile {
                    index: 0,
                    size: 0x2_0000,
                    is_64bit: false,
                    prefetchable: false,
                },
                BarProfile {
                    index: 2,
                    size: 0x4000,
                    is_64bit: true,
                    prefetchable: true,
                },
            ],
        )
    }

    #[test]
    fn all_ones_reads_back_the_size_mask_and_type_bits() {
        let mut e = nic();
        let mut fx = Vec::new();
        e.config_write(0x10, 4, 0xffff_ffff, &mut fx);
        assert_eq!(e.config_read(0x10, 4), 0xfffe_0000);
        e.config_write(0x18, 4, 0xffff_ffff, &mut fx);
        assert_eq!(e.config_read(0x18, 4), 0xffff_c00c);
        e.config_write(0x1c, 4, 0xffff_ffff, &mut fx);
        assert_eq!(e.config_read(0x1c, 4), 0xffff_ffff);
    }

    #[test]
    fn unimplemented_bar_reads_zero() {
        let mut e = nic();
        let mut fx = Vec::new();
        e.config_write(0x14, 4, 0xffff_ffff, &mut fx);
        assert_eq!(e.config_read(0x14, 4), 0);
    }

    #[test]
    fn overlapping_or_oversized_bars_are_left_out() {
        let e = Endpoint::new(
            1,
            2,
            0,
            &[
                BarProfile {
                    index: 0,
                    size: 0x1000,
                    is_64bit: true,
                    prefetchable: false,
                },
                BarProfile {
                    index: 1,
                    size: 0x1000,
                    is_64bit: false,
                    prefetchable: false,
                },
                BarProfile {
                    index: 5,
                    size: 0x1000,
                    is_64bit: true,
                    prefetchable: false,
                },
                BarProfile {
                    index: 2,
                    size: 3000,
                    is_64bit: false,
                    prefetchable: false,
                },
            ],
        );
        assert_eq!(e.bars().len(), 1);
    }

    #[test]
    fn bar_memory_reads_back_what_was_written() {
        let mut e = nic();
        let mut rq = Vec::new();
        e.bar_write(2, 0x40, 4, 0xdead_beef, &mut rq);
        assert_eq!(e.bar_read(2, 0x40, 4, &mut rq), 0xdead_beef);
        assert_eq!(e.bar_read(0, 0x40, 4, &mut rq), 0);
    }

    #[test]
    fn reset_clears_bars_and_command() {
        let mut e = nic();
        let mut rq = Vec::new();
        e.config_write(0x10, 4, 0x1000_0000, &mut rq);
        e.config_write(0x04, 2, 0x0006, &mut rq);
        e.reset();
        assert_eq!(e.config_read(0x10, 4), 0);
        assert_eq!(e.config_read(0x04, 2), 0);
        assert_eq!(e.config_read(0x00, 4), 0x10d3_8086);
    }
}
