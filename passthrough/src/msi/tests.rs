use crate::testing::{
    assigned_e1000e, assigned_e1000e_msi, assigned_msi_of, FakeFunction, FakeHost, TEST_DOORBELL,
    TEST_GUEST_DOORBELL,
};
use crate::{AssignedFunction, ConfigAccess, EventIds};

use alloc::vec::Vec;
use vbus::{MsiCapabilityStats, MsiMessage, PciFunction, Request};

type F = AssignedFunction<FakeHost>;

/// The e1000e's MSI capability (D0h: 64-bit, one vector, no masking) and
/// MSI-X's (A0h), as testing.rs builds them.
const CAP: u16 = 0xd0;
const MSIX_CAP: u16 = 0xa0;
/// Where [`FakeFunction::e1000e_with_msi`] puts a capability with Mask
/// Bits, which would not fit at D0h below the PCI Express capability (E0h).
const FREE: u16 = 0x50;
/// Where the e1000e's MSI EventIDs start: after MSI-X's 5 vectors.
const BASE: u32 = 5;

fn cfg(f: &mut F, off: u16, size: u8, v: u32) -> Vec<Request> {
    let mut r = Vec::new();
    f.config_write(off, size, v, &mut r);
    r
}

fn taken(f: &mut F) -> Vec<MsiMessage> {
    let mut out = Vec::new();
    f.take_msi(&mut out);
    out
}

/// The host device's dword at `off`.
fn host32(f: &mut F, off: u16) -> u32 {
    let bdf = f.layout().bdf;
    f.host_mut().read32(bdf, off)
}

fn stats(f: &F) -> MsiCapabilityStats {
    f.msi_capability_stats().unwrap()
}

/// Linux's `msi_capability_init` with `__pci_write_msi_msg` for a 64-bit
/// capability at `cap`: MSI Enable off, the message (Message Control's
/// Multiple Message Enable, address low and high as dwords, data as a
/// word), Interrupt Disable in Command, then MSI Enable on.
fn linux_enable(f: &mut F, cap: u16, mme: u16, address: u64, data: u16) {
    let c = f.config_read(cap + 2, 2) as u16;
    cfg(f, cap + 2, 2, u32::from(c & !1));
    let c = f.config_read(cap + 2, 2) as u16;
    cfg(f, cap + 2, 2, u32::from(c & !0x70 | mme << 4));
    cfg(f, cap + 4, 4, address as u32);
    cfg(f, cap + 8, 4, (address >> 32) as u32);
    cfg(f, cap + 12, 2, u32::from(data));
    let cmd = f.config_read(0x04, 2);
    cfg(f, 0x04, 2, cmd | 0x0400 | 0x0006);
    let c = f.config_read(cap + 2, 2);
    cfg(f, cap + 2, 2, c | 1);
}

/// The device's MSI Enable and Multiple Message Enable.
fn device_control(f: &mut F, cap: u16) -> (bool, u32) {
    let c = host32(f, cap) >> 16;
    (c & 1 != 0, (c >> 4) & 7)
}

#[test]
fn event_ids_put_msi_after_msix_aligned_to_its_vector_count() {
    let e1000e = assigned_e1000e().layout().clone();
    assert_eq!(
        EventIds::of(&e1000e),
        EventIds {
            msix: 5,
            msi_base: 5,
            msi: 1
        }
    );
    let four = FakeFunction::e1000e_with_msi(CAP, 2, true, false);
    let f = assigned_msi_of(four);
    assert_eq!(
        f.events(),
        EventIds {
            msix: 5,
            msi_base: 8,
            msi: 4
        }
    );
    assert_eq!(f.events().total(), 12);
}

#[test]
fn the_guest_sees_msi_disabled_with_the_devices_capabilities_and_a_zero_message() {
    let mut f = assigned_e1000e_msi();
    // 64 Bit Address Capable, Multiple Message Capable 0, MSI Enable 0.
    assert_eq!(f.config_read(CAP + 2, 2), 0x0080);
    for off in [4, 8, 12] {
        assert_eq!(f.config_read(CAP + off, 4), 0, "offset {off:#x}");
    }
    assert_eq!(f.msi_vectors(), Some(1));
}

#[test]
fn the_device_holds_the_host_doorbell_and_its_first_event_id_with_msi_disabled() {
    let mut f = assigned_e1000e_msi();
    assert_eq!(host32(&mut f, CAP + 4), TEST_DOORBELL as u32);
    assert_eq!(host32(&mut f, CAP + 8), 0);
    assert_eq!(host32(&mut f, CAP + 12), BASE);
    assert_eq!(device_control(&mut f, CAP), (false, 0));
}

#[test]
fn a_linux_style_enable_with_a_valid_message_enables_the_device_and_never_writes_the_guests_message(
) {
    let mut f = assigned_e1000e_msi();
    f.host_mut().clear_log();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 70);
    assert_eq!(device_control(&mut f, CAP), (true, 0));
    assert!(f.msi().unwrap().device_enabled());
    assert_eq!(f.config_read(CAP + 2, 2), 0x0081);
    assert_eq!(f.config_read(CAP + 4, 4), TEST_GUEST_DOORBELL as u32);
    assert_eq!(f.config_read(CAP + 12, 2), 70);
    assert_eq!(host32(&mut f, CAP + 4), TEST_DOORBELL as u32);
    assert_eq!(host32(&mut f, CAP + 12), BASE);
    let guest_values = [TEST_GUEST_DOORBELL as u32, 70];
    let leaked: Vec<_> = f
        .host()
        .writes()
        .into_iter()
        .filter(|&(_, off, v)| (CAP + 4..CAP + 16).contains(&off) && guest_values.contains(&v))
        .collect();
    assert!(leaked.is_empty(), "{leaked:x?}");
    assert_eq!(stats(&f), MsiCapabilityStats::default());
}

#[test]
fn a_device_interrupt_sends_the_guests_message() {
    let mut f = assigned_e1000e_msi();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 99);
    f.host_msi(BASE);
    assert_eq!(
        taken(&mut f),
        [MsiMessage {
            address: TEST_GUEST_DOORBELL,
            data: 99
        }]
    );
    assert_eq!(stats(&f).sent, 1);
    // MSI-X's events stay MSI-X's: vector 0 is masked there, nothing sent.
    f.host_msi(0);
    f.host_msi(BASE + 1); // past MSI's one vector
    assert!(taken(&mut f).is_empty());
}

#[test]
fn forged_messages_keep_the_device_disabled_and_are_counted_once_each() {
    // Outside the doorbell; the UART's SPI (33); the first SPI past the range.
    for (address, data) in [
        (0x0900_0000u64, 64u16),
        (TEST_GUEST_DOORBELL, 33),
        (TEST_GUEST_DOORBELL, 128),
    ] {
        let mut f = assigned_e1000e_msi();
        linux_enable(&mut f, CAP, 0, address, data);
        assert!(!device_control(&mut f, CAP).0, "{address:#x} {data}");
        assert_eq!(stats(&f).forged_messages, 1);
        // Enabling again while still forged is the same episode.
        cfg(&mut f, CAP + 2, 2, 0x0081);
        assert_eq!(stats(&f).forged_messages, 1);
        f.host_msi(BASE);
        // The guest's message is sent only if the device sent it: here the
        // device could not, but an event in flight is handed to the segment,
        // which drops a forged message (and counts it there).
        let _ = taken(&mut f);
    }
}

#[test]
fn fixing_a_forged_message_enables_the_device_and_forging_it_again_counts_again() {
    let mut f = assigned_e1000e_msi();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 33);
    assert!(!device_control(&mut f, CAP).0);
    cfg(&mut f, CAP + 12, 2, 65);
    assert!(device_control(&mut f, CAP).0);
    cfg(&mut f, CAP + 12, 2, 200);
    assert!(!device_control(&mut f, CAP).0);
    assert_eq!(stats(&f).forged_messages, 2);
}

#[test]
fn multiple_messages_send_the_vector_in_the_low_data_bits_from_consecutive_event_ids() {
    let four = FakeFunction::e1000e_with_msi(CAP, 2, true, false);
    let mut f = assigned_msi_of(four);
    // The device's data is its first EventID, aligned to its 4 vectors.
    assert_eq!(host32(&mut f, CAP + 12), 8);
    linux_enable(&mut f, CAP, 2, TEST_GUEST_DOORBELL, 96);
    assert_eq!(device_control(&mut f, CAP), (true, 2));
    for v in 0..4 {
        f.host_msi(8 + v);
    }
    let data: Vec<u32> = taken(&mut f).iter().map(|m| m.data).collect();
    assert_eq!(data, [96, 97, 98, 99]);
    assert_eq!(f.host_msi_message(8 + 3).map(|m| m.data), Some(99));
}

#[test]
fn a_multiple_message_enable_above_what_is_capable_is_kept_at_it() {
    let four = FakeFunction::e1000e_with_msi(CAP, 2, true, false);
    let mut f = assigned_msi_of(four);
    cfg(&mut f, CAP + 2, 2, 0x0070);
    assert_eq!((f.config_read(CAP + 2, 2) >> 4) & 7, 2);
    linux_enable(&mut f, CAP, 7, TEST_GUEST_DOORBELL, 64);
    assert_eq!(device_control(&mut f, CAP), (true, 2));
}

#[test]
fn a_multi_vector_message_with_a_vector_outside_the_range_is_forged() {
    let four = FakeFunction::e1000e_with_msi(CAP, 2, true, false);
    let mut f = assigned_msi_of(four);
    // 60..63: below the MBI range's 64.
    linux_enable(&mut f, CAP, 2, TEST_GUEST_DOORBELL, 60);
    assert!(!device_control(&mut f, CAP).0);
    assert_eq!(stats(&f).forged_messages, 1);
    // One vector of it (60) is still outside: the same.
    cfg(&mut f, CAP + 2, 2, 0x0081);
    assert!(!device_control(&mut f, CAP).0);
    cfg(&mut f, CAP + 12, 2, 64);
    assert!(device_control(&mut f, CAP).0);
}

/// The device's MSI-X Enable.
fn device_msix(f: &mut F) -> bool {
    host32(f, MSIX_CAP) >> 16 & 0x8000 != 0
}

#[test]
fn msi_and_msix_are_never_enabled_together_at_the_device() {
    let mut f = assigned_e1000e_msi();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 64);
    cfg(&mut f, MSIX_CAP + 2, 2, 0x8000);
    assert_eq!(
        (device_control(&mut f, CAP).0, device_msix(&mut f)),
        (false, false)
    );
    assert_eq!(stats(&f).both_enabled, 1);
    // The guest reads what it wrote.
    assert_eq!(f.config_read(MSIX_CAP + 2, 2) & 0x8000, 0x8000);
    cfg(&mut f, CAP + 2, 2, 0x0080);
    assert_eq!(
        (device_control(&mut f, CAP).0, device_msix(&mut f)),
        (false, true)
    );
    // MSI back on while MSI-X is: neither again.
    cfg(&mut f, CAP + 2, 2, 0x0081);
    assert_eq!(
        (device_control(&mut f, CAP).0, device_msix(&mut f)),
        (false, false)
    );
    assert_eq!(stats(&f).both_enabled, 2);
    cfg(&mut f, MSIX_CAP + 2, 2, 0);
    assert_eq!(
        (device_control(&mut f, CAP).0, device_msix(&mut f)),
        (true, false)
    );
}

#[test]
fn the_device_never_has_both_enabled_at_any_step_of_any_write_sequence() {
    let mut f = assigned_e1000e_msi();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 64);
    let writes = [
        (MSIX_CAP + 2, 0xc000u32),
        (CAP + 2, 0x81),
        (MSIX_CAP + 3, 0x80),
        (CAP + 2, 0x80),
        (CAP + 2, 0x81),
        (MSIX_CAP + 2, 0),
        (MSIX_CAP + 2, 0x8000),
        (CAP + 2, 0xffff),
        (0x04, 0xffff),
        (MSIX_CAP + 2, 0),
    ];
    for (off, v) in writes {
        cfg(&mut f, off, 2, v);
    }
    // Replay every write the device got: never both enables at once.
    let (mut msi, mut msix) = (false, false);
    for (name, off, v) in f.host().writes() {
        assert_eq!(name, "e1000e");
        if off == CAP {
            msi = v & 1 << 16 != 0;
        }
        if off == MSIX_CAP {
            msix = v & 1 << 31 != 0;
        }
        assert!(!(msi && msix), "both enabled after {off:#x} <- {v:#x}");
    }
    assert!(msi, "MSI on again at the end");
}

#[test]
fn interrupt_disable_is_set_on_the_device_while_msi_is_enabled_and_the_guest_reads_its_own() {
    let mut f = assigned_e1000e_msi();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 64);
    cfg(&mut f, 0x04, 2, 0x0006);
    assert_eq!(f.config_read(0x04, 2) & 0x0400, 0);
    assert_eq!(host32(&mut f, 0x04) & 0x0400, 0x0400);
    // With a forged message too (the device's MSI is off, and it must not
    // fall back to INTx behind the guest's back).
    cfg(&mut f, CAP + 12, 2, 33);
    assert_eq!(host32(&mut f, 0x04) & 0x0400, 0x0400);
    cfg(&mut f, CAP + 2, 2, 0x0080);
    assert_eq!(host32(&mut f, 0x04) & 0x0400, 0);
    cfg(&mut f, 0x04, 2, 0x0406);
    assert_eq!(host32(&mut f, 0x04) & 0x0400, 0x0400);
}

/// QEMU's igb MSI: 64-bit, one vector, per-vector masking, at 50h.
const IGB_CAP: u16 = 0x50;

fn assigned_igb_msi() -> F {
    assigned_msi_of(FakeFunction::igb())
}

#[test]
fn mask_bits_are_mirrored_to_the_device_and_an_interrupt_while_masked_is_sent_on_unmask() {
    let mut f = assigned_igb_msi();
    let base = f.events().msi_base;
    assert_eq!(base, 10);
    // Linux masks every vector first, then enables, then unmasks at request_irq.
    cfg(&mut f, IGB_CAP + 0x10, 4, 1);
    linux_enable(&mut f, IGB_CAP, 0, TEST_GUEST_DOORBELL, 64);
    assert_eq!(host32(&mut f, IGB_CAP + 0x10), 1);
    assert_eq!(device_control(&mut f, IGB_CAP), (true, 0));
    f.host_msi(base);
    assert!(taken(&mut f).is_empty());
    assert_eq!(stats(&f).masked_pending, 1);
    assert_eq!(f.config_read(IGB_CAP + 0x14, 4), 1, "pending while masked");
    cfg(&mut f, IGB_CAP + 0x10, 4, 0);
    assert_eq!(host32(&mut f, IGB_CAP + 0x10), 0);
    assert_eq!(taken(&mut f).len(), 1);
    assert_eq!(f.config_read(IGB_CAP + 0x14, 4), 0);
}

#[test]
fn pending_bits_show_the_devices_own_for_the_vectors_shown_and_ignore_writes() {
    let mut f = assigned_igb_msi();
    f.host_mut()
        .set_register("igb", IGB_CAP + 0x14, 4, 0xffff_fff1);
    assert_eq!(f.config_read(IGB_CAP + 0x14, 4), 1);
    assert_eq!(f.config_read(IGB_CAP + 0x14, 1), 1);
    assert_eq!(f.config_read(IGB_CAP + 0x15, 1), 0);
    cfg(&mut f, IGB_CAP + 0x14, 4, 0);
    assert_eq!(f.config_read(IGB_CAP + 0x14, 4), 1);
    assert_eq!(host32(&mut f, IGB_CAP + 0x14), 0xffff_fff1);
}

#[test]
fn an_interrupt_while_msi_is_disabled_is_dropped_and_counted() {
    let mut f = assigned_e1000e_msi();
    f.host_msi(BASE);
    assert!(taken(&mut f).is_empty());
    assert_eq!(stats(&f).disabled, 1);
}

#[test]
fn msi_writes_ask_the_owner_to_steer_and_other_writes_do_not() {
    let mut f = assigned_e1000e_msi();
    assert_eq!(cfg(&mut f, CAP + 12, 2, 70), [Request::MsiMessageWritten]);
    assert_eq!(cfg(&mut f, CAP + 2, 1, 1), [Request::MsiMessageWritten]);
    assert!(cfg(&mut f, 0x04, 2, 6).is_empty());
    assert!(cfg(&mut f, CAP - 4, 4, 0).is_empty());
}

#[test]
fn a_reset_disables_msi_clears_the_guests_message_and_programs_the_device_again() {
    let mut f = assigned_e1000e_msi();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 64);
    f.reset();
    assert_eq!(f.config_read(CAP + 2, 2), 0x0080);
    assert_eq!(f.config_read(CAP + 12, 2), 0);
    assert_eq!(device_control(&mut f, CAP), (false, 0));
    assert_eq!(host32(&mut f, CAP + 4), TEST_DOORBELL as u32);
    assert_eq!(host32(&mut f, CAP + 12), BASE);
    assert!(!f.msi().unwrap().device_enabled());
}

#[test]
fn a_device_with_32_bit_addresses_keeps_msi_hidden_when_the_doorbell_lies_above_4_gib() {
    let narrow = FakeFunction::e1000e_with_msi(CAP, 0, false, false);
    let host = FakeHost::one_behind_root_port(narrow);
    let f = crate::testing::assigned(host, vbus::Bdf::from_routing_id(0x0100));
    let mut route = crate::testing::test_msi_route();
    route.doorbell = vbus::Pa(0x1_0809_0040);
    let mut f = f.with_msi(route);
    assert_eq!(f.msi_vectors(), None);
    let mut at = f.config_read(0x34, 1) as u16;
    while at != 0 {
        assert_ne!(f.config_read(at, 1), 0x05, "MSI in the chain");
        at = f.config_read(at + 1, 1) as u16;
    }
}

/// What the guest can write in a capability's bytes (the writable bits of
/// each byte), and what every byte reads after a reset: the four layouts,
/// 32 vectors so that every Mask Bit is implemented.
fn layout_masks(is_64bit: bool, masking: bool) -> Vec<u8> {
    let mut w = alloc::vec![0u8; 0x18];
    // Message Control: MSI Enable, Multiple Message Enable.
    w[2] = 0x71;
    w[4..8].copy_from_slice(&(!3u32).to_le_bytes());
    let data = if is_64bit {
        w[8..12].copy_from_slice(&[0xff; 4]);
        12
    } else {
        8
    };
    w[data] = 0xff;
    w[data + 1] = 0xff;
    if masking {
        w[data + 4..data + 8].copy_from_slice(&[0xff; 4]);
    }
    w
}

#[test]
fn capability_registers_at_every_width_and_alignment_keep_exactly_their_writable_bits() {
    for (is_64bit, masking) in [(false, false), (true, false), (false, true), (true, true)] {
        let dev = FakeFunction::e1000e_with_msi(FREE, 5, is_64bit, masking);
        let writable = layout_masks(is_64bit, masking);
        let len = if masking {
            0x18
        } else if is_64bit {
            0x10
        } else {
            0x0c
        };
        for size in [1u8, 2, 4] {
            let mut f = assigned_msi_of(dev.clone());
            let base: Vec<u8> = (0..len).map(|i| f.config_read(FREE + i, 1) as u8).collect();
            let mut want = base.clone();
            let pattern: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(73) ^ 0x5a)
                .collect();
            for off in (0..len).step_by(usize::from(size)) {
                let v = (0..u16::from(size)).fold(0u32, |v, k| {
                    v | u32::from(pattern[usize::from(off + k)]) << (8 * k)
                });
                cfg(&mut f, FREE + off, size, v);
                for k in 0..u16::from(size) {
                    let i = usize::from(off + k);
                    want[i] = (want[i] & !writable[i]) | (pattern[i] & writable[i]);
                }
                // Multiple Message Enable above Capable (5) is kept at 5.
                let mme = (want[2] >> 4) & 7;
                if mme > 5 {
                    want[2] = (want[2] & !0x70) | 5 << 4;
                }
            }
            // Pending Bits read 0 (nothing pending), whatever was written.
            for rsize in [1u8, 2, 4] {
                for off in 0..=(len - u16::from(rsize)) {
                    if (off & 3) + u16::from(rsize) > 4 {
                        continue;
                    }
                    let got = f.config_read(FREE + off, rsize);
                    let exp = (0..u16::from(rsize)).fold(0u32, |v, k| {
                        v | u32::from(want[usize::from(off + k)]) << (8 * k)
                    });
                    assert_eq!(
                        got, exp,
                        "64-bit {is_64bit} masking {masking}: write size {size}, read {off:#x}/{rsize}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_16_bit_data_write_leaves_extended_message_data_zero_and_reads_as_written() {
    let mut f = assigned_e1000e_msi();
    cfg(&mut f, CAP + 12, 4, 0xabcd_1234);
    assert_eq!(f.config_read(CAP + 12, 4), 0x1234);
    assert_eq!(f.config_read(CAP + 13, 1), 0x12);
    assert_eq!(f.config_read(CAP + 14, 2), 0);
}

#[test]
fn no_access_of_any_size_or_offset_in_the_capability_panics() {
    for (cap, dev) in [
        (CAP, FakeFunction::e1000e()),
        (FREE, FakeFunction::e1000e_with_msi(FREE, 5, false, true)),
    ] {
        let mut f = assigned_msi_of(dev);
        linux_enable(&mut f, cap, 5, TEST_GUEST_DOORBELL, 64);
        for size in [0u8, 1, 2, 3, 4, 8] {
            for off in cap - 4..cap + 0x1c {
                let _ = f.config_read(off, size);
                cfg(&mut f, off, size, 0xffff_ffff);
                f.host_msi(off.into());
            }
        }
        let _ = taken(&mut f);
    }
}

#[test]
fn a_zero_message_written_while_enabled_disables_the_device_without_counting_a_forgery() {
    // Linux's teardown: free_irq writes a zero message, then MSI Enable goes off.
    let mut f = assigned_e1000e_msi();
    linux_enable(&mut f, CAP, 0, TEST_GUEST_DOORBELL, 66);
    cfg(&mut f, CAP + 4, 4, 0);
    cfg(&mut f, CAP + 8, 4, 0);
    cfg(&mut f, CAP + 12, 2, 0);
    assert!(!device_control(&mut f, CAP).0);
    cfg(&mut f, CAP + 2, 2, 0x0080);
    assert_eq!(stats(&f).forged_messages, 0);
}

#[test]
fn event_ids_of_a_function_with_msi_alone_start_at_0_and_without_msi_are_msix_only() {
    let mut layout = assigned_e1000e().layout().clone();
    layout.msix = None;
    assert_eq!(
        EventIds::of(&layout),
        EventIds {
            msix: 0,
            msi_base: 0,
            msi: 1
        }
    );
    layout.msi = None;
    assert_eq!(EventIds::of(&layout).total(), 0);
}

#[test]
fn a_function_with_msi_alone_shows_it_and_takes_event_0_as_its_vector() {
    let dev = FakeFunction::endpoint("msi-only", 0x1234, 0x5678, 0x02_00_00)
        .interrupt_pin(1)
        .mem32_bar(0, 4096, false)
        .msi_capability_with(0x50, 0, false, false);
    let mut f = assigned_msi_of(dev);
    assert_eq!((f.msix_vectors(), f.msi_vectors()), (None, Some(1)));
    assert_eq!(f.events().msi_base, 0);
    // 32-bit layout: Message Data at 08h.
    cfg(&mut f, 0x54, 4, TEST_GUEST_DOORBELL as u32);
    cfg(&mut f, 0x58, 2, 100);
    cfg(&mut f, 0x52, 2, 1);
    assert_eq!(device_control(&mut f, 0x50), (true, 0));
    assert_eq!(host32(&mut f, 0x58), 0);
    f.host_msi(0);
    assert_eq!(
        taken(&mut f).iter().map(|m| m.data).collect::<Vec<_>>(),
        [100]
    );
}

#[test]
fn an_interrupt_for_a_vector_past_the_allocated_ones_is_spurious() {
    let mut f = assigned_igb_msi();
    let base = f.events().msi_base;
    linux_enable(&mut f, IGB_CAP, 0, TEST_GUEST_DOORBELL, 64);
    f.host_msi(base + 1);
    assert!(taken(&mut f).is_empty());
    assert_eq!(stats(&f).spurious, 1);
    assert_eq!(stats(&f).sent, 0);
    f.host_msi(base);
    assert_eq!(taken(&mut f).len(), 1);
}
