//! Random guest behaviour never panics (proptest): random guest memory under
//! a live queue, random register writes through BAR 0 and config space.

use super::pci::{dev_with, FEATURES, RAM};
use crate::blk::RamDisk;
use crate::memory::GuestMemory;
use crate::testing::{driver_init, notify};
use arch_emu::addr::Ipa;
use proptest::prelude::*;
use vbus::PciFunction;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_guest_memory_under_a_live_queue_never_panics(
        junk in proptest::collection::vec(any::<u8>(), 0x1000),
        at in 0u64..0x3000,
    ) {
        let (mut d, mem, mock) = dev_with(RamDisk::new(1 << 16).deferred());
        driver_init(&mut d, &mock, FEATURES | crate::blk::feature::DISCARD | crate::blk::feature::WRITE_ZEROES);
        mem.write(Ipa(RAM.0 + at), &junk).unwrap();
        notify(&mut d, 0);
        d.poll();
        notify(&mut d, 0);
        prop_assert!(d.device().in_flight() <= 16);
    }

    #[test]
    fn random_register_accesses_never_panic(
        ops in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..0x4010, 0u8..9, any::<u64>()), 1..200),
    ) {
        let (mut d, _mem, mock) = dev_with(RamDisk::new(1 << 16));
        driver_init(&mut d, &mock, FEATURES);
        let mut rq = alloc::vec::Vec::new();
        for (cfg, write, off, size, v) in ops {
            match (cfg, write) {
                (true, true) => d.config_write((off & 0xfff) as u16, size, v as u32, &mut rq),
                (true, false) => { d.config_read((off & 0xfff) as u16, size); }
                (false, true) => d.bar_write(0, off, size, v, &mut rq),
                (false, false) => { d.bar_read(0, off, size, &mut rq); }
            }
        }
    }
}
