//! A type-0 endpoint with configurable IDs and memory BARs, implementing
//! `vbus::PciFunction`, so topologies can be built without a real device model.
//!
//! BAR semantics follow PCI Local Bus 6.2.5.1: the address bits below the BAR's
//! size and the type bits are read-only, so writing all ones reads back the size
//! mask; a 64-bit BAR's upper dword is fully writable (sizes below 4 GiB).

use vbus::config::{command, reg};
use vbus::{ConfigSpace, Effect, PciFunction};

/// One memory BAR of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct BarProfile {
    /// BAR index 0..=5 (a 64-bit BAR takes index and index + 1).
    pub index: u8,
    /// Size in bytes: a power of two, 16 ..= 2 GiB.
    pub size: u64,
    /// 64-bit BAR.
    #[serde(default)]
    pub is_64bit: bool,
    /// Prefetchable.
    #[serde(default)]
    pub prefetchable: bool,
}

/// A test endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    cs: ConfigSpace,
}

impl Endpoint {
    /// An endpoint with these IDs and BARs; BARs that do not fit the header are skipped.
    pub fn new(vendor: u16, device: u16, bars: &[BarProfile]) -> Self {
        let mut cs = ConfigSpace::new();
        cs.set_u16(reg::VENDOR_ID, vendor);
        cs.set_u16(reg::DEVICE_ID, device);
        cs.set_writable(
            reg::COMMAND,
            2,
            u32::from(command::MEMORY_SPACE | command::BUS_MASTER | command::INTERRUPT_DISABLE),
        );
        cs.set_u8(0x0b, 0x02); // network controller
        for bar in bars {
            let last = bar.index + u8::from(bar.is_64bit);
            if last > 5 || !bar.size.is_power_of_two() || bar.size < 16 || bar.size > 1 << 31 {
                continue;
            }
            let off = reg::BAR0 + 4 * u16::from(bar.index);
            let flags = (if bar.is_64bit { 0b100 } else { 0 })
                | (if bar.prefetchable { 0b1000 } else { 0 });
            cs.set_u32(off, flags);
            cs.set_writable(off, 4, !(bar.size as u32 - 1) & !0xf);
            if bar.is_64bit {
                cs.set_writable(off + 4, 4, 0xffff_ffff);
            }
        }
        cs.set_writable(reg::INTERRUPT_LINE, 1, 0xff);
        cs.set_u8(reg::INTERRUPT_PIN, 1);
        Endpoint { cs }
    }
}

impl PciFunction for Endpoint {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.cs.read(offset, size)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32, effects: &mut Vec<Effect>) {
        let cmd = self.cs.raw(reg::COMMAND, 2) as u16;
        self.cs.write(offset, size, value);
        let new = self.cs.raw(reg::COMMAND, 2) as u16;
        if (new ^ cmd) & command::MEMORY_SPACE != 0 {
            effects.push(Effect::MemoryDecode {
                enabled: new & command::MEMORY_SPACE != 0,
            });
        }
    }

    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        None
    }

    fn config_space(&self) -> &ConfigSpace {
        &self.cs
    }
}
