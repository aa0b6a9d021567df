use super::*;
use vm_fdt::FdtWriter;

const QEMU_VIRT: &[u8] = include_bytes!("../tests/data/qemu-virt-gicv3.dtb");
const QEMU_MODULES_SMMU: &[u8] = include_bytes!("../tests/data/qemu-virt-modules-smmuv3.dtb");
/// `qemu-system-aarch64` 10.0 `-M virt,gic-version=3,virtualization=on,iommu=smmuv3,dumpdtb=`
/// `-smp 2 -m 2G -device igb` (the dump recompiled by dtc to drop the padding).
const QEMU_SMMU: &[u8] = include_bytes!("../tests/data/qemu-virt-gicv3-smmuv3.dtb");

#[test]
fn qemu_virt_gicv3_platform_is_read() {
    let p = parse(QEMU_VIRT).expect("valid");
    assert_eq!(
        p.memory,
        [Region {
            base: 0x4000_0000,
            size: 0x4000_0000
        }]
    );
    assert_eq!(p.cpus, [Cpu { mpidr: 0 }, Cpu { mpidr: 1 }]);
    assert_eq!(
        p.gic.gicd,
        Region {
            base: 0x0800_0000,
            size: 0x1_0000
        }
    );
    assert_eq!(p.gic.gicr[0].base, 0x080a_0000);
    assert_eq!(p.gic.maintenance_intid, Some(25));
    assert_eq!(
        p.timer,
        Timer {
            secure_phys: 29,
            phys: 30,
            virt: 27,
            hyp: 26
        }
    );
    assert_eq!(p.uart.regs.base, 0x0900_0000);
    assert_eq!(p.uart.intid, 33);
    assert_eq!(p.uart.node, "/pl011@9000000");
    assert_eq!(p.psci, PsciConduit::Smc);
    assert!(p.modules.is_empty());
    assert!(p.smmus.is_empty());
}

#[test]
fn qemu_pcie_host_bridge_is_recorded_with_its_windows() {
    let p = parse(QEMU_MODULES_SMMU).expect("valid");
    let h = &p.pcie[0];
    assert_eq!(h.compatible, "pci-host-ecam-generic");
    assert_eq!(
        h.config,
        Some(Region {
            base: 0x40_1000_0000,
            size: 0x1000_0000
        })
    );
    assert_eq!(h.bus_range, (0, 255));
    assert_eq!(h.segment, Some(0));
    assert!(h
        .ranges
        .iter()
        .any(|r| r.space == PciSpace::Io && r.cpu_addr == 0x3eff_0000));
    assert!(h
        .ranges
        .iter()
        .any(|r| r.space == PciSpace::Mem32 && r.cpu_addr == 0x1000_0000 && r.size == 0x2eff_0000));
    assert!(h
        .ranges
        .iter()
        .any(|r| r.space == PciSpace::Mem64 && r.cpu_addr == 0x80_0000_0000));
}

#[test]
fn smmuv3_is_recorded() {
    let p = parse(QEMU_MODULES_SMMU).expect("valid");
    assert_eq!(p.smmus.len(), 1);
    assert_eq!(
        p.smmus[0].regs,
        Region {
            base: 0x0905_0000,
            size: 0x2_0000
        }
    );
}

#[test]
fn guest_loader_modules_are_read_with_the_roots_cells() {
    let p = parse(QEMU_MODULES_SMMU).expect("valid");
    let k = p.kernel().expect("kernel");
    assert_eq!(
        k.region,
        Region {
            base: 0x4a00_0000,
            size: 3
        }
    );
    assert_eq!(k.bootargs.as_deref(), Some("console=ttyAMA0 panic=-1"));
    assert_eq!(
        p.ramdisk().expect("ramdisk").region,
        Region {
            base: 0x4c00_0000,
            size: 3
        }
    );
    assert_eq!(p.cpus.len(), 4);
}

fn qemu_pcie() -> PcieHost {
    parse(QEMU_SMMU).expect("valid").pcie.remove(0)
}

#[test]
fn qemu_pcie_host_bridge_is_dma_coherent() {
    assert!(qemu_pcie().dma_coherent);
}

#[test]
fn qemu_intx_of_device_0_pin_a_is_spi_3() {
    // interrupt-map row 0: <0x0 0x0 0x0 1 &gic 0 0 GIC_SPI 3 IRQ_TYPE_LEVEL_HIGH>.
    assert_eq!(qemu_pcie().intx_intid(0x0000, 1), Some(32 + 3));
}

#[test]
fn qemu_intx_follows_the_virt_machines_rotation_for_every_device_and_pin() {
    // QEMU virt: device d, pin p (1-based) -> SPI 3 + (d + p - 1) % 4.
    let h = qemu_pcie();
    for dev in 0u16..32 {
        for pin in 1u8..=4 {
            let spi = 3 + (u32::from(dev) + u32::from(pin) - 1) % 4;
            assert_eq!(
                h.intx_intid(dev << 3, pin),
                Some(32 + spi),
                "dev {dev} pin {pin}"
            );
        }
    }
}

#[test]
fn qemu_intx_mask_ignores_bus_and_function() {
    // interrupt-map-mask <0x1800 0 0 7>: bus 5, device 1, function 3 matches device 1.
    let h = qemu_pcie();
    assert_eq!(
        h.intx_intid((5 << 8) | (1 << 3) | 3, 2),
        h.intx_intid(1 << 3, 2)
    );
}

#[test]
fn intx_pins_outside_a_to_d_have_no_interrupt() {
    let h = qemu_pcie();
    assert_eq!(h.intx_intid(0, 0), None);
    assert_eq!(h.intx_intid(0, 5), None);
}

#[test]
fn qemu_intx_lines_are_level_triggered() {
    let h = qemu_pcie();
    assert_eq!(h.interrupt_map.len(), 16);
    assert!(h
        .interrupt_map
        .iter()
        .all(|e| e.irq.trigger == Trigger::Level));
    assert_eq!(h.interrupt_map_mask, [0x1800, 0, 0, 7]);
}

#[test]
fn qemu_iommu_map_gives_the_rid_as_stream_id_on_the_smmu() {
    // iommu-map = <0x0 &smmu 0x0 0x10000>: StreamID = RID.
    let p = parse(QEMU_SMMU).expect("valid");
    let h = &p.pcie[0];
    assert_eq!(h.stream_id(0x0108), Some(("/smmuv3@9050000", 0x0108)));
    assert_eq!(p.smmu_stream(h, 0x0108), Some((0, 0x0108)));
}

#[test]
fn qemu_msi_map_names_the_its_with_the_rid_as_device_id() {
    let h = qemu_pcie();
    assert_eq!(
        h.msi_device_id(0x0100),
        Some(("/intc@8000000/its@8080000", 0x0100))
    );
}

#[test]
fn qemu_its_is_recorded_with_its_frames_and_phandle() {
    // its@8080000: reg = <0 0x8080000 0 0x20000>, phandle 0x8004 (what msi-map names).
    let p = parse(QEMU_SMMU).expect("valid");
    assert_eq!(
        p.its,
        alloc::vec![Its {
            node: "/intc@8000000/its@8080000".into(),
            regs: Region {
                base: 0x0808_0000,
                size: 0x2_0000
            },
            phandle: Some(0x8004),
        }]
    );
    assert_eq!(p.its_device(&p.pcie[0], 0x0028), Some((0, 0x0028)));
}

#[test]
fn msi_parent_without_msi_map_gives_the_rid_as_device_id() {
    let h = PcieHost {
        msi_map: alloc::vec![],
        msi_parent: Some("/its".into()),
        ..qemu_pcie()
    };
    assert_eq!(h.msi_device_id(0x0210), Some(("/its", 0x0210)));
}

#[test]
fn msi_map_wins_over_msi_parent_and_its_gaps_have_no_device_id() {
    let h = PcieHost {
        msi_map: alloc::vec![IdMapEntry {
            rid_base: 0x100,
            target_phandle: 1,
            target: "/its".into(),
            out_base: 0x8000,
            length: 0x100,
        }],
        msi_parent: Some("/other".into()),
        ..qemu_pcie()
    };
    assert_eq!(h.msi_device_id(0x0101), Some(("/its", 0x8001)));
    assert_eq!(h.msi_device_id(0x0001), None);
}

#[test]
fn a_device_whose_msi_controller_is_not_an_its_has_no_its_device() {
    let mut p = parse(QEMU_SMMU).expect("valid");
    let h = PcieHost {
        msi_map: alloc::vec![],
        msi_parent: Some("/v2m".into()),
        ..p.pcie[0].clone()
    };
    p.pcie[0] = h.clone();
    assert_eq!(p.its_device(&h, 0x0028), None);
}

fn host_with_iommu_map(mask: Option<u32>) -> PcieHost {
    PcieHost {
        iommu_map: alloc::vec![IdMapEntry {
            rid_base: 0x100,
            target_phandle: 1,
            target: "/smmu".into(),
            out_base: 0x2000,
            length: 0x100,
        }],
        iommu_map_mask: mask,
        ..qemu_pcie()
    }
}

#[test]
fn iommu_map_offsets_the_rid_from_rid_base() {
    assert_eq!(
        host_with_iommu_map(None).stream_id(0x105),
        Some(("/smmu", 0x2005))
    );
}

#[test]
fn iommu_map_outside_every_row_has_no_stream() {
    let h = host_with_iommu_map(None);
    assert_eq!(h.stream_id(0xff), None);
    assert_eq!(h.stream_id(0x200), None);
}

#[test]
fn iommu_map_mask_is_applied_before_the_lookup() {
    // Mask 0xfff8: every function of device 0x100/8 shares function 0's StreamID.
    assert_eq!(
        host_with_iommu_map(Some(0xfff8)).stream_id(0x107),
        Some(("/smmu", 0x2000))
    );
}

#[test]
fn qemu_smmuv3_interrupts_are_named_edge_spis() {
    // interrupts = <SPI 0x4a edge, SPI 0x4b, SPI 0x4c, SPI 0x4d>, names eventq priq cmdq-sync gerror.
    let s = &parse(QEMU_SMMU).expect("valid").smmus[0];
    let edge = |intid| {
        Some(GicIrq {
            intid,
            trigger: Trigger::Edge,
        })
    };
    assert_eq!(s.irqs.eventq, edge(32 + 0x4a));
    assert_eq!(s.irqs.priq, edge(32 + 0x4b));
    assert_eq!(s.irqs.cmdq_sync, edge(32 + 0x4c));
    assert_eq!(s.irqs.gerror, edge(32 + 0x4d));
    assert_eq!(s.irqs.combined, None);
}

#[test]
fn qemu_smmuv3_is_dma_coherent_with_its_phandle() {
    let s = &parse(QEMU_SMMU).expect("valid").smmus[0];
    assert!(s.dma_coherent);
    assert_eq!(s.phandle, Some(0x8005));
    assert_eq!(s.node, "/smmuv3@9050000");
}

/// A minimal platform built with vm-fdt; `skip` leaves out a node or property.
fn synthetic(skip: &str, tweak: &str) -> Vec<u8> {
    synthetic_with(skip, tweak, 1, &|_| {})
}

/// [`synthetic`] with `ncpus` CPUs (`cpu@N`, MPIDR N) and `chosen` writing
/// more nodes at the end of `/chosen`; `tweak` `no-modules` leaves out the
/// boot module it otherwise holds, `cpu-cells-2` gives `/cpus` two address
/// cells.
pub(crate) fn synthetic_with(
    skip: &str,
    tweak: &str,
    ncpus: u32,
    chosen: &dyn Fn(&mut FdtWriter),
) -> Vec<u8> {
    let mut w = FdtWriter::new().expect("writer");
    let root = w.begin_node("").expect("root");
    w.property_u32("#address-cells", 2).expect("p");
    w.property_u32("#size-cells", 2).expect("p");
    if skip != "memory" {
        let m = w.begin_node("memory@40000000").expect("n");
        w.property_string("device_type", "memory").expect("p");
        if skip != "memory-reg" {
            w.property_array_u64("reg", &[0x4000_0000, 0x4000_0000])
                .expect("p");
        }
        w.end_node(m).expect("e");
    }
    let c = w.begin_node("cpus").expect("n");
    let cpu_cells = if tweak == "cpu-cells-2" { 2 } else { 1 };
    w.property_u32("#address-cells", cpu_cells).expect("p");
    w.property_u32("#size-cells", 0).expect("p");
    for i in 0..if skip == "cpu" { 0 } else { ncpus } {
        let cpu = w.begin_node(&format!("cpu@{i:x}")).expect("n");
        w.property_string("device_type", "cpu").expect("p");
        if skip != "cpu-reg" {
            if cpu_cells == 2 {
                w.property_u64("reg", u64::from(i)).expect("p");
            } else {
                w.property_u32("reg", i).expect("p");
            }
        }
        w.end_node(cpu).expect("e");
    }
    w.end_node(c).expect("e");
    if skip != "gic" {
        let g = w.begin_node("intc@8000000").expect("n");
        w.property_string("compatible", "arm,gic-v3").expect("p");
        w.property_u32("#interrupt-cells", if tweak == "gic-cells" { 2 } else { 3 })
            .expect("p");
        if tweak == "gic-one-region" {
            w.property_array_u64("reg", &[0x800_0000, 0x1_0000])
                .expect("p");
        } else {
            w.property_array_u64("reg", &[0x800_0000, 0x1_0000, 0x80a_0000, 0xf6_0000])
                .expect("p");
        }
        w.end_node(g).expect("e");
    }
    if skip != "timer" {
        let t = w.begin_node("timer").expect("n");
        w.property_string("compatible", "arm,armv8-timer")
            .expect("p");
        w.property_array_u32("interrupts", &[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4])
            .expect("p");
        w.end_node(t).expect("e");
    }
    if skip != "uart" {
        let u = w.begin_node("pl011@9000000").expect("n");
        w.property_string("compatible", "arm,pl011").expect("p");
        w.property_array_u64("reg", &[0x900_0000, 0x1000])
            .expect("p");
        if skip != "uart-interrupts" {
            w.property_array_u32("interrupts", &[0, 1, 4]).expect("p");
        }
        w.end_node(u).expect("e");
    }
    if skip != "psci" {
        let p = w.begin_node("psci").expect("n");
        w.property_string("compatible", "arm,psci-1.0").expect("p");
        if tweak != "psci-no-method" {
            w.property_string("method", if tweak == "psci-bad" { "svc" } else { "smc" })
                .expect("p");
        }
        w.end_node(p).expect("e");
    }
    if tweak.starts_with("smmu-") {
        let n = w.begin_node("smmuv3@9050000").expect("n");
        w.property_string("compatible", "arm,smmu-v3").expect("p");
        w.property_array_u64("reg", &[0x905_0000, 0x2_0000])
            .expect("p");
        w.property_u32("phandle", 0x10).expect("p");
        w.property_u32("#iommu-cells", 1).expect("p");
        w.property_array_u32("interrupts", &[0, 0x4a, 1, 0, 0x4d, 1])
            .expect("p");
        match tweak {
            "smmu-one-name" => w.property_string_list("interrupt-names", vec!["eventq".into()]),
            "smmu-bad-name" => {
                w.property_string_list("interrupt-names", vec!["eventq".into(), "errors".into()])
            }
            _ => w.property_string_list("interrupt-names", vec!["eventq".into(), "gerror".into()]),
        }
        .expect("p");
        w.end_node(n).expect("e");
    }
    if tweak.starts_with("pcie-") {
        let n = w.begin_node("pcie@10000000").expect("n");
        w.property_string("compatible", "pci-host-ecam-generic")
            .expect("p");
        w.property_string("device_type", "pci").expect("p");
        w.property_u32("#address-cells", 3).expect("p");
        w.property_u32("#size-cells", 2).expect("p");
        w.property_u32("#interrupt-cells", 1).expect("p");
        w.property_array_u64("reg", &[0x40_1000_0000, 0x1000_0000])
            .expect("p");
        match tweak {
            // Parent phandle 0x99 is not the GIC (which has none here).
            "pcie-imap-parent" => w
                .property_array_u32("interrupt-map", &[0, 0, 0, 1, 0x99, 0, 0, 0, 3, 4])
                .expect("p"),
            "pcie-iommu-phandle" => w
                .property_array_u32("iommu-map", &[0, 0x77, 0, 0x10000])
                .expect("p"),
            _ => {}
        }
        w.end_node(n).expect("e");
    }
    let ch = w.begin_node("chosen").expect("n");
    let module = |w: &mut FdtWriter, name: &str, kind: &str, base: u64, size: u64| {
        let m = w.begin_node(name).expect("n");
        w.property_string_list("compatible", vec!["multiboot,module".into(), kind.into()])
            .expect("p");
        w.property_array_u64("reg", &[base, size]).expect("p");
        w.end_node(m).expect("e");
    };
    match tweak {
        "modules-overlap" => {
            module(
                &mut w,
                "module@4a000000",
                "multiboot,kernel",
                0x4a00_0000,
                0x20_0000,
            );
            module(
                &mut w,
                "module@4a100000",
                "multiboot,ramdisk",
                0x4a10_0000,
                0x10_0000,
            );
        }
        "module-outside-ram" => module(
            &mut w,
            "module@90000000",
            "multiboot,kernel",
            0x9000_0000,
            0x1000,
        ),
        "two-kernels" => {
            module(
                &mut w,
                "module@4a000000",
                "multiboot,kernel",
                0x4a00_0000,
                0x1000,
            );
            module(
                &mut w,
                "module@4b000000",
                "multiboot,kernel",
                0x4b00_0000,
                0x1000,
            );
        }
        "no-modules" => {}
        _ => module(
            &mut w,
            "module@4a000000",
            "multiboot,kernel",
            0x4a00_0000,
            0x1000,
        ),
    }
    chosen(&mut w);
    w.end_node(ch).expect("e");
    w.end_node(root).expect("e");
    w.finish().expect("finish")
}

fn error_of(skip: &str, tweak: &str) -> String {
    parse(&synthetic(skip, tweak))
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn synthetic_platform_is_accepted() {
    let p = parse(&synthetic("", "")).expect("valid");
    assert_eq!(p.kernel().map(|k| k.region.base), Some(0x4a00_0000));
}

#[test]
fn missing_memory_is_named() {
    assert_eq!(
        error_of("memory", ""),
        "/memory: no memory node with a non-empty `reg`"
    );
}

#[test]
fn memory_without_reg_is_named() {
    assert_eq!(
        error_of("memory-reg", ""),
        "/memory@40000000: property `reg` missing"
    );
}

#[test]
fn no_cpu_is_named() {
    assert_eq!(error_of("cpu", ""), "/cpus: no CPU node");
}

#[test]
fn cpu_without_reg_is_named() {
    assert_eq!(
        error_of("cpu-reg", ""),
        "/cpus/cpu@0: property `reg` missing"
    );
}

#[test]
fn missing_gic_is_named() {
    assert_eq!(
        error_of("gic", ""),
        "/: no `arm,gic-v3` interrupt controller"
    );
}

#[test]
fn gic_with_one_region_is_named() {
    assert!(
        error_of("", "gic-one-region").starts_with("/intc@8000000: property `reg` has 1 regions")
    );
}

#[test]
fn gic_interrupt_cells_other_than_three_are_refused() {
    assert_eq!(
        error_of("", "gic-cells"),
        "/intc@8000000: property `#interrupt-cells` is not 3"
    );
}

#[test]
fn missing_timer_is_named() {
    assert_eq!(error_of("timer", ""), "/timer: no `arm,armv8-timer` node");
}

#[test]
fn missing_uart_is_named() {
    assert_eq!(error_of("uart", ""), "/: no `arm,pl011` console");
}

#[test]
fn uart_without_interrupts_is_named() {
    assert_eq!(
        error_of("uart-interrupts", ""),
        "/pl011@9000000: property `interrupts` missing"
    );
}

#[test]
fn missing_psci_is_named() {
    assert_eq!(error_of("psci", ""), "/psci: no PSCI node");
}

#[test]
fn psci_without_method_is_named() {
    assert_eq!(
        error_of("", "psci-no-method"),
        "/psci: property `method` missing"
    );
}

#[test]
fn psci_with_an_unknown_method_is_named() {
    assert_eq!(
        error_of("", "psci-bad"),
        "/psci: property `method` is \"svc\", not smc or hvc"
    );
}

#[test]
fn overlapping_modules_are_refused() {
    assert_eq!(
        error_of("", "modules-overlap"),
        "/chosen/module@4a100000: property `reg`: overlaps /chosen/module@4a000000"
    );
}

#[test]
fn module_outside_ram_is_refused() {
    assert!(error_of("", "module-outside-ram").contains("is not in RAM"));
}

#[test]
fn two_kernels_are_refused() {
    assert_eq!(
        error_of("", "two-kernels"),
        "/chosen/module@4b000000: a second Kernel module"
    );
}

#[test]
fn garbage_is_not_a_device_tree() {
    assert!(parse(&[0u8; 64])
        .expect_err("garbage")
        .to_string()
        .starts_with("/: not a valid"));
}

#[test]
fn smmu_interrupt_names_fewer_than_interrupts_are_refused() {
    assert_eq!(
        error_of("", "smmu-one-name"),
        "/smmuv3@9050000: property `interrupt-names` has 1 names for 2 interrupts"
    );
}

#[test]
fn smmu_unknown_interrupt_name_is_refused() {
    assert_eq!(
        error_of("", "smmu-bad-name"),
        "/smmuv3@9050000: property `interrupt-names`: unknown name \"errors\""
    );
}

#[test]
fn synthetic_smmu_interrupts_are_read_by_name() {
    let p = parse(&synthetic("", "smmu-ok")).expect("valid");
    assert_eq!(p.smmus[0].irqs.gerror.map(|i| i.intid), Some(32 + 0x4d));
    assert!(!p.smmus[0].dma_coherent);
}

#[test]
fn interrupt_map_to_a_parent_other_than_the_gic_is_refused() {
    assert_eq!(
        error_of("", "pcie-imap-parent"),
        "/pcie@10000000: property `interrupt-map`: row 0 names interrupt parent 0x99, not the GIC"
    );
}

#[test]
fn iommu_map_to_an_unknown_phandle_is_refused() {
    assert_eq!(
        error_of("", "pcie-iommu-phandle"),
        "/pcie@10000000: property `iommu-map`: row 0: no node with phandle 0x77"
    );
}

/// `dtb` with the node at `path` overwritten by FDT_NOP tokens, as libfdt's
/// `fdt_nop_node` (and QEMU's `-dtb` for memory nodes) does.
fn nop_node(dtb: &[u8], path: &str) -> Vec<u8> {
    let fdt = Fdt::new(dtb).expect("valid");
    let node = fdt.find_node(path).expect("node");
    let name = node.name.as_bytes();
    let be = |at: usize| u32::from_be_bytes(dtb[at..at + 4].try_into().expect("4"));
    let off = be(8) as usize;
    let size = be(36) as usize;
    let mut out = dtb.to_vec();
    // The node's FDT_BEGIN_NODE: the token followed by its name.
    let mut at = off;
    while at < off + size {
        if be(at) == 1 && dtb[at + 4..].starts_with(name) && dtb[at + 4 + name.len()] == 0 {
            break;
        }
        at += 4;
    }
    // To its matching FDT_END_NODE, every word a NOP.
    let mut depth = 0;
    let mut i = at;
    loop {
        let t = be(i);
        let len = match t {
            1 => {
                depth += 1;
                let nul = dtb[i + 4..].iter().position(|&b| b == 0).expect("nul");
                4 + (nul + 1).div_ceil(4) * 4
            }
            2 => {
                depth -= 1;
                4
            }
            3 => 12 + (be(i + 4) as usize).div_ceil(4) * 4,
            _ => 4,
        };
        i += len;
        if depth == 0 {
            break;
        }
    }
    for w in (at..i).step_by(4) {
        out[w..w + 4].copy_from_slice(&4u32.to_be_bytes());
    }
    out
}

/// A node before `/cpus` that the platform does not need.
const SPARE_NODE: &str = "/fw-cfg@9020000";

#[test]
fn a_node_left_as_nops_hides_the_cpus_from_a_path_lookup() {
    let with_nops = nop_node(QEMU_VIRT, SPARE_NODE);
    assert!(
        parse(&with_nops).is_err(),
        "the fdt crate's path lookup stops at the NOPs (why `compact` exists)"
    );
}

#[test]
fn compacting_drops_the_nops_and_the_platform_reads_again() {
    let with_nops = nop_node(QEMU_VIRT, SPARE_NODE);
    let compacted = dtb::compact(&with_nops).expect("well-formed");
    assert!(compacted.len() < with_nops.len());
    assert_eq!(parse(&compacted), parse(QEMU_VIRT));
    assert!(Fdt::new(&compacted)
        .expect("valid")
        .find_node(SPARE_NODE)
        .is_none());
}

#[test]
fn compacting_a_blob_without_nops_keeps_every_node_and_property() {
    let c = dtb::compact(QEMU_VIRT).expect("well-formed");
    assert_eq!(parse(&c).expect("valid"), parse(QEMU_VIRT).expect("valid"));
}

#[test]
fn compacting_refuses_what_is_not_a_blob() {
    assert_eq!(
        dtb::compact(b"not a device tree at all, forty bytes+"),
        None
    );
    let mut bad = QEMU_VIRT.to_vec();
    bad[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(dtb::compact(&bad), None, "totalsize past the end");
}
