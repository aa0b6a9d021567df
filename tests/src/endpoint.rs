//! Test-support endpoints: `vbus::Endpoint` with a serde-readable BAR profile
//! for scenario files, and a class code chosen from the vendor/device pair.

use serde::Deserialize;

/// One memory BAR, as scenario files write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

impl From<BarProfile> for vbus::BarProfile {
    fn from(b: BarProfile) -> Self {
        vbus::BarProfile {
            index: b.index,
            size: b.size,
            is_64bit: b.is_64bit,
            prefetchable: b.prefetchable,
        }
    }
}

/// The endpoint type the suite builds topologies with.
pub struct Endpoint;

impl Endpoint {
    /// A `vbus::Endpoint` with these IDs and BARs; virtio devices (vendor 1af4)
    /// get the mass-storage class, others the Ethernet class.
    #[allow(clippy::new_ret_no_self, reason = "a constructor of the vbus type")]
    pub fn new(vendor: u16, device: u16, bars: &[BarProfile]) -> vbus::Endpoint {
        let class = if vendor == 0x1af4 {
            0x01_80_00
        } else {
            0x02_00_00
        };
        let bars: Vec<vbus::BarProfile> = bars.iter().map(|&b| b.into()).collect();
        vbus::Endpoint::new(vendor, device, class, &bars)
    }
}
