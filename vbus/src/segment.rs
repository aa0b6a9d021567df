//! The `Segment`: a guest's synthetic PCI segment, its bus tree and ECAM routing.
//!
//! Bus 0 holds the functions placed on it (root ports). Each bridge on bus 0 may
//! have one function below it. Routing follows the bus numbers the guest
//! programmed into the bridges, as on hardware (PCI Express Base 7.2.2 and the
//! PCI-to-PCI Bridge Architecture 3.2.5.3): a configuration request for bus N
//! goes to the bridge whose secondary..=subordinate range holds N; when N is the
//! secondary bus it becomes a type-0 request to the device below, and a PCI
//! Express downstream port passes only device 0 (7.3.1: "Device Number 0 only").
//! Until the guest programs the bus numbers, nothing below a bridge is reachable.

use crate::addr::{Bdf, EcamAddress};
use crate::function::{Effect, Effects, PciFunction};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Counters of accesses that hardware would also have answered with all ones or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Accesses to an address with no function.
    pub absent: u64,
    /// Accesses outside the ECAM window's bus range.
    pub outside_window: u64,
    /// Accesses with a size other than 1, 2, 4 or 8 bytes.
    pub bad_size: u64,
}

struct Slot {
    dev: u8,
    func: u8,
    function: Box<dyn PciFunction>,
    child: Option<Box<dyn PciFunction>>,
}

/// Why a function could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyError {
    /// Something is already at that device/function on bus 0.
    Occupied(Bdf),
    /// The function to attach below is not a bridge.
    NotABridge(Bdf),
    /// Nothing is at that address on bus 0.
    NoSuchFunction(Bdf),
}

/// A synthetic PCI segment.
pub struct Segment {
    segment: u16,
    bus_count: u16,
    slots: Vec<Slot>,
    stats: SegmentStats,
}

/// Where a decoded ECAM address lands.
enum Target {
    Bus0(usize),
    Below(usize),
    None,
}

impl Segment {
    /// An empty segment whose ECAM window covers `bus_count` buses (1..=256) starting at bus 0.
    pub fn new(segment: u16, bus_count: u16) -> Self {
        Segment {
            segment,
            bus_count: bus_count.clamp(1, 256),
            slots: Vec::new(),
            stats: SegmentStats::default(),
        }
    }

    /// The segment (domain) number.
    pub fn number(&self) -> u16 {
        self.segment
    }

    /// The ECAM window size in bytes.
    pub fn ecam_size(&self) -> u64 {
        u64::from(self.bus_count) << 20
    }

    /// Counters of bad or unanswered accesses.
    pub fn stats(&self) -> SegmentStats {
        self.stats
    }

    /// Places `function` on bus 0 at `dev`.`func`.
    pub fn add_bus0(
        &mut self,
        dev: u8,
        func: u8,
        function: Box<dyn PciFunction>,
    ) -> Result<Bdf, TopologyError> {
        let bdf = Bdf::new(0, dev, func).map_err(|_| {
            TopologyError::NoSuchFunction(Bdf::from_routing_id(u16::from(dev & 31) << 3))
        })?;
        if self.slots.iter().any(|s| s.dev == dev && s.func == func) {
            return Err(TopologyError::Occupied(bdf));
        }
        self.slots.push(Slot {
            dev,
            func,
            function,
            child: None,
        });
        Ok(bdf)
    }

    /// Attaches `function` as device 0 below the bridge at bus 0 `dev`.`func`.
    pub fn attach_below(
        &mut self,
        dev: u8,
        func: u8,
        function: Box<dyn PciFunction>,
    ) -> Result<(), TopologyError> {
        let bdf = Bdf::new(0, dev, func).map_err(|_| {
            TopologyError::NoSuchFunction(Bdf::from_routing_id(u16::from(dev & 31) << 3))
        })?;
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.dev == dev && s.func == func)
            .ok_or(TopologyError::NoSuchFunction(bdf))?;
        if slot.function.bridge_bus_range().is_none() {
            return Err(TopologyError::NotABridge(bdf));
        }
        if slot.child.is_some() {
            return Err(TopologyError::Occupied(bdf));
        }
        slot.child = Some(function);
        Ok(())
    }

    fn route(&self, a: &EcamAddress) -> Target {
        if a.bus_offset == 0 {
            return self
                .slots
                .iter()
                .position(|s| s.dev == a.dev && s.func == a.func)
                .map_or(Target::None, Target::Bus0);
        }
        for (i, s) in self.slots.iter().enumerate() {
            let Some((secondary, subordinate)) = s.function.bridge_bus_range() else {
                continue;
            };
            // A secondary bus of 0 is unprogrammed: it never claims a request.
            if secondary == 0 || a.bus_offset < secondary || a.bus_offset > subordinate {
                continue;
            }
            if a.bus_offset == secondary && a.dev == 0 && a.func == 0 && s.child.is_some() {
                return Target::Below(i);
            }
            return Target::None;
        }
        Target::None
    }

    fn bdf_of(a: &EcamAddress) -> Bdf {
        Bdf::from_routing_id(
            (u16::from(a.bus_offset) << 8) | (u16::from(a.dev) << 3) | u16::from(a.func),
        )
    }

    fn function_mut(&mut self, t: &Target) -> Option<&mut Box<dyn PciFunction>> {
        match *t {
            Target::Bus0(i) => self.slots.get_mut(i).map(|s| &mut s.function),
            Target::Below(i) => self.slots.get_mut(i).and_then(|s| s.child.as_mut()),
            Target::None => None,
        }
    }

    fn decode(&mut self, offset: u64) -> Option<EcamAddress> {
        if offset >= self.ecam_size() {
            self.stats.outside_window += 1;
            return None;
        }
        EcamAddress::decode(offset)
    }

    /// One access of 1, 2 or 4 bytes that stays within a dword.
    fn read_within_dword(&mut self, offset: u64, size: u8) -> u32 {
        let all_ones = if size == 4 {
            u32::MAX
        } else {
            (1u32 << (8 * u32::from(size))) - 1
        };
        let Some(a) = self.decode(offset) else {
            return all_ones;
        };
        let t = self.route(&a);
        match self.function_mut(&t) {
            Some(f) => f.config_read(a.register, size),
            None => {
                self.stats.absent += 1;
                all_ones
            }
        }
    }

    fn write_within_dword(&mut self, offset: u64, size: u8, value: u32, out: &mut Effects) {
        let Some(a) = self.decode(offset) else {
            return;
        };
        let t = self.route(&a);
        let bdf = Self::bdf_of(&a);
        let mut effects: Vec<Effect> = Vec::new();
        match self.function_mut(&t) {
            Some(f) => f.config_write(a.register, size, value, &mut effects),
            None => self.stats.absent += 1,
        }
        for e in effects {
            out.push(bdf, e);
        }
    }

    /// A guest read of `size` bytes at `offset` in the ECAM window.
    ///
    /// 1-, 2- and 4-byte accesses inside one dword go to the function as they are;
    /// an aligned 8-byte access is two dword accesses (low first); anything that
    /// straddles a dword is split into byte accesses. Other sizes read all ones.
    pub fn ecam_read(&mut self, offset: u64, size: u8) -> u64 {
        match size {
            1 | 2 | 4 if (offset & 3) + u64::from(size) <= 4 => {
                u64::from(self.read_within_dword(offset, size))
            }
            8 if offset & 3 == 0 => {
                let lo = self.read_within_dword(offset, 4);
                let hi = self.read_within_dword(offset.saturating_add(4), 4);
                u64::from(lo) | (u64::from(hi) << 32)
            }
            2 | 4 | 8 => (0..u64::from(size)).fold(0, |v, i| {
                v | u64::from(self.read_within_dword(offset.saturating_add(i), 1)) << (8 * i)
            }),
            _ => {
                self.stats.bad_size += 1;
                u64::MAX
            }
        }
    }

    /// A guest write of `size` bytes at `offset` in the ECAM window; split as [`Segment::ecam_read`].
    pub fn ecam_write(&mut self, offset: u64, size: u8, value: u64) -> Effects {
        let mut out = Effects::new();
        match size {
            1 | 2 | 4 if (offset & 3) + u64::from(size) <= 4 => {
                self.write_within_dword(offset, size, value as u32, &mut out)
            }
            8 if offset & 3 == 0 => {
                self.write_within_dword(offset, 4, value as u32, &mut out);
                self.write_within_dword(
                    offset.saturating_add(4),
                    4,
                    (value >> 32) as u32,
                    &mut out,
                );
            }
            2 | 4 | 8 => {
                for i in 0..u64::from(size) {
                    let byte = (value >> (8 * i)) as u32 & 0xff;
                    self.write_within_dword(offset.saturating_add(i), 1, byte, &mut out);
                }
            }
            _ => self.stats.bad_size += 1,
        }
        out
    }

    /// Every function the guest can reach now, with its address, in bus order:
    /// exactly the functions a configuration read would reach (a device below a
    /// bridge whose bus numbers are unprogrammed, inconsistent, outside the ECAM
    /// window or shadowed by another bridge is not listed).
    pub fn enumerate(&self) -> Vec<(Bdf, &dyn PciFunction)> {
        let mut v: Vec<(Bdf, &dyn PciFunction)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Ok(bdf) = Bdf::new(0, s.dev, s.func) {
                v.push((bdf, s.function.as_ref()));
            }
            let (Some((secondary, _)), Some(child)) = (s.function.bridge_bus_range(), &s.child)
            else {
                continue;
            };
            let probe = EcamAddress {
                bus_offset: secondary,
                dev: 0,
                func: 0,
                register: 0,
            };
            let in_window = u16::from(secondary) < self.bus_count;
            if in_window && matches!(self.route(&probe), Target::Below(j) if j == i) {
                if let Ok(bdf) = Bdf::new(secondary, 0, 0) {
                    v.push((bdf, child.as_ref()));
                }
            }
        }
        v.sort_by_key(|(b, _)| *b);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSpace;

    /// A minimal bridge: bus numbers at 0x18..0x1a writable, IDs read-only.
    struct TestBridge(ConfigSpace);
    impl TestBridge {
        fn new() -> Self {
            let mut c = ConfigSpace::new();
            c.set_u32(0, 0x000c_1b36);
            c.set_u8(0x0e, 1);
            c.set_writable(0x18, 4, 0x00ff_ffff);
            TestBridge(c)
        }
    }
    impl PciFunction for TestBridge {
        fn config_read(&mut self, offset: u16, size: u8) -> u32 {
            self.0.read(offset, size)
        }
        fn config_write(&mut self, offset: u16, size: u8, value: u32, effects: &mut Vec<Effect>) {
            let before = self.0.raw(0x18, 4);
            self.0.write(offset, size, value);
            let after = self.0.raw(0x18, 4);
            if before != after {
                effects.push(Effect::BusNumbers {
                    primary: after as u8,
                    secondary: (after >> 8) as u8,
                    subordinate: (after >> 16) as u8,
                });
            }
        }
        fn bridge_bus_range(&self) -> Option<(u8, u8)> {
            Some((self.0.raw(0x19, 1) as u8, self.0.raw(0x1a, 1) as u8))
        }
        fn config_space(&self) -> &ConfigSpace {
            &self.0
        }
    }

    struct TestEndpoint(ConfigSpace);
    impl PciFunction for TestEndpoint {
        fn config_read(&mut self, offset: u16, size: u8) -> u32 {
            self.0.read(offset, size)
        }
        fn config_write(&mut self, offset: u16, size: u8, value: u32, _: &mut Vec<Effect>) {
            self.0.write(offset, size, value)
        }
        fn bridge_bus_range(&self) -> Option<(u8, u8)> {
            None
        }
        fn config_space(&self) -> &ConfigSpace {
            &self.0
        }
    }

    fn endpoint() -> Box<TestEndpoint> {
        let mut c = ConfigSpace::new();
        c.set_u32(0, 0x10d3_8086);
        Box::new(TestEndpoint(c))
    }

    fn ecam(bus: u64, dev: u64, func: u64, reg: u64) -> u64 {
        (bus << 20) | (dev << 15) | (func << 12) | reg
    }

    fn segment() -> Segment {
        let mut s = Segment::new(1, 16);
        s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
        s.attach_below(1, 0, endpoint()).unwrap();
        s
    }

    #[test]
    fn absent_function_reads_all_ones_and_is_counted() {
        let mut s = segment();
        assert_eq!(s.ecam_read(ecam(0, 5, 0, 0), 2), 0xffff);
        assert_eq!(s.ecam_read(ecam(0, 5, 0, 0), 4), 0xffff_ffff);
        assert_eq!(s.stats().absent, 2);
    }

    #[test]
    fn device_below_port_is_unreachable_until_bus_numbers_are_programmed() {
        let mut s = segment();
        assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0xffff_ffff);
        let fx = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
        assert_eq!(fx.len(), 1);
        assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0x10d3_8086);
    }

    #[test]
    fn only_device_0_is_decoded_below_a_downstream_port() {
        let mut s = segment();
        s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0002_0100);
        assert_eq!(s.ecam_read(ecam(1, 1, 0, 0), 4), 0xffff_ffff);
        assert_eq!(s.ecam_read(ecam(2, 0, 0, 0), 4), 0xffff_ffff);
    }

    #[test]
    fn reprogrammed_secondary_bus_moves_the_device() {
        let mut s = segment();
        s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
        s.ecam_write(ecam(0, 1, 0, 0x19), 2, 0x0505);
        assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0xffff_ffff);
        assert_eq!(s.ecam_read(ecam(5, 0, 0, 0), 2), 0x8086);
    }

    #[test]
    fn effects_are_tagged_with_the_writer_address() {
        let mut s = segment();
        let fx = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
        let (bdf, e) = fx.iter().next().copied().unwrap();
        assert_eq!(bdf, Bdf::new(0, 1, 0).unwrap());
        assert_eq!(
            e,
            Effect::BusNumbers {
                primary: 0,
                secondary: 1,
                subordinate: 1
            }
        );
    }

    #[test]
    fn eight_byte_read_is_two_dwords_low_first() {
        let mut s = segment();
        s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
        let v = s.ecam_read(ecam(0, 1, 0, 0x18), 8);
        assert_eq!(v & 0xffff_ffff, 0x0001_0100);
        assert_eq!(s.ecam_read(ecam(0, 1, 0, 0), 8) & 0xffff_ffff, 0x000c_1b36);
    }

    #[test]
    fn straddling_access_is_split_into_bytes() {
        let mut s = segment();
        // Bytes 0x03..0x06 of the bridge: device ID high byte, then command/status (0).
        assert_eq!(s.ecam_read(ecam(0, 1, 0, 3), 4), 0x0000_0000);
        assert_eq!(s.ecam_read(ecam(0, 1, 0, 1), 2), 0x0c1b);
        assert_eq!(s.ecam_read(ecam(0, 1, 0, 3), 2), 0x0000);
        s.ecam_write(ecam(0, 1, 0, 0x17), 4, 0x0003_0200);
        assert_eq!(s.ecam_read(ecam(0, 1, 0, 0x18), 4), 0x0000_0302);
    }

    #[test]
    fn bad_size_reads_all_ones_and_is_counted() {
        let mut s = segment();
        assert_eq!(s.ecam_read(0, 3), u64::MAX);
        assert!(s.ecam_write(0, 16, 0).is_empty());
        assert_eq!(s.stats().bad_size, 2);
    }

    #[test]
    fn access_past_the_window_is_all_ones() {
        let mut s = segment();
        assert_eq!(s.ecam_read(16 << 20, 4), 0xffff_ffff);
        assert_eq!(s.ecam_read(u64::MAX - 2, 8), u64::MAX);
        assert!(s.stats().outside_window >= 1);
    }

    #[test]
    fn attaching_below_an_endpoint_is_refused() {
        let mut s = Segment::new(0, 4);
        s.add_bus0(2, 0, endpoint()).unwrap();
        assert_eq!(
            s.attach_below(2, 0, endpoint()),
            Err(TopologyError::NotABridge(Bdf::new(0, 2, 0).unwrap()))
        );
    }

    #[test]
    fn enumerate_leaves_out_a_device_behind_inconsistent_bus_numbers() {
        let mut s = segment();
        s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0000_0200);
        assert_eq!(s.ecam_read(ecam(2, 0, 0, 0), 4), 0xffff_ffff);
        assert_eq!(s.enumerate().len(), 1);
    }

    #[test]
    fn enumerate_lists_reachable_functions_in_bus_order() {
        let mut s = segment();
        assert_eq!(s.enumerate().len(), 1);
        s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
        let list: Vec<Bdf> = s.enumerate().into_iter().map(|(b, _)| b).collect();
        assert_eq!(
            list,
            [Bdf::new(0, 1, 0).unwrap(), Bdf::new(1, 0, 0).unwrap()]
        );
    }

    proptest::proptest! {
        #[test]
        fn random_accesses_never_panic(ops in proptest::collection::vec((proptest::prelude::any::<u64>(), 0u8..10, proptest::prelude::any::<u64>(), proptest::prelude::any::<bool>()), 0..300)) {
            let mut s = segment();
            for (off, size, val, w) in ops {
                let off = off % (20 << 20);
                if w { s.ecam_write(off, size, val); } else { s.ecam_read(off, size); }
            }
        }
    }
}
