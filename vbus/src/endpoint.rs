//! The BAR model and a type-0 endpoint built on it.
//!
//! BAR semantics follow PCI Local Bus 6.2.5.1: address bits below the BAR's size
//! and the type bits are read-only, so writing all ones reads back the size mask;
//! a 64-bit BAR's upper dword is fully writable (sizes up to 2 GiB here). Only
//! memory BARs exist: guests get no I/O space. While Memory Space decoding is on,
//! a BAR write that changes its address produces [`Effect::BarMoved`]; toggling
//! decoding produces [`Effect::MemoryDecode`]. The owner maps and unmaps.

use crate::config::{command, reg, ConfigSpace};
use crate::function::{Effect, PciFunction};
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

/// A type-0 function with IDs, a class code and memory BARs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    cs: ConfigSpace,
    bars: Vec<BarProfile>,
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
        let mut kept = Vec::new();
        for bar in bars {
            let last = bar.index + u8::from(bar.is_64bit);
            let taken = kept.iter().any(|b: &BarProfile| {
                b.index <= last && bar.index <= b.index + u8::from(b.is_64bit)
            });
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
            kept.push(*bar);
        }
        cs.set_writable(reg::INTERRUPT_LINE, 1, 0xff);
        cs.set_u8(reg::INTERRUPT_PIN, 1);
        Endpoint { cs, bars: kept }
    }

    /// The BARs this endpoint implements.
    pub fn bars(&self) -> &[BarProfile] {
        &self.bars
    }

    /// The address a BAR decodes now.
    pub fn bar_address(&self, bar: &BarProfile) -> u64 {
        let off = reg::BAR0 + 4 * u16::from(bar.index);
        let lo = u64::from(self.cs.raw(off, 4) & !0xf);
        let hi = if bar.is_64bit {
            u64::from(self.cs.raw(off + 4, 4))
        } else {
            0
        };
        lo | hi << 32
    }

    fn decoding(&self) -> bool {
        self.cs.raw(reg::COMMAND, 2) as u16 & command::MEMORY_SPACE != 0
    }
}

impl PciFunction for Endpoint {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.cs.read(offset, size)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32, effects: &mut Vec<Effect>) {
        let was_decoding = self.decoding();
        let before: Vec<u64> = self.bars.iter().map(|b| self.bar_address(b)).collect();
        self.cs.write(offset, size, value);
        let decoding = self.decoding();
        if decoding != was_decoding {
            effects.push(Effect::MemoryDecode { enabled: decoding });
        }
        if decoding && was_decoding {
            for (bar, old) in self.bars.iter().zip(before) {
                let new = self.bar_address(bar);
                if new != old {
                    effects.push(Effect::BarMoved {
                        bar: bar.index,
                        old,
                        new,
                        len: bar.size,
                    });
                }
            }
        }
    }

    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        None
    }

    fn config_space(&self) -> &ConfigSpace {
        &self.cs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

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
    fn moving_a_decoding_bar_reports_old_and_new() {
        let mut e = nic();
        let mut fx = Vec::new();
        e.config_write(0x10, 4, 0x1000_0000, &mut fx);
        e.config_write(0x04, 2, 0x0002, &mut fx);
        assert_eq!(fx, vec![Effect::MemoryDecode { enabled: true }]);
        fx.clear();
        e.config_write(0x10, 4, 0x1004_0000, &mut fx);
        assert_eq!(
            fx,
            vec![Effect::BarMoved {
                bar: 0,
                old: 0x1000_0000,
                new: 0x1004_0000,
                len: 0x2_0000
            }]
        );
    }

    #[test]
    fn bar_write_without_decoding_has_no_effect() {
        let mut e = nic();
        let mut fx = Vec::new();
        e.config_write(0x18, 4, 0x1000_0000, &mut fx);
        e.config_write(0x1c, 4, 0x80, &mut fx);
        assert!(fx.is_empty());
        assert_eq!(e.bar_address(&e.bars()[1]), 0x80_1000_0000);
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
}
