use super::*;

#[test]
fn abort_ste_is_valid_with_config_0() {
    // Word 0: V (bit 0) = 1, Config (3:1) = 0b000.
    assert_eq!(ste_abort(), [0x1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn bypass_ste_has_config_0b100_and_incoming_shareability() {
    // Word 0: V = 1, Config = 0b100 -> 0b1001. Word 1: SHCFG (45:44) = 0b01.
    assert_eq!(ste_bypass(), [0x9, 1 << 44, 0, 0, 0, 0, 0, 0]);
}

/// The VTCR `arch_emu::stage2::Stage2::vtcr` gives for a 40-bit IPA and PS = 0b101:
/// T0SZ 24, SL0 1, IRGN0 1, ORGN0 1, SH0 3, TG0 0, PS 5, RES1 bit 31.
const VTCR_40: u64 = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (5 << 16) | (1 << 31);

#[test]
fn stage2_ste_carries_the_vtcr_fields_word_by_word() {
    let ste = ste_stage2(&S2Params {
        vmid: 0x0102,
        vtcr: VTCR_40,
        ttb: 0x4_5678_2000,
    })
    .expect("valid");
    // Word 0: V = 1, Config = 0b110 -> 0b1101.
    assert_eq!(ste[0], 0xd);
    // Word 1: SHCFG = incoming.
    assert_eq!(ste[1], 1 << 44);
    assert_eq!(
        ste[2],
        0x0102 // S2VMID
            | (24 << 32) // S2T0SZ
            | (1 << 38) // S2SL0: level 1
            | (1 << 40) // S2IR0: WB
            | (1 << 42) // S2OR0: WB
            | (3 << 44) // S2SH0: inner
            // S2TG (47:46) = 0b00: 4 KiB
            | (5 << 48) // S2PS: 48 bits
            | (1 << 51) // S2AA64
            | (1 << 54) // S2PTW
            | (1 << 58) // S2R
    );
    assert_eq!(ste[2], 0x044d_3558_0000_0102);
    // Word 3: S2TTB.
    assert_eq!(ste[3], 0x4_5678_2000);
    assert_eq!(&ste[4..], &[0; 4]);
}

#[test]
fn stage2_ste_leaves_af_fault_disable_clear() {
    let ste = ste_stage2(&S2Params {
        vmid: 1,
        vtcr: VTCR_40,
        ttb: 0x8000_0000,
    })
    .expect("valid");
    assert_eq!((ste[2] >> 53) & 1, 0, "S2AFFD");
    assert_eq!((ste[2] >> 56) & 1, 0, "S2HA");
}

#[test]
fn stage2_ste_with_a_64k_granule_is_refused() {
    let vtcr = VTCR_40 | (1 << 14);
    assert_eq!(
        ste_stage2(&S2Params {
            vmid: 1,
            vtcr,
            ttb: 0x8000_0000
        }),
        Err(SteError::Granule)
    );
}

#[test]
fn stage2_ste_with_level_0_start_is_refused() {
    let vtcr = (VTCR_40 & !(3 << 6)) | (2 << 6);
    assert_eq!(
        ste_stage2(&S2Params {
            vmid: 1,
            vtcr,
            ttb: 0x8000_0000
        }),
        Err(SteError::Geometry)
    );
}

#[test]
fn stage2_ste_with_an_unaligned_root_is_refused() {
    assert_eq!(
        ste_stage2(&S2Params {
            vmid: 1,
            vtcr: VTCR_40,
            ttb: 0x8000_0800
        }),
        Err(SteError::Ttb(0x8000_0800))
    );
}

#[test]
fn large_sid_space_with_two_level_support_gets_a_two_level_table() {
    // IDR0.ST_LEVEL = 0b01; IDR1.SIDSIZE = 16 (QEMU's values).
    let t = StreamTable::choose(1 << 27, 16, 10);
    assert_eq!(
        t,
        StreamTable::TwoLevel {
            log2size: 16,
            split: 8
        }
    );
    // STRTAB_BASE_CFG: FMT (17:16) = 0b01, SPLIT (10:6) = 8, LOG2SIZE = 16.
    assert_eq!(t.base_cfg(), (1 << 16) | (8 << 6) | 16);
    assert_eq!(t.base_cfg(), 0x1_0210);
}

#[test]
fn two_level_table_sizes_are_256_descriptors_of_8_bytes_and_16k_leaves() {
    let t = StreamTable::choose(1 << 27, 16, 10);
    assert_eq!(t.base_bytes(), Some(256 * 8));
    assert_eq!(t.l2_bytes(), Some(256 * 64));
}

#[test]
fn two_level_index_splits_the_sid_at_bit_8() {
    let t = StreamTable::choose(1 << 27, 16, 10);
    assert_eq!(t.index(0x0123), Some((0x01, 0x23)));
    assert_eq!(t.index(0x1_0000), None);
}

#[test]
fn without_two_level_support_the_table_is_linear_and_capped() {
    let t = StreamTable::choose(0, 16, 10);
    assert_eq!(t, StreamTable::Linear { log2size: 10 });
    assert_eq!(t.base_cfg(), 10);
    assert_eq!(t.base_bytes(), Some(1024 * 64));
    assert_eq!(t.index(0x3ff), Some((0, 0x3ff)));
    assert_eq!(t.index(0x400), None);
}

#[test]
fn small_sid_space_is_linear_even_with_two_level_support() {
    assert_eq!(
        StreamTable::choose(1 << 27, 6, 10),
        StreamTable::Linear { log2size: 6 }
    );
}

#[test]
fn a_32_bit_sid_space_sizes_without_overflow() {
    let t = StreamTable::choose(1 << 27, 32, 10);
    assert_eq!(t.base_bytes(), Some((1 << 24) * 8));
    assert!(t.covers(u32::MAX));
    assert_eq!(t.index(u32::MAX), Some((0xff_ffff, 0xff)));
}

#[test]
fn l1_descriptor_has_span_9_and_the_l2_address() {
    let t = StreamTable::TwoLevel {
        log2size: 16,
        split: 8,
    };
    // SPAN (4:0) = SPLIT + 1 = 9, L2Ptr (51:6).
    assert_eq!(t.l1_descriptor(0x4321_4000), 0x4321_4009);
}

#[test]
fn cfgi_ste_puts_the_sid_in_the_top_word_with_leaf() {
    assert_eq!(cmd_cfgi_ste(0x0108), [0x0000_0108_0000_0003, 1]);
}

#[test]
fn cfgi_all_is_range_31() {
    assert_eq!(cmd_cfgi_all(), [0x04, 31]);
}

#[test]
fn tlbi_s12_vmall_puts_the_vmid_at_bit_32() {
    assert_eq!(cmd_tlbi_s12_vmall(0x0102), [0x0000_0102_0000_0028, 0]);
}

#[test]
fn tlbi_nsnh_all_and_sync_are_bare_opcodes() {
    assert_eq!(cmd_tlbi_nsnh_all(), [0x30, 0]);
    // CMD_SYNC with CS = SIG_NONE (13:12 = 0).
    assert_eq!(cmd_sync(), [0x46, 0]);
}

#[test]
fn base_registers_encode_address_size_and_allocation_hint() {
    assert_eq!(queue_base(0x4010_0000, 8), 0x4000_0000_4010_0008);
    assert_eq!(strtab_base(0x4020_0000), 0x4000_0000_4020_0000);
}

#[test]
fn cr1_write_back_inner_shareable_for_tables_and_queues() {
    // QUEUE_IC 1, QUEUE_OC 1, QUEUE_SH 3, TABLE_IC 1, TABLE_OC 1, TABLE_SH 3.
    assert_eq!(cr1::value(cr1::WB, cr1::ISH), 0b11_01_01_11_01_01);
}

#[test]
fn stage2_translation_fault_is_decoded() {
    // F_TRANSLATION (0x10) on StreamID 0x108, a write (RnW = 0) to 0xdead_b000 at
    // stage 2 (S2 = 1) with IPA 0xdead_b000.
    let e = decode_event(&[0x0000_0108_0000_0010, 1 << 39, 0xdead_b123, 0xdead_b000]);
    assert_eq!(
        e,
        Event {
            kind: EventType::FTranslation,
            sid: 0x108,
            ssid: None,
            input_addr: Some(0xdead_b123),
            read: false,
            stage2: true,
            ipa: Some(0xdead_b000),
            fetch_addr: None,
        }
    );
    assert_eq!(e.kind.name(), "F_TRANSLATION");
}

#[test]
fn read_permission_fault_has_rnw_set() {
    let e = decode_event(&[0x13, (1 << 35) | (1 << 39), 0x1000, 0x1000]);
    assert_eq!(e.kind, EventType::FPermission);
    assert!(e.read);
}

#[test]
fn bad_ste_has_no_address() {
    let e = decode_event(&[0x0000_0005_0000_0004, 0, 0x1234, 0x5678]);
    assert_eq!(e.kind.name(), "C_BAD_STE");
    assert_eq!(e.sid, 5);
    assert_eq!((e.input_addr, e.ipa, e.fetch_addr), (None, None, None));
}

#[test]
fn ste_fetch_abort_reports_the_fetch_address() {
    let e = decode_event(&[0x03, 0, 0, 0x4000_0048]);
    assert_eq!(e.kind, EventType::FSteFetch);
    assert_eq!(e.fetch_addr, Some(0x4000_0048));
}

#[test]
fn substream_id_is_reported_when_valid() {
    let e = decode_event(&[(0x42 << 12) | (1 << 11) | 0x10, 0, 0, 0]);
    assert_eq!(e.ssid, Some(0x42));
}

#[test]
fn unknown_event_codes_are_kept() {
    assert_eq!(decode_event(&[0xe3, 0, 0, 0]).kind, EventType::Other(0xe3));
}

#[test]
fn queue_next_toggles_the_wrap_bit_at_the_end() {
    // log2size 2: indexes 0..=3, wrap bit 2.
    assert_eq!(queue::next(0b011, 2), 0b100);
    assert_eq!(queue::next(0b111, 2), 0b000);
}

#[test]
fn queue_is_full_with_equal_index_and_different_wrap() {
    assert!(queue::is_full(0b100, 0b000, 2));
    assert!(!queue::is_full(0b011, 0b000, 2));
}

#[test]
fn queue_is_empty_with_equal_index_and_wrap() {
    assert!(queue::is_empty(0b101, 0b101, 2));
    assert!(!queue::is_empty(0b101, 0b001, 2));
}

#[test]
fn queue_flags_above_the_wrap_bit_are_ignored() {
    // EVENTQ_PROD.OVFLG (bit 31).
    assert!(queue::is_empty(0x8000_0003, 0x3, 2));
    assert_eq!(queue::index(0x8000_0006, 2), 2);
}

#[test]
fn sync_is_consumed_once_cons_is_past_it_across_the_wrap() {
    // CMD_SYNC written at index 3 (wrap 0) of a 4-entry queue.
    assert!(!queue::consumed(0b011, 0b011, 2));
    assert!(queue::consumed(0b011, 0b100, 2));
    assert!(queue::consumed(0b011, 0b110, 2));
    assert!(!queue::consumed(0b011, 0b010, 2));
}

#[test]
fn gerror_names_follow_the_spec() {
    let n: alloc::vec::Vec<_> = gerror::names(gerror::CMDQ_ERR | gerror::SFM_ERR).collect();
    assert_eq!(n, ["CMDQ_ERR", "SFM_ERR"]);
}

#[test]
fn oas_encodings_give_bits() {
    assert_eq!(idr5::oas_bits(idr5::oas(0x4)), 44);
    assert_eq!(idr5::oas_bits(5), 48);
}
