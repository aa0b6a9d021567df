use super::render::{copy_with, Node, Value};
use super::*;
use crate::parse;
use crate::tests::synthetic_with;
use alloc::vec;
use vm_fdt::FdtWriter;

/// `-M virt,...` with `-device guest-loader` kernel and initrd, 4 CPUs.
const QEMU_MODULES_SMMU: &[u8] = include_bytes!("../../tests/data/qemu-virt-modules-smmuv3.dtb");
/// `-M virt,...,iommu=smmuv3 -smp 2 -m 2G -device igb`.
const QEMU_SMMU: &[u8] = include_bytes!("../../tests/data/qemu-virt-gicv3-smmuv3.dtb");

// ---- DTBs built by hand ------------------------------------------------

/// A property value written by hand.
#[derive(Clone, Copy)]
enum P {
    Cells(&'static [u32]),
    Strs(&'static [&'static str]),
}

/// A module child written by hand.
#[derive(Clone, Copy)]
struct M {
    name: &'static str,
    compatible: &'static [&'static str],
    reg: &'static [u32],
    bootargs: Option<&'static str>,
}

type Props = Vec<(&'static str, P)>;

fn put(w: &mut FdtWriter, name: &str, p: P) {
    match p {
        P::Cells(c) => w.property_array_u32(name, c),
        P::Strs(s) => w.property_string_list(name, s.iter().map(|s| s.to_string()).collect()),
    }
    .expect("property");
}

/// The synthetic host (CPUs 0 to 3, RAM 0x4000_0000 + 1 GiB, no module
/// under `/chosen` unless `tweak` says) with these guest nodes.
fn host_dt_with(tweak: &str, guests: &[(&'static str, Props, Vec<M>)]) -> Vec<u8> {
    synthetic_with("", tweak, 4, &|w: &mut FdtWriter| {
        for (name, props, modules) in guests {
            let n = w.begin_node(name).expect("node");
            for (p, v) in props {
                put(w, p, *v);
            }
            for m in modules {
                let c = w.begin_node(m.name).expect("node");
                put(w, "compatible", P::Strs(m.compatible));
                put(w, "reg", P::Cells(m.reg));
                if let Some(b) = m.bootargs {
                    w.property_string("bootargs", b).expect("property");
                }
                w.end_node(c).expect("end");
            }
            w.end_node(n).expect("end");
        }
    })
}

fn host_dt(guests: &[(&'static str, Props, Vec<M>)]) -> Vec<u8> {
    host_dt_with("no-modules", guests)
}

const KERNEL: &[&str] = &["multiboot,kernel", "multiboot,module"];
const RAMDISK: &[&str] = &["multiboot,ramdisk", "multiboot,module"];

fn net_props() -> Props {
    vec![
        ("compatible", P::Strs(&["synthetic-pci,guest"])),
        ("host-cpus", P::Cells(&[0])),
        ("host-memory", P::Cells(&[0, 0x5000_0000, 0, 0x1000_0000])),
        ("pci-segment", P::Cells(&[1])),
        ("pci-passthrough", P::Strs(&["0000:00:02.0"])),
        ("on-reset", P::Strs(&["restart"])),
    ]
}

fn net_modules() -> Vec<M> {
    vec![
        M {
            name: "module@48000000",
            compatible: KERNEL,
            reg: &[0, 0x4800_0000, 0, 0x100_0000],
            bootargs: Some("console=ttyAMA0"),
        },
        M {
            name: "module@49000000",
            compatible: RAMDISK,
            reg: &[0, 0x4900_0000, 0, 0x80_0000],
            bootargs: None,
        },
    ]
}

fn blk_props() -> Props {
    vec![
        ("compatible", P::Strs(&["synthetic-pci,guest"])),
        ("host-cpus", P::Cells(&[1, 2])),
        (
            "host-memory",
            P::Cells(&[
                0,
                0x6000_0000,
                0,
                0x0800_0000,
                0,
                0x7000_0000,
                0,
                0x0800_0000,
            ]),
        ),
        ("pci-segment", P::Cells(&[2])),
        ("virtio-blk", P::Strs(&["ram:64M", "host:0000:00:03.0"])),
        ("virtio-console", P::Cells(&[])),
        ("root-ports", P::Cells(&[4])),
    ]
}

fn blk_modules() -> Vec<M> {
    vec![M {
        name: "module@4a000000",
        compatible: KERNEL,
        reg: &[0, 0x4a00_0000, 0, 0x100_0000],
        bootargs: None,
    }]
}

/// `props` with `name` replaced by `v` (appended if absent), or removed.
fn with(mut props: Props, name: &'static str, v: Option<P>) -> Props {
    let at = props.iter().position(|(n, _)| *n == name);
    match (at, v) {
        (Some(i), Some(v)) => props[i].1 = v,
        (Some(i), None) => {
            props.remove(i);
        }
        (None, Some(v)) => props.push((name, v)),
        (None, None) => {}
    }
    props
}

/// The guest-net node with `props` and `modules`, parsed.
fn parse_net(props: Props, modules: Vec<M>) -> Result<Vec<GuestConfig>, GuestError> {
    parse_nodes(&host_dt(&[("guest-net", props, modules)]))
}

fn parse_net_error(props: Props, modules: Vec<M>) -> String {
    parse_net(props, modules)
        .expect_err("must be refused")
        .to_string()
}

// ---- The configurations those DTBs hold --------------------------------

fn r(base: u64, size: u64) -> MemRange<Pa> {
    MemRange::new(Pa(base), size)
}

fn sbdf(s: &str) -> Sbdf {
    s.parse().expect("SBDF")
}

fn cpus(m: &[u64]) -> Vec<Cpu> {
    m.iter().map(|&mpidr| Cpu { mpidr }).collect()
}

fn net() -> GuestConfig {
    GuestConfig {
        name: "guest-net".into(),
        cpus: cpus(&[0]),
        memory: GuestMemory::Static(vec![r(0x5000_0000, 0x1000_0000)]),
        kernel: r(0x4800_0000, 0x100_0000),
        ramdisk: Some(r(0x4900_0000, 0x80_0000)),
        bootargs: Some("console=ttyAMA0".into()),
        devices: vec![sbdf("0000:00:02.0")],
        disks: vec![],
        console: false,
        segment: 1,
        root_ports: None,
        on_reset: ResetAction::Restart,
    }
}

fn blk() -> GuestConfig {
    GuestConfig {
        name: "guest-blk".into(),
        cpus: cpus(&[1, 2]),
        memory: GuestMemory::Static(vec![
            r(0x6000_0000, 0x0800_0000),
            r(0x7000_0000, 0x0800_0000),
        ]),
        kernel: r(0x4a00_0000, 0x100_0000),
        ramdisk: None,
        bootargs: None,
        devices: vec![],
        disks: vec![
            DiskBackend::Ram(64 << 20),
            DiskBackend::Host(sbdf("0000:00:03.0")),
        ],
        console: true,
        segment: 2,
        root_ports: Some(4),
        on_reset: ResetAction::Stop,
    }
}

/// The synthetic host as the hypervisor would see it: CPUs 0 to 3, RAM
/// 0x4000_0000 + 1 GiB, the hypervisor in its first 16 MiB, two functions.
fn host() -> HostResources {
    HostResources {
        cpus: cpus(&[0, 1, 2, 3]),
        ram: vec![r(0x4000_0000, 0x4000_0000)],
        reserved: vec![r(0x4000_0000, 0x0100_0000)],
        devices: vec![sbdf("0000:00:02.0"), sbdf("0000:00:03.0")],
    }
}

fn validate_error(guests: &[GuestConfig]) -> GuestError {
    validate(guests, &host()).expect_err("must be refused")
}

// ---- Parsing guest nodes -----------------------------------------------

#[test]
fn two_guest_nodes_are_read_with_every_field() {
    let dt = host_dt(&[
        ("guest-net", net_props(), net_modules()),
        ("guest-blk", blk_props(), blk_modules()),
    ]);
    assert_eq!(parse_nodes(&dt), Ok(vec![net(), blk()]));
}

#[test]
fn guest_node_without_optional_properties_gets_segment_1_and_stop() {
    let props = vec![
        ("compatible", P::Strs(&["synthetic-pci,guest"])),
        ("host-cpus", P::Cells(&[3])),
        ("host-memory", P::Cells(&[0, 0x5000_0000, 0, 0x1000_0000])),
    ];
    let g = parse_net(props, net_modules()[..1].to_vec()).expect("valid");
    assert_eq!(
        (g[0].segment, g[0].on_reset, g[0].root_ports, g[0].ramdisk),
        (1, ResetAction::Stop, None, None)
    );
    assert!(g[0].devices.is_empty() && g[0].disks.is_empty());
}

#[test]
fn guest_node_cells_apply_to_its_memory_and_modules() {
    let props = with(
        with(net_props(), "#address-cells", Some(P::Cells(&[1]))),
        "#size-cells",
        Some(P::Cells(&[1])),
    );
    let props = with(
        props,
        "host-memory",
        Some(P::Cells(&[0x5000_0000, 0x1000_0000])),
    );
    let modules = vec![M {
        reg: &[0x4800_0000, 0x1000],
        ..net_modules()[0]
    }];
    let g = parse_net(props, modules).expect("valid");
    assert_eq!(
        g[0].memory,
        GuestMemory::Static(vec![r(0x5000_0000, 0x1000_0000)])
    );
    assert_eq!(g[0].kernel, r(0x4800_0000, 0x1000));
}

#[test]
fn host_cpus_use_two_cells_when_cpus_has_two_address_cells() {
    // (This host keeps its module under /chosen: parse_nodes reads guest nodes only.)
    let props = with(net_props(), "host-cpus", Some(P::Cells(&[0, 1, 0, 3])));
    let dt = host_dt_with("cpu-cells-2", &[("guest-net", props, net_modules())]);
    assert_eq!(parse_nodes(&dt).expect("valid")[0].cpus, cpus(&[1, 3]));
}

#[test]
fn a_dt_without_guest_nodes_has_none() {
    assert_eq!(parse_nodes(QEMU_MODULES_SMMU), Ok(vec![]));
}

#[test]
fn garbage_is_not_a_device_tree() {
    assert!(matches!(
        parse_nodes(&[0u8; 64]),
        Err(GuestError::DeviceTree(_))
    ));
}

#[test]
fn guest_node_without_host_cpus_has_no_cpu() {
    assert_eq!(
        parse_net(with(net_props(), "host-cpus", None), net_modules()),
        Err(GuestError::NoCpu {
            guest: "guest-net".into()
        })
    );
}

#[test]
fn guest_node_without_host_memory_has_no_memory() {
    assert_eq!(
        parse_net_error(with(net_props(), "host-memory", None), net_modules()),
        "guest guest-net: no memory (property `host-memory`)"
    );
}

#[test]
fn guest_node_without_kernel_module_has_no_kernel() {
    assert_eq!(
        parse_net_error(net_props(), net_modules()[1..].to_vec()),
        "guest guest-net: no kernel (a `multiboot,kernel` module)"
    );
}

#[test]
fn unknown_property_is_named() {
    assert_eq!(
        parse_net_error(
            with(
                net_props(),
                "pci-passtrough",
                Some(P::Strs(&["0000:00:02.0"]))
            ),
            net_modules()
        ),
        "guest guest-net: property `pci-passtrough`: unknown property"
    );
}

#[test]
fn malformed_sbdf_is_named_with_guest_and_property() {
    assert_eq!(
        parse_net_error(
            with(
                net_props(),
                "pci-passthrough",
                Some(P::Strs(&["0000:00:20.0"]))
            ),
            net_modules()
        ),
        "guest guest-net: property `pci-passthrough`: \"0000:00:20.0\": device 0x20 is above 0x1f"
    );
}

#[test]
fn unknown_disk_backend_is_refused() {
    assert!(parse_net_error(
        with(net_props(), "virtio-blk", Some(P::Strs(&["file:disk.img"]))),
        net_modules()
    )
    .starts_with("guest guest-net: property `virtio-blk`: \"file:disk.img\": want ram:SIZE"));
}

#[test]
fn unknown_reset_action_is_refused() {
    assert_eq!(
        parse_net_error(
            with(net_props(), "on-reset", Some(P::Strs(&["reboot"]))),
            net_modules()
        ),
        "guest guest-net: property `on-reset`: \"reboot\": want restart or stop"
    );
}

#[test]
fn segment_above_ffff_is_refused() {
    assert_eq!(
        parse_net_error(
            with(net_props(), "pci-segment", Some(P::Cells(&[0x1_0000]))),
            net_modules()
        ),
        "guest guest-net: property `pci-segment`: 0x10000 is above 0xffff"
    );
}

#[test]
fn root_ports_outside_2_to_31_are_refused() {
    assert_eq!(
        parse_net_error(
            with(net_props(), "root-ports", Some(P::Cells(&[32]))),
            net_modules()
        ),
        "guest guest-net: property `root-ports`: 32: want 2 to 31"
    );
}

#[test]
fn host_memory_of_the_wrong_length_is_refused() {
    assert_eq!(
        parse_net_error(
            with(net_props(), "host-memory", Some(P::Cells(&[0, 0x5000_0000, 0x1000_0000]))),
            net_modules()
        ),
        "guest guest-net: property `host-memory`: 12 bytes, not a list of (2 address + 2 size)-cell ranges"
    );
}

#[test]
fn host_cpus_with_bits_outside_the_affinity_fields_are_refused() {
    assert_eq!(
        parse_net_error(
            with(net_props(), "host-cpus", Some(P::Cells(&[0x8000_0000]))),
            net_modules()
        ),
        "guest guest-net: property `host-cpus`: 0x80000000 has bits outside MPIDR Aff3..Aff0"
    );
}

#[test]
fn module_without_a_specific_kind_is_refused() {
    let modules = vec![M {
        compatible: &["multiboot,module"],
        ..net_modules()[0]
    }];
    assert_eq!(
        parse_net_error(net_props(), modules),
        "guest guest-net: property `module@48000000/compatible`: \
         neither \"multiboot,kernel\" nor \"multiboot,ramdisk\""
    );
}

#[test]
fn bootargs_on_the_ramdisk_are_refused() {
    let mut modules = net_modules();
    modules[1].bootargs = Some("quiet");
    assert!(parse_net_error(net_props(), modules)
        .starts_with("guest guest-net: property `module@49000000/bootargs`: on the ramdisk"));
}

#[test]
fn two_kernel_modules_are_refused() {
    let mut modules = net_modules();
    modules[1].compatible = KERNEL;
    assert_eq!(
        parse_net_error(net_props(), modules),
        "guest guest-net: property `module@49000000/compatible`: a second kernel module"
    );
}

// ---- Choosing the style: guest nodes or the single guest ---------------

#[test]
fn modules_under_chosen_make_one_guest_with_every_cpu_and_the_command_line_options() {
    let p = parse(QEMU_MODULES_SMMU).expect("valid");
    let cmdline = "semihosting pci-passthrough=0000:00:02.0,0000:00:04.0 virtio-blk=ram:64M \
                   virtio-console root-ports=4 guest-mem=512M loglevel=debug";
    let g = configure(QEMU_MODULES_SMMU, &p, cmdline).expect("valid");
    assert_eq!(
        g,
        vec![GuestConfig {
            name: "guest".into(),
            cpus: cpus(&[0, 1, 2, 3]),
            memory: GuestMemory::Auto {
                size: Some(512 << 20)
            },
            kernel: r(0x4a00_0000, 3),
            ramdisk: Some(r(0x4c00_0000, 3)),
            bootargs: Some("console=ttyAMA0 panic=-1".into()),
            devices: vec![sbdf("0000:00:02.0"), sbdf("0000:00:04.0")],
            disks: vec![DiskBackend::Ram(64 << 20)],
            console: true,
            segment: 1,
            root_ports: Some(4),
            on_reset: ResetAction::Stop,
        }]
    );
}

#[test]
fn the_single_guest_passes_validation() {
    let p = parse(QEMU_MODULES_SMMU).expect("valid");
    let g = configure(QEMU_MODULES_SMMU, &p, "").expect("valid");
    let host = HostResources::new(&p, vec![r(0x4000_0000, 0x0100_0000)], vec![]);
    assert_eq!(validate(&g, &host), Ok(()));
}

#[test]
fn virtio_blk_host_is_the_host_disk() {
    let o = LegacyOptions::parse("host-disk=0000:00:03.0 virtio-blk=host").expect("valid");
    assert_eq!(o.disk, Some(DiskBackend::Host(sbdf("0000:00:03.0"))));
}

#[test]
fn virtio_blk_host_without_host_disk_is_refused() {
    assert_eq!(
        LegacyOptions::parse("virtio-blk=host")
            .expect_err("refused")
            .to_string(),
        "bootargs: virtio-blk=host: needs host-disk=SSSS:BB:DD.F, the disk it goes to"
    );
}

#[test]
fn guest_nodes_are_the_guests_when_there_are_some() {
    let dt = host_dt(&[
        ("guest-net", net_props(), net_modules()),
        ("guest-blk", blk_props(), blk_modules()),
    ]);
    let p = parse(&dt).expect("valid");
    assert_eq!(configure(&dt, &p, "semihosting"), Ok(vec![net(), blk()]));
}

#[test]
fn no_modules_and_no_guest_nodes_have_no_kernel() {
    let dt = host_dt(&[]);
    let p = parse(&dt).expect("valid");
    assert_eq!(
        configure(&dt, &p, ""),
        Err(GuestError::NoKernel {
            guest: "guest".into()
        })
    );
}

#[test]
fn modules_under_chosen_beside_guest_nodes_are_refused() {
    let dt = host_dt_with("", &[("guest-net", net_props(), net_modules())]);
    let p = parse(&dt).expect("valid");
    assert_eq!(
        configure(&dt, &p, "").expect_err("refused").to_string(),
        "boot module /chosen/module@4a000000 directly under /chosen and guest node guest-net: \
         give every guest's modules under its guest node"
    );
}

#[test]
fn single_guest_options_beside_guest_nodes_are_refused() {
    let dt = host_dt(&[("guest-net", net_props(), net_modules())]);
    let p = parse(&dt).expect("valid");
    assert_eq!(
        configure(&dt, &p, "semihosting pci-passthrough=0000:00:02.0"),
        Err(GuestError::OptionWithGuestNodes {
            option: "pci-passthrough=0000:00:02.0".into(),
            guest: "guest-net".into()
        })
    );
}

// ---- Validation --------------------------------------------------------

#[test]
fn the_two_golden_guests_pass_validation() {
    assert_eq!(validate(&[net(), blk()], &host()), Ok(()));
}

#[test]
fn two_guests_on_one_cpu_are_named() {
    let mut b = blk();
    b.cpus = cpus(&[2, 0]);
    assert_eq!(
        validate_error(&[net(), b]).to_string(),
        "guests guest-net and guest-blk both claim CPU 0x0"
    );
}

#[test]
fn overlapping_memory_names_both_guests_and_ranges() {
    let mut b = blk();
    b.memory = GuestMemory::Static(vec![r(0x5800_0000, 0x1000_0000)]);
    assert_eq!(
        validate_error(&[net(), b]).to_string(),
        "guests guest-net and guest-blk both claim host memory: guest-net's PA 0x50000000+0x10000000 \
         overlaps guest-blk's PA 0x58000000+0x10000000"
    );
}

#[test]
fn a_device_given_to_two_guests_is_named() {
    let mut b = blk();
    b.devices = vec![sbdf("0000:00:02.0")];
    assert_eq!(
        validate_error(&[net(), b]).to_string(),
        "guests guest-net and guest-blk both claim host device 0000:00:02.0"
    );
}

#[test]
fn a_host_disk_counts_as_a_claim_on_its_device() {
    let mut n = net();
    n.devices = vec![sbdf("0000:00:03.0")];
    assert_eq!(
        validate_error(&[n, blk()]),
        GuestError::DeviceShared {
            device: sbdf("0000:00:03.0"),
            first: "guest-net".into(),
            second: "guest-blk".into()
        }
    );
}

#[test]
fn a_device_the_host_does_not_have_is_named() {
    let mut n = net();
    n.devices = vec![sbdf("0000:00:05.0")];
    assert_eq!(
        validate_error(&[n, blk()]).to_string(),
        "guest guest-net: host device 0000:00:05.0 does not exist (not found on the host's PCI segments)"
    );
}

#[test]
fn a_device_listed_twice_in_one_guest_is_named() {
    let mut b = blk();
    b.devices = vec![sbdf("0000:00:03.0")];
    assert_eq!(
        validate_error(&[net(), b]),
        GuestError::DeviceListedTwice {
            guest: "guest-blk".into(),
            device: sbdf("0000:00:03.0")
        }
    );
}

#[test]
fn a_segment_number_used_twice_is_named() {
    let mut b = blk();
    b.segment = 1;
    assert_eq!(
        validate_error(&[net(), b]).to_string(),
        "guests guest-net and guest-blk both use PCI segment 0001"
    );
}

#[test]
fn two_guests_with_one_name_are_refused() {
    let mut b = blk();
    b.name = "guest-net".into();
    assert_eq!(
        validate_error(&[net(), b]),
        GuestError::NameShared {
            name: "guest-net".into()
        }
    );
}

#[test]
fn a_cpu_the_host_does_not_have_is_named() {
    let mut b = blk();
    b.cpus = cpus(&[1, 4]);
    assert_eq!(
        validate_error(&[net(), b]).to_string(),
        "guest guest-blk: CPU 0x4 is not a host CPU (no /cpus node has that MPIDR)"
    );
}

#[test]
fn memory_outside_host_ram_is_named() {
    let mut b = blk();
    b.memory = GuestMemory::Static(vec![r(0x7800_0000, 0x1000_0000)]);
    assert_eq!(
        validate_error(&[net(), b]).to_string(),
        "guest guest-blk: memory PA 0x78000000+0x10000000 is outside host RAM"
    );
}

#[test]
fn a_module_outside_host_ram_is_named() {
    let mut n = net();
    n.ramdisk = Some(r(0x3000_0000, 0x1000));
    assert_eq!(
        validate_error(&[n, blk()]),
        GuestError::OutsideRam {
            guest: "guest-net".into(),
            area: Area::Ramdisk,
            range: r(0x3000_0000, 0x1000)
        }
    );
}

#[test]
fn memory_over_the_hypervisors_reservation_is_named() {
    let mut n = net();
    n.memory = GuestMemory::Static(vec![r(0x4000_0000, 0x0200_0000)]);
    assert_eq!(
        validate_error(&[n, blk()]).to_string(),
        "guest guest-net: memory PA 0x40000000+0x2000000 overlaps the hypervisor's reservation \
         PA 0x40000000+0x1000000"
    );
}

#[test]
fn a_module_in_another_guests_memory_is_named() {
    let mut n = net();
    n.kernel = r(0x6000_0000, 0x1000);
    assert_eq!(
        validate_error(&[n, blk()]).to_string(),
        "guest guest-net: kernel module PA 0x60000000+0x1000 lies in guest guest-blk's memory \
         PA 0x60000000+0x8000000"
    );
}

#[test]
fn a_guest_without_cpu_is_refused() {
    let mut n = net();
    n.cpus.clear();
    assert_eq!(
        validate_error(&[n, blk()]),
        GuestError::NoCpu {
            guest: "guest-net".into()
        }
    );
}

#[test]
fn a_guest_without_memory_is_refused() {
    let mut n = net();
    n.memory = GuestMemory::Static(vec![]);
    assert_eq!(
        validate_error(&[n, blk()]),
        GuestError::NoMemory {
            guest: "guest-net".into()
        }
    );
}

#[test]
fn memory_chosen_by_the_hypervisor_is_refused_beside_another_guest() {
    let mut n = net();
    n.memory = GuestMemory::Auto { size: None };
    assert_eq!(
        validate_error(&[n, blk()]),
        GuestError::NoMemory {
            guest: "guest-net".into()
        }
    );
}

#[test]
fn memory_not_in_whole_pages_is_refused() {
    let mut n = net();
    n.memory = GuestMemory::Static(vec![r(0x5000_0800, 0x1000)]);
    assert_eq!(
        validate_error(&[n, blk()]).to_string(),
        "guest guest-net: property `host-memory`: PA 0x50000800+0x1000: not a non-empty range of \
         whole 4 KiB pages"
    );
}

#[test]
fn a_name_that_is_not_a_node_name_is_refused() {
    let mut n = net();
    n.name = "guest net".into();
    assert!(matches!(
        validate_error(&[n, blk()]),
        GuestError::Malformed { property, .. } if property == "name"
    ));
}

#[test]
fn a_ramdisk_over_the_kernel_is_refused() {
    let mut n = net();
    n.ramdisk = Some(r(0x4880_0000, 0x1000));
    assert_eq!(
        validate_error(&[n, blk()]).to_string(),
        "guest guest-net: property `module@48800000/reg`: ramdisk module PA 0x48800000+0x1000 \
         overlaps the kernel module PA 0x48000000+0x1000000"
    );
}

// ---- Writing guest nodes back out ----------------------------------------

/// What U-Boot's shell and `fdt` command make of `script` (the subset the
/// renderer writes): `fdt mknode PARENT NAME` and `fdt set PATH PROP
/// VALUE...`, words split at blanks outside double quotes; a value starting
/// with `<` is cells (`strtoul` base 0), else each word is a string.
fn interpret(script: &str) -> Vec<Node> {
    fn find<'a>(nodes: &'a mut [Node], path: &[&str]) -> &'a mut Node {
        let (first, rest) = path.split_first().expect("path");
        let n = nodes
            .iter_mut()
            .find(|n| n.name == *first)
            .expect("node made first");
        if rest.is_empty() {
            n
        } else {
            find(&mut n.children, rest)
        }
    }
    let mut roots: Vec<Node> = Vec::new();
    for line in script.lines() {
        let mut words = Vec::new();
        let (mut word, mut quoted, mut any) = (String::new(), false, false);
        for c in line.chars() {
            match c {
                '"' => (quoted, any) = (!quoted, true),
                ' ' if !quoted => {
                    if any || !word.is_empty() {
                        words.push(core::mem::take(&mut word));
                    }
                    any = false;
                }
                c => word.push(c),
            }
        }
        assert!(!quoted, "unbalanced quotes: {line}");
        if any || !word.is_empty() {
            words.push(word);
        }
        let path = |p: &str| -> Vec<String> {
            p.strip_prefix("/chosen")
                .expect("under /chosen")
                .split('/')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["fdt", "mknode", parent, name] => {
                let node = Node {
                    name: name.into(),
                    props: vec![],
                    children: vec![],
                };
                let p = path(parent);
                if p.is_empty() {
                    roots.push(node);
                } else {
                    let p: Vec<&str> = p.iter().map(String::as_str).collect();
                    find(&mut roots, &p).children.push(node);
                }
            }
            ["fdt", "set", at, prop, ref value @ ..] => {
                let v = if value.first().is_some_and(|v| v.starts_with('<')) {
                    let joined = value.join(" ");
                    let inner = joined
                        .strip_prefix('<')
                        .and_then(|s| s.strip_suffix('>'))
                        .expect("<cells>");
                    Value::Cells(
                        inner
                            .split_whitespace()
                            .map(|c| match c.strip_prefix("0x") {
                                Some(h) => u32::from_str_radix(h, 16),
                                None => c.parse(),
                            })
                            .collect::<Result<_, _>>()
                            .expect("cell"),
                    )
                } else {
                    Value::Strings(value.iter().map(|s| s.to_string()).collect())
                };
                let p = path(at);
                let p: Vec<&str> = p.iter().map(String::as_str).collect();
                find(&mut roots, &p).props.push((prop.to_string(), v));
            }
            _ => panic!("not a command the renderer writes: {line}"),
        }
    }
    roots
}

#[test]
fn uboot_commands_for_a_guest_are_golden() {
    let script = uboot_commands(&[net()], 1).expect("renders");
    assert_eq!(
        script,
        "fdt mknode /chosen guest-net\n\
         fdt set /chosen/guest-net compatible \"synthetic-pci,guest\"\n\
         fdt set /chosen/guest-net host-cpus <0x0>\n\
         fdt set /chosen/guest-net host-memory <0x0 0x50000000 0x0 0x10000000>\n\
         fdt set /chosen/guest-net pci-segment <0x1>\n\
         fdt set /chosen/guest-net pci-passthrough \"0000:00:02.0\"\n\
         fdt set /chosen/guest-net on-reset \"restart\"\n\
         fdt mknode /chosen/guest-net module@48000000\n\
         fdt set /chosen/guest-net/module@48000000 compatible \"multiboot,kernel\" \"multiboot,module\"\n\
         fdt set /chosen/guest-net/module@48000000 reg <0x0 0x48000000 0x0 0x1000000>\n\
         fdt set /chosen/guest-net/module@48000000 bootargs \"console=ttyAMA0\"\n\
         fdt mknode /chosen/guest-net module@49000000\n\
         fdt set /chosen/guest-net/module@49000000 compatible \"multiboot,ramdisk\" \"multiboot,module\"\n\
         fdt set /chosen/guest-net/module@49000000 reg <0x0 0x49000000 0x0 0x800000>\n"
    );
}

#[test]
fn uboot_commands_applied_to_the_host_dt_parse_back_to_the_same_guests() {
    let guests = vec![net(), blk()];
    let nodes = interpret(&uboot_commands(&guests, 1).expect("renders"));
    let dt = copy_with(&host_dt(&[]), &nodes).expect("copies");
    assert_eq!(parse_nodes(&dt), Ok(guests));
}

#[test]
fn uboot_commands_use_two_cells_a_cpu_when_cpus_has_two_address_cells() {
    let mut n = net();
    n.cpus = cpus(&[0x1_0000_0001]);
    let script = uboot_commands(&[n], 2).expect("renders");
    assert!(script.contains("host-cpus <0x1 0x1>\n"), "{script}");
}

#[test]
fn bootargs_the_uboot_shell_would_change_are_refused() {
    let mut n = net();
    n.bootargs = Some("init=$HOME".into());
    assert!(matches!(
        uboot_commands(&[n], 1),
        Err(GuestError::Malformed { property, .. }) if property == "module@48000000/bootargs"
    ));
}

#[test]
fn a_guest_with_memory_chosen_by_the_hypervisor_cannot_be_written() {
    let mut n = net();
    n.memory = GuestMemory::Auto { size: None };
    assert_eq!(
        uboot_commands(&[n], 1),
        Err(GuestError::NoMemory {
            guest: "guest-net".into()
        })
    );
}

#[test]
fn an_mpidr_wider_than_one_cell_is_refused_for_one_cell_cpus() {
    let mut n = net();
    n.cpus = cpus(&[0x1_0000_0000]);
    assert!(matches!(
        uboot_commands(&[n], 1),
        Err(GuestError::Malformed { property, .. }) if property == "host-cpus"
    ));
}

#[test]
fn with_guests_parses_back_to_the_same_guests() {
    let guests = vec![net(), blk()];
    let dt = with_guests(&host_dt(&[]), &guests).expect("writes");
    assert_eq!(parse_nodes(&dt), Ok(guests));
}

#[test]
fn with_guests_keeps_the_rest_of_a_qemu_dt() {
    let dt = with_guests(QEMU_SMMU, &[net()]).expect("writes");
    assert_eq!(parse(&dt), parse(QEMU_SMMU));
    let (a, b) = (
        Fdt::new(&dt).expect("valid"),
        Fdt::new(QEMU_SMMU).expect("valid"),
    );
    assert_eq!(a.all_nodes().count(), b.all_nodes().count() + 3);
    assert_eq!(
        a.memory_reservations().count(),
        b.memory_reservations().count()
    );
}

#[test]
fn without_root_nodes_drops_those_named_and_keeps_the_rest() {
    let dt = without_root_nodes(QEMU_SMMU, &["memory", "psci"]).expect("writes");
    let (a, b) = (
        Fdt::new(&dt).expect("valid"),
        Fdt::new(QEMU_SMMU).expect("valid"),
    );
    let named = |f: &Fdt<'_>, n: &str| f.all_nodes().filter(|x| x.name.starts_with(n)).count();
    assert_eq!((named(&a, "memory@"), named(&b, "memory@")), (0, 1));
    assert_eq!((named(&a, "psci"), named(&b, "psci")), (0, 1));
    assert_eq!(a.all_nodes().count(), b.all_nodes().count() - 2);
    assert_eq!(
        a.find_node("/chosen").map(|c| c.properties().count()),
        b.find_node("/chosen").map(|c| c.properties().count())
    );
}

#[test]
fn with_guests_refuses_a_dt_that_has_guest_nodes() {
    let dt = host_dt(&[("guest-net", net_props(), net_modules())]);
    assert!(matches!(
        with_guests(&dt, &[blk()]),
        Err(GuestError::DeviceTree(p)) if p == "/chosen already has guest node guest-net"
    ));
}

#[test]
fn disk_backends_print_as_they_parse() {
    for s in [
        "ram:64M",
        "ram:1G",
        "ram:4k",
        "ram:4097",
        "host:0001:02:03.4",
    ] {
        assert_eq!(
            s.parse::<DiskBackend>().map(|d| d.to_string()),
            Ok(s.into())
        );
    }
}
