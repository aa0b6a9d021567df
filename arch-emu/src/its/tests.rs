//! Host tests of the ITS encodings. Expected values are worked out by hand
//! from the field tables of IHI 0069 H.b (5.3 for commands, 12.19 for GITS_*,
//! 12.11 for GICR_*), word by word.

use super::*;

// --- Commands (IHI 0069 5.3) -------------------------------------------------

#[test]
fn mapd_puts_device_id_high_size_minus_one_itt_and_valid() {
    let c = Command::Mapd {
        device_id: 0x28,
        itt: 0x4123_4500,
        event_bits: 5,
        valid: true,
    };
    assert_eq!(
        c.encode(),
        [
            0x0000_0028_0000_0008, // DeviceID 63:32, MAPD = 0x08
            0x0000_0000_0000_0004, // Size 4:0 = EventID bits - 1
            0x8000_0000_4123_4500, // V 63, ITT_addr 51:8
            0,
        ]
    );
}

#[test]
fn mapd_unmap_clears_valid() {
    let c = Command::Mapd {
        device_id: 1,
        itt: 0,
        event_bits: 1,
        valid: false,
    };
    assert_eq!(c.encode()[2], 0);
    assert_eq!(c.encode()[1], 0);
}

#[test]
fn mapc_by_address_puts_rd_base_bits_51_16_icid_and_valid() {
    let c = Command::Mapc {
        icid: 3,
        rd: RdBase::Address(0x080e_0000),
        valid: true,
    };
    assert_eq!(
        c.encode(),
        [
            0x09,                  // MAPC
            0,                     //
            0x8000_0000_080e_0003, // V 63, RDbase 51:16 (the address), ICID 15:0
            0,
        ]
    );
}

#[test]
fn mapc_by_processor_number_puts_it_at_bit_16() {
    let c = Command::Mapc {
        icid: 1,
        rd: RdBase::Processor(1),
        valid: true,
    };
    assert_eq!(c.encode()[2], 0x8000_0000_0001_0001);
}

#[test]
fn mapti_puts_event_low_intid_high_and_icid() {
    let c = Command::Mapti {
        device_id: 0x28,
        event_id: 2,
        intid: 8194,
        icid: 1,
    };
    assert_eq!(
        c.encode(),
        [
            0x0000_0028_0000_000a, // DeviceID, MAPTI = 0x0A
            0x0000_2002_0000_0002, // pINTID 63:32 = 8194, EventID 31:0 = 2
            0x0000_0000_0000_0001, // ICID
            0,
        ]
    );
}

#[test]
fn mapi_movi_inv_discard_clear_int_use_their_numbers() {
    let d = 0x1_0000 - 1;
    let e = 0xffff_ffff;
    let cases = [
        (
            Command::Mapi {
                device_id: d,
                event_id: e,
                icid: 7,
            },
            0x0b,
            7,
        ),
        (
            Command::Movi {
                device_id: d,
                event_id: e,
                icid: 9,
            },
            0x01,
            9,
        ),
        (
            Command::Inv {
                device_id: d,
                event_id: e,
            },
            0x0c,
            0,
        ),
        (
            Command::Discard {
                device_id: d,
                event_id: e,
            },
            0x0f,
            0,
        ),
        (
            Command::Clear {
                device_id: d,
                event_id: e,
            },
            0x04,
            0,
        ),
        (
            Command::Int {
                device_id: d,
                event_id: e,
            },
            0x03,
            0,
        ),
    ];
    for (c, num, dw2) in cases {
        let w = c.encode();
        assert_eq!(w[0], 0x0000_ffff_0000_0000 | num, "{}", c.name());
        assert_eq!(w[1], 0xffff_ffff, "{}", c.name());
        assert_eq!(w[2], dw2, "{}", c.name());
        assert_eq!(w[3], 0, "{}", c.name());
    }
}

#[test]
fn sync_and_invall_name_their_target_in_dw2() {
    assert_eq!(
        Command::Sync {
            rd: RdBase::Address(0x080c_0000)
        }
        .encode(),
        [0x05, 0, 0x0000_0000_080c_0000, 0]
    );
    assert_eq!(Command::Invall { icid: 2 }.encode(), [0x0d, 0, 2, 0]);
}

#[test]
fn command_names_come_from_the_number() {
    assert_eq!(Command::Invall { icid: 0 }.name(), "INVALL");
    assert_eq!(command_name(0x0e), "MOVALL");
    assert_eq!(command_name(0x99), "an unknown command");
}

// --- GITS_TYPER (12.19.20) ---------------------------------------------------

/// QEMU 10's GITS_TYPER: Physical, ITT_entry_size 12 (0xb), ID_bits 16
/// (0xf), Devbits 16 (0xf), CIL with CIDbits 16 (0xf).
const QEMU_TYPER: u64 = (0xf << 32) | (1 << 36) | (0xf << 13) | (0xf << 8) | (0xb << 4) | 1;

#[test]
fn typer_fields_decode() {
    let t = Typer(QEMU_TYPER | (1 << 19) | (4 << 24));
    assert!(t.physical());
    assert_eq!(t.itt_entry_size(), 12);
    assert_eq!(t.event_id_bits(), 16);
    assert_eq!(t.device_id_bits(), 16);
    assert!(t.pta());
    assert_eq!(t.hcc(), 4);
    assert_eq!(t.collection_id_bits(), 16);
    assert_eq!(Typer(0).collection_id_bits(), 16, "CIL = 0: 16 bits");
    assert_eq!(Typer((1 << 36) | (3 << 32)).collection_id_bits(), 4);
}

#[test]
fn device_ids_beyond_devbits_are_refused() {
    let t = Typer(QEMU_TYPER);
    assert_eq!(t.check_device_id(0xffff), Ok(()));
    assert_eq!(
        t.check_device_id(0x1_0000),
        Err(RangeError::DeviceId(0x1_0000))
    );
}

#[test]
fn itt_event_bits_round_up_and_are_checked_against_id_bits() {
    let t = Typer(QEMU_TYPER);
    assert_eq!(t.itt_event_bits(1), Ok(1), "MAPD cannot say 0 bits");
    assert_eq!(t.itt_event_bits(2), Ok(1));
    assert_eq!(t.itt_event_bits(3), Ok(2));
    assert_eq!(t.itt_event_bits(2048), Ok(11));
    assert_eq!(t.itt_event_bits(65536), Ok(16));
    assert_eq!(t.itt_event_bits(65537), Err(RangeError::EventIdBits(17)));
}

#[test]
fn itt_bytes_are_entries_times_entry_size_at_least_256() {
    let t = Typer(QEMU_TYPER);
    assert_eq!(
        t.itt_bytes(1),
        256,
        "2 x 12 bytes, rounded to the alignment"
    );
    assert_eq!(t.itt_bytes(6), 64 * 12);
}

#[test]
fn event_ids_beyond_the_itt_are_refused() {
    assert_eq!(check_event_id(3, 2), Ok(()));
    assert_eq!(check_event_id(4, 2), Err(RangeError::EventId(4)));
    assert_eq!(check_event_id(u32::MAX, 32), Ok(()));
}

// --- GITS_BASER<n> (12.19.1) -------------------------------------------------

#[test]
fn baser_fields_decode() {
    // Type 1 (Devices) 58:56, Entry_Size 7 (8 bytes) 52:48, Page_Size 0b10.
    let v = (1u64 << 56) | (7 << 48) | (2 << 8);
    assert_eq!(baser::table_type(v), TableType::Devices);
    assert_eq!(baser::entry_size(v), 8);
    assert_eq!(baser::page_size(v), PageSize::K64);
    assert_eq!(baser::table_type(4 << 56), TableType::Collections);
    assert_eq!(baser::table_type(0), TableType::Unimplemented);
    assert_eq!(baser::table_type(3 << 56), TableType::Reserved(3));
}

#[test]
fn baser_encode_keeps_type_and_entry_size_and_sets_the_rest() {
    let prev = (1u64 << 56) | (7 << 48) | 0x3f; // read-only fields and junk
    let v = baser::encode(prev, 0x4400_0000, PageSize::K4, 2, true);
    assert_eq!(
        v,
        (1 << 63)         // Valid
        | (1 << 62)       // Indirect
        | (0b111 << 59)   // InnerCache RaWaWb
        | (1 << 56)       // Type Devices, kept
        | (7 << 48)       // Entry_Size, kept
        | 0x4400_0000     // Physical_Address 47:12
        | (1 << 10)       // Inner Shareable; Page_Size 9:8 = 0b00, 4 KiB
        | 1 // Size: 2 pages - 1
    );
}

#[test]
fn small_tables_are_flat() {
    // 16 collections x 8 bytes: one 4 KiB page.
    let p = plan_table(4, 8, PageSize::K4, true).unwrap();
    assert_eq!(
        p,
        TablePlan {
            page: PageSize::K4,
            pages: 1,
            indirect: false,
            entries_per_page: 512
        }
    );
    assert!(p.ids() >= 16);
}

#[test]
fn large_device_tables_go_two_level_when_offered() {
    // 2^16 devices x 8 bytes = 512 KiB flat; two-level with 4 KiB pages:
    // 512 entries per level-2 page, 128 level-2 pages, 1 KiB of level 1.
    let p = plan_table(16, 8, PageSize::K4, true).unwrap();
    assert!(p.indirect);
    assert_eq!(p.pages, 1);
    assert_eq!(p.entries_per_page, 512);
    assert!(p.ids() >= 1 << 16);
}

#[test]
fn large_device_tables_stay_flat_without_indirect_and_are_capped() {
    // 2^16 x 8 bytes = 128 pages of 4 KiB.
    let p = plan_table(16, 8, PageSize::K4, false).unwrap();
    assert_eq!(p.pages, 128);
    assert_eq!(p.ids(), 1 << 16);
    // 2^24 x 8 bytes would be 32768 pages: capped at 256, which covers fewer IDs.
    let big = plan_table(24, 8, PageSize::K4, false).unwrap();
    assert_eq!(big.pages, 256);
    assert_eq!(big.ids(), 256 * 512);
}

// --- Command queue registers (12.19.2, 12.19.6, 12.19.7) ----------------------

#[test]
fn cbaser_encodes_address_size_and_attributes() {
    assert_eq!(
        cbaser(0x4401_0000, 1),
        (1 << 63) | (0b111 << 59) | 0x4401_0000 | (1 << 10) // 1 page: Size 0
    );
    assert_eq!(cbaser(0x4401_0000, 16) & 0xff, 15);
    assert_eq!(cbaser_shareability(cbaser(0, 1)), attr::INNER_SHAREABLE);
}

#[test]
fn cwriter_and_creadr_offsets_are_bits_19_5() {
    assert_eq!(cwriter::encode(0x60), 0x60);
    assert_eq!(cwriter::encode(0x61), 0x60);
    assert_eq!(creadr::offset(0x41), 0x40);
    assert_eq!(creadr::offset(0xfff_ffff), 0xf_ffe0);
}

// --- LPI tables (5.1, 12.11) -------------------------------------------------

#[test]
fn lpi_id_bits_are_clamped_between_14_and_gicd_idbits() {
    // QEMU: GICD_TYPER.IDbits = 15 (16 bits).
    let gicd = 15 << 19;
    assert_eq!(gicd_typer::id_bits(gicd), 16);
    assert_eq!(lpi::id_bits(16, 14), Some(14));
    assert_eq!(lpi::id_bits(16, 20), Some(16));
    assert_eq!(lpi::id_bits(16, 2), Some(14));
    assert_eq!(lpi::id_bits(10, 14), None, "no room for INTID 8192");
}

#[test]
fn lpi_tables_are_sized_from_id_bits() {
    // 14 bits: INTIDs up to 16383, 8192 LPIs; configuration table one byte
    // per LPI, pending table one bit per INTID from 0.
    assert_eq!(lpi::count(14), 8192);
    assert_eq!(lpi::config_table_bytes(14), 8192);
    assert_eq!(lpi::pending_table_bytes(14), 2048);
    // 16 bits: 65536 - 8192 LPIs.
    assert_eq!(lpi::config_table_bytes(16), 57344);
    assert_eq!(lpi::pending_table_bytes(16), 8192);
}

#[test]
fn lpi_config_byte_is_priority_res1_enable() {
    assert_eq!(lpi::config_byte(0xa0, true), 0xa3);
    assert_eq!(
        lpi::config_byte(0xa1, false),
        0xa2,
        "priority bits 1:0 are not stored"
    );
}

#[test]
fn propbaser_and_pendbaser_encode() {
    assert_eq!(
        lpi::propbaser(0x4402_0000, 14),
        0x4402_0000 | (1 << 10) | (0b111 << 7) | 13 // IDbits = 14 - 1
    );
    assert_eq!(
        lpi::pendbaser(0x4403_0000),
        (1 << 62) | 0x4403_0000 | (1 << 10) | (0b111 << 7) // PTZ
    );
    assert_eq!(lpi::shareability(lpi::pendbaser(0)), attr::INNER_SHAREABLE);
    assert_eq!(gicr::processor_number(0x0000_0001_0000_0100), 1);
}

// --- The command ring and its bounded wait ------------------------------------

#[test]
fn ring_keeps_one_slot_free() {
    let mut r = CommandRing::new(4096);
    let slots = 4096 / COMMAND_BYTES;
    for _ in 0..slots - 1 {
        assert!(r.has_room(0));
        r.push();
    }
    assert!(!r.has_room(0), "the last slot would make full look empty");
    assert_eq!(r.write_offset(), 4096 - 32);
    assert!(r.has_room(32), "once the ITS read one, there is room");
    assert_eq!(r.push(), 4096 - 32);
    assert_eq!(r.write_offset(), 0, "wraps");
}

#[test]
fn consumed_handles_the_wrap() {
    let r = CommandRing::new(4096);
    assert!(r.consumed(4064, 32, 32));
    assert!(!r.consumed(4064, 0, 32));
    assert!(r.consumed(64, 64, 64), "nothing to wait for");
}

fn names(_: u64) -> &'static str {
    "MAPTI"
}

#[test]
fn wait_returns_once_creadr_reaches_the_target() {
    let r = CommandRing::new(4096);
    let mut reads = [0u64, 32, 64, 96].into_iter();
    let res = wait_consumed(&r, 96, || reads.next().unwrap_or(96), names, 3);
    assert_eq!(res, Ok(()));
}

#[test]
fn wait_reports_a_stall_with_the_command_name_and_offset() {
    let r = CommandRing::new(4096);
    let mut reads = [32u64, 64 | creadr::STALLED].into_iter();
    let res = wait_consumed(&r, 96, || reads.next().unwrap_or(64 | 1), names, 100);
    assert_eq!(
        res,
        Err(QueueError::Stalled {
            command: "MAPTI",
            offset: 64
        })
    );
}

#[test]
fn wait_gives_up_when_creadr_stops_moving() {
    let r = CommandRing::new(4096);
    let mut polls = 0u32;
    let res = wait_consumed(
        &r,
        96,
        || {
            polls += 1;
            32
        },
        names,
        10,
    );
    assert_eq!(
        res,
        Err(QueueError::NoProgress {
            creadr: 32,
            cwriter: 96
        })
    );
    assert_eq!(polls, 11, "the first read, then 10 without progress");
}

#[test]
fn wait_restarts_its_bound_whenever_creadr_moves() {
    // A slow ITS: each command takes 5 polls; the bound is 8 idle polls, and
    // 100 commands take 500 polls in all: no error.
    let r = CommandRing::new(8192);
    let mut n = 0u64;
    let res = wait_consumed(
        &r,
        100 * 32,
        || {
            n += 1;
            (n / 5) * 32
        },
        names,
        8,
    );
    assert_eq!(res, Ok(()));
}

#[test]
fn wait_refuses_a_creadr_outside_the_queue() {
    let r = CommandRing::new(4096);
    let res = wait_consumed(&r, 64, || 8192, names, 8);
    assert_eq!(res, Err(QueueError::BadReadOffset(8192)));
}
