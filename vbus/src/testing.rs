//! Test helpers shared by the crates that place functions on a [`Segment`](crate::Segment):
//! a minimal bridge to put functions below.

use crate::config::ConfigSpace;
use crate::function::{BarInfo, Intx, PciFunction, Request};
use alloc::vec::Vec;

/// A minimal type-1 function (1b36:000c): Command (Memory Space, Bus
/// Master), bus numbers, the memory and 64-bit prefetchable windows and
/// Bridge Control's Secondary Bus Reset writable; INTA; no BARs.
pub struct TestBridge(ConfigSpace);

impl TestBridge {
    /// A bridge in its reset state.
    pub fn new() -> Self {
        let mut c = ConfigSpace::new();
        c.set_u32(0, 0x000c_1b36);
        c.set_u8(0x0e, 1);
        c.set_writable(0x04, 2, 0x0006);
        c.set_writable(0x18, 4, 0x00ff_ffff);
        c.set_writable(0x20, 4, 0xfff0_fff0);
        c.set_u32(0x24, 0x0001_0001);
        c.set_writable(0x24, 4, 0xfff0_fff0);
        c.set_writable(0x28, 4, 0xffff_ffff);
        c.set_writable(0x2c, 4, 0xffff_ffff);
        c.set_u8(0x3d, 1);
        c.set_writable(0x3e, 2, 0x0040);
        TestBridge(c)
    }
}

impl Default for TestBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for TestBridge {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.0.read(offset, size)
    }
    fn config_write(&mut self, offset: u16, size: u8, value: u32, _: &mut Vec<Request>) {
        self.0.write(offset, size, value);
    }
    fn config_space(&self) -> &ConfigSpace {
        &self.0
    }
    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        Some((self.0.raw(0x19, 1) as u8, self.0.raw(0x1a, 1) as u8))
    }
    fn bars(&self) -> &[BarInfo] {
        &[]
    }
    fn bar_read(&mut self, _: u8, _: u64, _: u8, _: &mut Vec<Request>) -> u64 {
        u64::MAX
    }
    fn bar_write(&mut self, _: u8, _: u64, _: u8, _: u64, _: &mut Vec<Request>) {}
    fn reset(&mut self) {
        *self = TestBridge::new();
    }
    fn intx(&self) -> Intx {
        Intx::None
    }
    fn poll(&mut self) {}
}
