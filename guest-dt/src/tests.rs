use super::*;
use arch_emu::addr::Ipa;
use fdt::Fdt;

fn layout() -> GuestLayout {
    GuestLayout::qemu_virt_default(2, 512 << 20)
}

fn chosen() -> Chosen {
    Chosen {
        bootargs: "console=ttyAMA0".to_string(),
        initrd: Some(Region {
            base: Ipa(0x8800_0000),
            size: 0x10_0000,
        }),
    }
}

fn cells(p: &[u8]) -> Vec<u32> {
    p.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn default_layout_is_valid() {
    assert_eq!(layout().validate(), Ok(()));
}

#[test]
fn rendered_dtb_has_memory_cpus_and_chosen() {
    let dtb = layout().render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let mem: Vec<_> = fdt.memory().regions().collect();
    assert_eq!(mem.len(), 1);
    assert_eq!(mem[0].starting_address as u64, 0x8000_0000);
    assert_eq!(mem[0].size, Some(512 << 20));
    assert_eq!(fdt.cpus().count(), 2);
    let ids: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
    assert_eq!(ids, [0, 1]);
    assert_eq!(fdt.chosen().bootargs(), Some("console=ttyAMA0"));
    let ch = fdt.find_node("/chosen").unwrap();
    assert_eq!(
        ch.property("linux,initrd-start").unwrap().as_usize(),
        Some(0x8800_0000)
    );
    assert_eq!(
        ch.property("linux,initrd-end").unwrap().as_usize(),
        Some(0x8810_0000)
    );
    assert_eq!(fdt.chosen().stdout().map(|n| n.name), Some("pl011@9000000"));
}

#[test]
fn gic_node_describes_distributor_and_redistributors() {
    let dtb = layout().render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let gic = fdt.find_compatible(&["arm,gic-v3"]).unwrap();
    let regs: Vec<_> = gic.reg().unwrap().collect();
    assert_eq!(regs[0].starting_address as u64, 0x0800_0000);
    assert_eq!(regs[0].size, Some(0x1_0000));
    assert_eq!(regs[1].starting_address as u64, 0x080a_0000);
    assert_eq!(regs[1].size, Some(0x4_0000));
    assert!(gic.property("interrupt-controller").is_some());
    assert_eq!(cells(gic.property("interrupts").unwrap().value), [1, 9, 4]);
}

#[test]
fn timer_and_uart_interrupts_are_derived_from_intids() {
    let dtb = layout().render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let t = fdt.find_compatible(&["arm,armv8-timer"]).unwrap();
    assert_eq!(
        cells(t.property("interrupts").unwrap().value),
        [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
    );
    let u = fdt.find_compatible(&["arm,pl011"]).unwrap();
    assert_eq!(cells(u.property("interrupts").unwrap().value), [0, 1, 4]);
    assert_eq!(
        u.compatible().unwrap().all().collect::<Vec<_>>(),
        ["arm,pl011", "arm,primecell"]
    );
}

#[test]
fn psci_uses_hvc() {
    let dtb = layout().render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let p = fdt.find_node("/psci").unwrap();
    assert_eq!(p.property("method").unwrap().as_str(), Some("hvc"));
}

#[test]
fn psci_method_smc_is_rendered_when_asked_for() {
    let mut l = layout();
    l.psci_method = PsciMethod::Smc;
    let dtb = l.render(&Chosen::default()).expect("renders");
    let fdt = fdt::Fdt::new(&dtb).expect("parses");
    let p = fdt.find_node("/psci").expect("psci node");
    assert_eq!(p.property("method").and_then(|m| m.as_str()), Some("smc"));
}

#[test]
fn pci_node_has_ecam_ranges_without_io_and_swizzled_interrupt_map() {
    let dtb = layout().render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let n = fdt.find_compatible(&["pci-host-ecam-generic"]).unwrap();
    let reg: Vec<_> = n.reg().unwrap().collect();
    assert_eq!(reg[0].starting_address as u64, 0x3000_0000);
    assert_eq!(reg[0].size, Some(16 << 20));
    assert_eq!(cells(n.property("bus-range").unwrap().value), [0, 15]);
    assert_eq!(n.property("linux,pci-domain").unwrap().as_usize(), Some(1));
    let ranges = cells(n.property("ranges").unwrap().value);
    assert_eq!(ranges.len(), 14, "two ranges, no I/O");
    assert_eq!(ranges[0], 0x0200_0000);
    assert_eq!(ranges[7], 0x4300_0000);
    assert!(ranges.chunks(7).all(|r| r[0] & 0x0300_0000 != 0x0100_0000));
    let map = cells(n.property("interrupt-map").unwrap().value);
    assert_eq!(map.len(), 160);
    // Device 1, INTA -> the host bridge's INTB (SPI 36 = cell 4).
    let entry = &map[40..50];
    assert_eq!(entry[0], 1 << 11);
    assert_eq!(entry[3], 1);
    assert_eq!(entry[8], 4);
    assert_eq!(
        cells(n.property("interrupt-map-mask").unwrap().value),
        [0x1800, 0, 0, 7]
    );
}

#[test]
fn layout_without_pci_has_no_pci_node() {
    let mut l = layout();
    l.pci = None;
    let dtb = l.render(&Chosen::default()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    assert!(fdt.find_compatible(&["pci-host-ecam-generic"]).is_none());
}

#[test]
fn zero_cpus_is_refused() {
    let mut l = layout();
    l.mpidrs.clear();
    assert_eq!(l.validate(), Err(LayoutError::NoCpus));
}

#[test]
fn tiny_ram_is_refused() {
    let l = GuestLayout::qemu_virt_default(1, 1 << 20);
    assert_eq!(l.validate(), Err(LayoutError::RamTooSmall(1 << 20)));
}

#[test]
fn overlapping_regions_are_named() {
    let mut l = layout();
    l.uart_base = 0x0800_0000;
    assert_eq!(
        l.validate(),
        Err(LayoutError::Overlap {
            a: "gicd",
            b: "uart"
        })
    );
}

#[test]
fn misaligned_ram_is_refused() {
    let mut l = layout();
    l.ram.base.0 += 0x1000;
    assert_eq!(
        l.validate(),
        Err(LayoutError::Misaligned {
            item: "ram",
            base: 0x8000_1000
        })
    );
}

#[test]
fn region_past_ipa_space_is_refused() {
    let mut l = layout();
    if let Some(p) = l.pci.as_mut() {
        p.mem64.base = Ipa(0xff_0000_0000);
    }
    assert_eq!(l.validate(), Err(LayoutError::OutOfRange("pci-mem64")));
}

#[test]
fn spi_outside_the_distributor_is_refused() {
    let mut l = layout();
    l.uart_spi = 32 + 256;
    assert_eq!(
        l.validate(),
        Err(LayoutError::BadInterrupt {
            item: "uart",
            intid: 288
        })
    );
}

#[test]
fn shared_spi_is_refused() {
    let mut l = layout();
    if let Some(p) = l.pci.as_mut() {
        p.intx_spis[2] = 33;
    }
    assert_eq!(
        l.validate(),
        Err(LayoutError::BadInterrupt {
            item: "pci-intc",
            intid: 33
        })
    );
}

#[test]
fn timer_on_an_spi_is_refused() {
    let mut l = layout();
    l.timer_ppis[2] = 40;
    assert_eq!(
        l.validate(),
        Err(LayoutError::BadInterrupt {
            item: "timer-virt",
            intid: 40
        })
    );
}

#[test]
fn mem32_aperture_above_4g_is_refused() {
    let mut l = layout();
    if let Some(p) = l.pci.as_mut() {
        p.mem32.base = Ipa(0xf000_0000);
    }
    assert_eq!(l.validate(), Err(LayoutError::Mem32Above4G));
}

#[test]
fn bad_spi_count_is_refused() {
    let mut l = layout();
    l.num_spis = 100;
    assert_eq!(l.validate(), Err(LayoutError::BadSpiCount(100)));
}

#[test]
fn render_refuses_an_invalid_layout() {
    let mut l = layout();
    l.mpidrs.clear();
    assert_eq!(
        l.render(&Chosen::default()),
        Err(RenderError::Layout(LayoutError::NoCpus))
    );
}

#[test]
fn a_40_bit_ipa_space_keeps_the_default_layout() {
    let mut l = layout();
    let before = l.clone();
    l.fit_ipa(40).expect("fits");
    assert_eq!(l, before);
}

#[test]
fn a_36_bit_ipa_space_moves_the_64_bit_aperture_inside_it() {
    let mut l = layout();
    l.fit_ipa(36).expect("fits");
    let m = l.pci.as_ref().expect("pci").mem64;
    assert_eq!((m.base.0, m.size), (1 << 35, 1 << 34));
    assert!(l.render(&chosen()).is_ok());
}

#[test]
fn a_32_bit_ipa_space_is_refused_naming_the_aperture() {
    let mut l = layout();
    assert_eq!(l.fit_ipa(32), Err(LayoutError::OutOfRange("pci mem64")));
}

#[test]
fn gic_node_is_an_msi_controller_with_the_mbi_range_as_intids() {
    let dtb = layout().render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let gic = fdt.find_compatible(&["arm,gic-v3"]).unwrap();
    assert!(gic.property("msi-controller").is_some());
    assert_eq!(cells(gic.property("mbi-ranges").unwrap().value), [64, 64]);
}

#[test]
fn pci_node_names_the_gic_as_its_msi_parent() {
    let dtb = layout().render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let n = fdt.find_compatible(&["pci-host-ecam-generic"]).unwrap();
    let gic = fdt.find_compatible(&["arm,gic-v3"]).unwrap();
    let phandle = gic.property("phandle").unwrap().as_usize().unwrap();
    assert_eq!(n.property("msi-parent").unwrap().as_usize(), Some(phandle));
}

#[test]
fn without_an_mbi_range_nothing_msi_is_rendered() {
    let mut l = layout();
    l.mbi = None;
    assert_eq!(l.msi_doorbell(), None);
    let dtb = l.render(&chosen()).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let gic = fdt.find_compatible(&["arm,gic-v3"]).unwrap();
    assert!(gic.property("msi-controller").is_none());
    assert!(gic.property("mbi-ranges").is_none());
    let n = fdt.find_compatible(&["pci-host-ecam-generic"]).unwrap();
    assert!(n.property("msi-parent").is_none());
}

#[test]
fn msi_doorbell_is_gicd_setspi_nsr() {
    assert_eq!(layout().msi_doorbell(), Some(0x0800_0040));
}

#[test]
fn mbi_range_over_the_uart_or_intx_is_refused_by_name() {
    let mut l = layout();
    l.mbi = Some(MbiRange {
        first: 33,
        count: 4,
    });
    assert_eq!(
        l.validate(),
        Err(LayoutError::BadInterrupt {
            item: "uart",
            intid: 33
        })
    );
    l.mbi = Some(MbiRange {
        first: 38,
        count: 8,
    });
    assert_eq!(
        l.validate(),
        Err(LayoutError::BadInterrupt {
            item: "pci-intd",
            intid: 38
        })
    );
}

#[test]
fn mbi_range_outside_the_spis_is_refused() {
    let mut l = layout();
    for (first, count) in [(16, 8), (280, 16), (64, 0), (u32::MAX - 1, 4)] {
        l.mbi = Some(MbiRange { first, count });
        assert_eq!(
            l.validate(),
            Err(LayoutError::BadInterrupt {
                item: "mbi-ranges",
                intid: first
            }),
            "{first}+{count}"
        );
    }
}
