use super::*;
use proptest::prelude::*;

const MPIDRS: [u64; 2] = [0x0, 0x1];
const UART: u32 = 33;

/// What Linux's irq-gic-v3 does at boot (gic_dist_init, gic_cpu_init), for every vCPU.
fn linux_init() -> Vgic {
    let mut g = Vgic::new(&MPIDRS, 64);
    let typer = g.gicd_read(0x4, 4);
    assert_eq!(typer & 0x1f, 2, "ITLinesNumber for 64 SPIs");
    assert_eq!(g.gicd_read(0xffe8, 4) >> 4 & 0xf, 3, "ArchRev");
    g.gicd_write(0x0, 4, 0);
    assert_eq!(g.gicd_read(0x0, 4) & (1 << 31), 0, "RWP");
    for r in 1..3u64 {
        g.gicd_write(0x80 + r * 4, 4, 0xffff_ffff);
        g.gicd_write(0x180 + r * 4, 4, 0xffff_ffff);
        g.gicd_write(0x380 + r * 4, 4, 0xffff_ffff);
    }
    for i in 8..24u64 {
        g.gicd_write(0x400 + i * 4, 4, 0xa0a0_a0a0);
    }
    for i in 32..96u64 {
        g.gicd_write(0x6000 + i * 8, 8, 0);
    }
    g.gicd_write(0x0, 4, 0x12);
    for v in 0..2u64 {
        let rd = v * GICR_FRAME_SIZE;
        let t = g.gicr_read(rd + 0x8, 8);
        assert_eq!(t >> 32, MPIDRS[v as usize]);
        g.gicr_write(rd + 0x14, 4, 0);
        assert_eq!(g.gicr_read(rd + 0x14, 4) & 4, 0, "ChildrenAsleep clears");
        let sgi = rd + 0x1_0000;
        g.gicr_write(sgi + 0x80, 4, 0xffff_ffff);
        g.gicr_write(sgi + 0x380, 4, 0xffff_ffff);
        g.gicr_write(sgi + 0x180, 4, 0xffff_0000);
        g.gicr_write(sgi + 0x100, 4, 0x0000_ffff);
        for i in 0..8u64 {
            g.gicr_write(sgi + 0x400 + i * 4, 4, 0xa0a0_a0a0);
        }
    }
    g
}

fn enable_spi(g: &mut Vgic, intid: u32) -> Kick {
    g.gicd_write(0x100 + u64::from(intid / 32) * 4, 4, 1 << (intid % 32))
}

#[test]
fn linux_init_then_level_spi_is_flushed_with_priority_group_and_eoi() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    assert_eq!(g.set_line(0, UART, true), Kick(1));
    let mut lrs = [0u64; 4];
    assert!(!g.flush(0, &mut lrs));
    let v = lrs[0];
    assert_eq!(v & lr::VINTID_MASK, u64::from(UART));
    assert_eq!(lr::state(v), lr::PENDING);
    assert_eq!((v >> lr::PRIORITY_SHIFT) & 0xff, 0xa0);
    assert_ne!(v & lr::GROUP1, 0);
    assert_ne!(v & lr::EOI, 0, "level: maintenance on EOI to resample");
    assert_eq!(v & lr::HW, 0);
    assert_eq!(lrs[1], 0);
}

#[test]
fn an_interrupt_is_never_in_two_list_registers() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    g.set_line(0, UART, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    g.fold(0, &mut lrs);
    g.flush(0, &mut lrs);
    assert_eq!(lrs.iter().filter(|&&l| l != 0).count(), 1);
}

#[test]
fn level_interrupt_still_high_after_completion_is_pending_again() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    g.set_line(0, UART, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    lrs[0] &= !(3 << lr::STATE_SHIFT); // guest acknowledged and deactivated it
    g.fold(0, &mut lrs);
    assert_eq!(lrs[0], 0, "completed entries are cleared");
    g.flush(0, &mut lrs);
    assert_eq!(lrs[0] & lr::VINTID_MASK, u64::from(UART));
}

#[test]
fn level_interrupt_dropped_before_completion_is_not_reinjected() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    g.set_line(0, UART, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    g.set_line(0, UART, false);
    lrs[0] &= !(3 << lr::STATE_SHIFT);
    g.fold(0, &mut lrs);
    g.flush(0, &mut lrs);
    assert_eq!(lrs, [0; 4]);
}

#[test]
fn level_interrupt_dropped_before_acknowledge_is_retracted_from_its_lr() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    g.set_line(0, UART, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_eq!(g.set_line(0, UART, false), Kick(1), "its vCPU must refresh");
    g.fold(0, &mut lrs);
    g.flush(0, &mut lrs);
    assert_eq!(lrs, [0; 4]);
    assert_eq!(g.gicd_read(0x204, 4) & (1 << 1), 0, "no longer pending");
}

#[test]
fn level_interrupt_already_acknowledged_stays_active_when_its_line_drops() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    g.set_line(0, UART, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    lrs[0] = (lrs[0] & !(3 << lr::STATE_SHIFT)) | (lr::ACTIVE << lr::STATE_SHIFT);
    g.fold(0, &mut lrs);
    g.set_line(0, UART, false);
    g.flush(0, &mut lrs);
    assert_eq!(lr::state(lrs[0]), lr::ACTIVE);
}

#[test]
fn software_pended_level_interrupt_is_not_retracted() {
    let mut g = linux_init();
    enable_spi(&mut g, 40);
    g.gicd_write(0x204, 4, 1 << 8); // ISPENDR: INTID 40
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    g.set_line(0, 40, false);
    g.fold(0, &mut lrs);
    g.flush(0, &mut lrs);
    assert_eq!(lrs[0] & lr::VINTID_MASK, 40);
}

#[test]
fn disabled_interrupt_is_not_flushed() {
    let mut g = linux_init();
    assert_eq!(g.set_line(0, UART, true), Kick(0));
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_eq!(lrs, [0; 4]);
    assert!(!g.has_pending(0));
}

#[test]
fn group1_disabled_in_gicd_ctlr_blocks_spis() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    g.gicd_write(0, 4, 0x10);
    g.set_line(0, UART, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_eq!(lrs, [0; 4]);
    assert_eq!(g.gicd_write(0, 4, 0x12), Kick(1), "enabling delivers it");
}

#[test]
fn spi_goes_to_the_vcpu_irouter_names() {
    let mut g = linux_init();
    enable_spi(&mut g, UART);
    g.gicd_write(0x6000 + u64::from(UART) * 8, 8, 1);
    assert_eq!(g.set_line(0, UART, true), Kick(2));
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_eq!(lrs, [0; 4]);
    g.flush(1, &mut lrs);
    assert_eq!(lrs[0] & lr::VINTID_MASK, u64::from(UART));
}

#[test]
fn sgi_by_target_list_reaches_only_the_named_vcpu() {
    let mut g = linux_init();
    // SGI 3 to Aff1=0, TargetList bit 1.
    assert_eq!(g.write_sgi1r(0, (3 << 24) | 0b10), Kick(2));
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_eq!(lrs, [0; 4]);
    g.flush(1, &mut lrs);
    assert_eq!(lrs[0] & lr::VINTID_MASK, 3);
    assert_eq!(lrs[0] & lr::EOI, 0, "SGIs are edge: no resampling");
}

#[test]
fn sgi_with_irm_reaches_every_other_vcpu() {
    let mut g = linux_init();
    assert_eq!(g.write_sgi1r(1, (1 << 40) | (5 << 24)), Kick(1));
}

#[test]
fn sgi_to_an_absent_affinity_is_counted() {
    let mut g = linux_init();
    assert_eq!(g.write_sgi1r(0, (1 << 24) | (1 << 16) | 1), Kick(0));
    assert_eq!(g.stats().no_target, 1);
}

#[test]
fn second_sgi_while_active_makes_the_entry_pending_and_active() {
    let mut g = linux_init();
    g.write_sgi1r(0, (2 << 24) | 1);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    lrs[0] = (lrs[0] & !(3 << lr::STATE_SHIFT)) | (lr::ACTIVE << lr::STATE_SHIFT);
    g.fold(0, &mut lrs);
    g.write_sgi1r(0, (2 << 24) | 1);
    g.flush(0, &mut lrs);
    assert_eq!(lr::state(lrs[0]), lr::PENDING_ACTIVE);
    assert_eq!(lrs[1], 0);
}

#[test]
fn priority_order_decides_what_fits_and_overflow_is_reported() {
    let mut g = linux_init();
    for (i, intid) in [40u32, 41, 42].iter().enumerate() {
        enable_spi(&mut g, *intid);
        g.gicd_write(0x400 + u64::from(*intid), 1, 0x80 - (i as u64) * 0x10);
        g.set_line(0, *intid, true);
    }
    let mut lrs = [0u64; 2];
    assert!(g.flush(0, &mut lrs), "one did not fit");
    let got: Vec<u64> = lrs.iter().map(|l| l & lr::VINTID_MASK).collect();
    assert_eq!(got, [42, 41], "highest priority (lowest value) first");
}

#[test]
fn hardware_linked_timer_ppi_carries_hw_and_pintid_and_no_eoi() {
    let mut g = linux_init();
    g.set_hw_linked(0, 27, 27);
    g.gicr_write(0x1_0000 + 0x100, 4, 1 << 27);
    assert_eq!(g.set_line(0, 27, true), Kick(1));
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_ne!(lrs[0] & lr::HW, 0);
    assert_eq!((lrs[0] >> lr::PINTID_SHIFT) & 0x1fff, 27);
    assert_eq!(lrs[0] & lr::EOI, 0);
}

/// A vCPU whose hardware-linked virtual timer (PPI 27 on physical 27) the
/// guest enabled.
fn vtimer_enabled() -> Vgic {
    let mut g = linux_init();
    g.set_hw_linked(0, 27, 27);
    g.gicr_write(0x1_0000 + 0x100, 4, 1 << 27);
    g
}

fn ispendr0(g: &mut Vgic) -> u64 {
    g.gicr_read(0x1_0000 + 0x200, 4)
}

fn isactiver0(g: &mut Vgic) -> u64 {
    g.gicr_read(0x1_0000 + 0x300, 4)
}

#[test]
fn timer_latched_then_output_low_is_withdrawn_and_physical_given_back() {
    let mut g = vtimer_enabled();
    g.set_line(0, 27, true);
    let mut lrs = [0u64; 4];
    assert_eq!(g.sample_hw_output(0, 27, false, &mut lrs), Some(27));
    assert_eq!(ispendr0(&mut g) & (1 << 27), 0, "not pending");
    assert!(!g.flush(0, &mut lrs));
    assert_eq!(lrs, [0; 4], "nothing delivered");
}

#[test]
fn timer_pending_in_a_list_register_is_withdrawn_when_its_output_drops() {
    let mut g = vtimer_enabled();
    g.set_line(0, 27, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    g.fold(0, &mut lrs);
    assert_eq!(g.sample_hw_output(0, 27, false, &mut lrs), Some(27));
    assert_eq!(lrs[0], 0, "entry withdrawn");
    assert_eq!(ispendr0(&mut g) & (1 << 27), 0);
    // The next expiry is delivered again.
    g.set_line(0, 27, true);
    g.flush(0, &mut lrs);
    assert_eq!(lrs[0] & lr::VINTID_MASK, 27);
}

#[test]
fn acknowledged_timer_stays_active_when_its_output_drops() {
    let mut g = vtimer_enabled();
    g.set_line(0, 27, true);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    // The guest acknowledged it: the list register says active.
    lrs[0] = (lrs[0] & !(3 << lr::STATE_SHIFT)) | (lr::ACTIVE << lr::STATE_SHIFT);
    g.fold(0, &mut lrs);
    assert_eq!(g.sample_hw_output(0, 27, false, &mut lrs), None);
    assert_eq!(lr::state(lrs[0]), lr::ACTIVE);
    assert_ne!(isactiver0(&mut g) & (1 << 27), 0, "active");
    assert_eq!(ispendr0(&mut g) & (1 << 27), 0, "not pending");
}

#[test]
fn timer_output_high_reads_pending_before_el2_takes_it() {
    let mut g = vtimer_enabled();
    let mut lrs = [0u64; 4];
    assert_eq!(ispendr0(&mut g) & (1 << 27), 0);
    assert_eq!(g.sample_hw_output(0, 27, true, &mut lrs), None);
    assert_ne!(
        ispendr0(&mut g) & (1 << 27),
        0,
        "pending follows the output"
    );
    // Delivery still waits for the physical interrupt (no double delivery).
    assert!(!g.flush(0, &mut lrs));
    assert_eq!(lrs, [0; 4]);
}

#[test]
fn sampling_an_interrupt_that_is_not_hardware_linked_does_nothing() {
    let mut g = linux_init();
    g.gicr_write(0x1_0000 + 0x100, 4, 1 << 26);
    g.set_line(0, 26, true);
    let mut lrs = [0u64; 4];
    assert_eq!(g.sample_hw_output(0, 26, false, &mut lrs), None);
    assert_eq!(g.sample_hw_output(0, 1020, false, &mut lrs), None);
    assert_eq!(g.sample_hw_output(7, 27, false, &mut lrs), None);
    assert_ne!(ispendr0(&mut g) & (1 << 26), 0, "still pending");
}

#[test]
fn hardware_linked_spi_is_latched_per_physical_interrupt_and_carries_its_pintid() {
    let mut g = linux_init();
    g.set_hw_linked(0, 36, 52);
    enable_spi(&mut g, 36);
    assert_eq!(g.set_line(0, 36, true), Kick(1));
    // The physical line cannot be sampled: dropping it is not a retraction.
    g.set_line(0, 36, false);
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_eq!(lrs[0] & lr::VINTID_MASK, 36);
    assert_ne!(lrs[0] & lr::HW, 0);
    assert_eq!((lrs[0] >> lr::PINTID_SHIFT) & 0x1fff, 52);
    assert_eq!(
        lrs[0] & lr::EOI,
        0,
        "no maintenance: the hardware deactivates"
    );
}

#[test]
fn hardware_linking_an_intid_outside_the_spis_is_ignored() {
    let mut g = linux_init();
    g.set_hw_linked(0, 32 + 64, 52);
    g.set_hw_linked(0, 5, 52);
    // SGI 5 from vCPU 1 to vCPU 0 (Aff1=0, TargetList bit 0).
    assert_eq!(g.write_sgi1r(1, (5 << 24) | 0b1), Kick(1));
    let mut lrs = [0u64; 4];
    g.flush(0, &mut lrs);
    assert_eq!(lrs[0] & lr::VINTID_MASK, 5);
    assert_eq!(lrs[0] & lr::HW, 0, "an SGI is never hardware-linked");
}

#[test]
fn reset_values_match_the_architecture() {
    let mut g = Vgic::new(&MPIDRS, 64);
    assert_eq!(g.gicd_read(0x0, 4), 0x50, "ARE and DS set, groups disabled");
    assert_eq!(g.gicd_read(0x8, 4), IIDR);
    assert_eq!(g.gicd_read(0xc, 4), 0, "TYPER2");
    assert_eq!(g.gicd_read(0xffe8, 4), 0x3b);
    assert_eq!(g.gicr_read(0x14, 4), 0b110, "redistributor asleep");
    assert_eq!(g.gicr_read(0x8, 8) & (1 << 4), 0, "vCPU 0 is not Last");
    assert_eq!(g.gicr_read(GICR_FRAME_SIZE + 0x8, 8) & (1 << 4), 1 << 4);
    assert_eq!(
        g.gicr_read(GICR_FRAME_SIZE + 0x8, 8) >> 8 & 0xffff,
        1,
        "Processor_Number"
    );
    assert_eq!(g.gicr_read(0x1_0000 + 0xc00, 4), 0xaaaa_aaaa, "SGIs edge");
    assert_eq!(g.gicr_read(0x1_0000 + 0xc04, 4), 0, "PPIs level");
    assert_eq!(
        g.gicd_read(0x100, 4),
        0,
        "SGI/PPI bits RAZ in GICD with ARE"
    );
}

#[test]
fn bad_sizes_read_zero_write_nothing_and_are_counted() {
    let mut g = linux_init();
    assert_eq!(g.gicd_read(0x4, 2), 0);
    g.gicd_write(0x104, 2, 0xffff);
    assert_eq!(g.gicd_read(0x104, 4), 0);
    g.gicd_write(0x6000 + 40 * 8, 2, 1);
    assert_eq!(g.stats().bad_size, 3);
}

#[test]
fn registers_of_unimplemented_spis_are_raz_wi() {
    let mut g = Vgic::new(&MPIDRS, 32);
    g.gicd_write(0x100 + 3 * 4, 4, 0xffff_ffff);
    assert_eq!(g.gicd_read(0x100 + 3 * 4, 4), 0);
    assert_eq!(g.set_line(0, 200, true), Kick(0));
}

#[test]
fn pending_state_in_a_list_register_reads_back_through_ispendr() {
    let mut g = linux_init();
    enable_spi(&mut g, 40);
    g.set_line(0, 40, true);
    g.set_line(0, 40, false);
    let mut lrs = [0u64; 4];
    g.gicd_write(0xc00 + 40 / 16 * 4, 4, 2 << ((40 % 16) * 2)); // edge
    g.set_line(0, 40, true);
    g.flush(0, &mut lrs);
    g.fold(0, &mut lrs);
    assert_ne!(g.gicd_read(0x204, 4) & (1 << 8), 0);
}

proptest! {
    #[test]
    fn arbitrary_guest_traffic_never_panics_and_keeps_lrs_unique(
        ops in proptest::collection::vec((0u8..7, any::<u64>(), any::<u64>(), 0u8..9), 0..200)
    ) {
        let mut g = Vgic::new(&MPIDRS, 64);
        let mut lrs = [[0u64; 4]; 2];
        for (op, a, b, size) in ops {
            let v = (a % 2) as usize;
            match op {
                0 => { g.gicd_read(a % 0x1_0000, size); }
                1 => { g.gicd_write(a % 0x1_0000, size, b); }
                2 => { g.gicr_read(a % 0x5_0000, size); }
                3 => { g.gicr_write(a % 0x5_0000, size, b); }
                4 => { g.write_sgi1r(v, b); }
                5 => { g.set_line(v, (b % 1100) as u32, a & 1 != 0); }
                _ => {
                    // The guest completes some entries, then the hypervisor refreshes.
                    for l in lrs[v].iter_mut() {
                        if b & 1 != 0 { *l &= !(3 << lr::STATE_SHIFT); }
                    }
                    g.fold(v, &mut lrs[v]);
                    g.flush(v, &mut lrs[v]);
                }
            }
            for l in &lrs {
                let ids: Vec<u64> = l.iter().filter(|&&x| lr::state(x) != 0).map(|x| x & lr::VINTID_MASK).collect();
                let mut d = ids.clone();
                d.sort_unstable();
                d.dedup();
                prop_assert_eq!(d.len(), ids.len());
            }
        }
    }
}

/// `linux_init`, then SGI 4 moved to Group 0 (GICR_IGROUPR0 bit 4 cleared on
/// every vCPU) and Group 0 enabled (GICD_CTLR.EnableGrp0).
fn with_group0_sgi4() -> Vgic {
    let mut g = linux_init();
    for v in 0..2u64 {
        g.gicr_write(v * GICR_FRAME_SIZE + 0x1_0080, 4, 0xffff_ffef);
    }
    g.gicd_write(0x0, 4, 0x13);
    g
}

/// Fault 3 of issue 9: ICC_SGI0R_EL1 and ICC_ASGI1R_EL1 writes generate Group 0
/// SGIs (GICD_CTLR.DS = 1).
#[test]
fn fault3_sgi0r_and_asgi1r_generate_group0_sgis() {
    for reg in [SgiRegister::Sgi0r, SgiRegister::Asgi1r] {
        let mut g = with_group0_sgi4();
        assert_eq!(g.write_sgi(0, reg, (4 << 24) | 0b10), Kick(2), "{reg:?}");
        let mut lrs = [0u64; 4];
        g.flush(1, &mut lrs);
        assert_eq!(lrs[0] & lr::VINTID_MASK, 4, "{reg:?}");
        assert_eq!(lrs[0] & lr::GROUP1, 0, "{reg:?}: a Group 0 entry");
    }
}

#[test]
fn sgi0r_does_not_generate_a_group1_sgi() {
    let mut g = with_group0_sgi4();
    // SGI 5 stays in Group 1.
    assert_eq!(
        g.write_sgi(0, SgiRegister::Sgi0r, (5 << 24) | 0b10),
        Kick(0)
    );
    assert_eq!(
        g.write_sgi(0, SgiRegister::Asgi1r, (5 << 24) | 0b10),
        Kick(0)
    );
    let mut lrs = [0u64; 4];
    g.flush(1, &mut lrs);
    assert_eq!(lrs, [0; 4]);
}

#[test]
fn sgi1r_generates_an_sgi_of_either_group() {
    let mut g = with_group0_sgi4();
    assert_eq!(
        g.write_sgi(0, SgiRegister::Sgi1r, (4 << 24) | 0b10),
        Kick(2)
    );
    assert_eq!(
        g.write_sgi(0, SgiRegister::Sgi1r, (5 << 24) | 0b10),
        Kick(2)
    );
}

#[test]
fn sgi0r_with_irm_reaches_every_other_vcpu() {
    let mut g = with_group0_sgi4();
    assert_eq!(
        g.write_sgi(1, SgiRegister::Sgi0r, (1 << 40) | (4 << 24)),
        Kick(1)
    );
}

#[test]
fn spi_target_follows_irouter_and_is_none_for_private_interrupts() {
    let mut g = linux_init();
    assert_eq!(g.spi_target(UART), Some(0));
    g.gicd_write(0x6000 + u64::from(UART) * 8, 8, 1);
    assert_eq!(g.spi_target(UART), Some(1));
    assert_eq!(g.spi_target(27), None);
}
