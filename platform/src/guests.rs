//! The guests the hypervisor runs and what each is given, as the host DT's
//! `/chosen` describes them (binding: `docs/guests.md`).
//!
//! Two styles, never both in one DT:
//! - **guest nodes**: one `compatible = "synthetic-pci,guest"` node per guest
//!   under `/chosen`, in the shape of Xen's dom0less domain nodes
//!   (`docs/misc/arm/device-tree/booting.txt` in Xen): its host CPUs (MPIDRs),
//!   its host memory ranges, its kernel and initrd as `multiboot,module`
//!   children, its passthrough devices and virtio disks, its synthetic PCI
//!   segment and what its PSCI SYSTEM_RESET does. [`parse_nodes`] reads them.
//! - **single guest** (the boot before guest nodes existed): boot modules
//!   directly under `/chosen` make one guest with every CPU, its options from
//!   the hypervisor's command line ([`LegacyOptions`], [`GuestConfig::legacy`]).
//!
//! [`configure`] picks the style; [`validate`] checks the guests against each
//! other and against the host (CPUs, RAM, the hypervisor's reservation, the
//! PCI functions enumerated), each [`GuestError`] naming the guests involved.
//! [`uboot_commands`] (and, with the `vm-fdt` feature, `write_nodes` and
//! `with_guests`) write guest nodes back out.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use arch_emu::addr::{MemRange, Pa};
use fdt::node::FdtNode;
use fdt::Fdt;
use vbus::Sbdf;

use crate::{cells, read_num, u32_prop, Cpu, ModuleKind, Platform};

mod render;
#[cfg(test)]
mod tests;
mod validate;

pub use render::uboot_commands;
#[cfg(any(test, feature = "vm-fdt"))]
pub use render::{with_guests, without_root_nodes, write_nodes};
pub use validate::{validate, HostResources};

/// The `compatible` of a guest node.
pub const COMPATIBLE: &str = "synthetic-pci,guest";

/// The single guest's name when modules sit directly under `/chosen`.
pub const LEGACY_NAME: &str = "guest";

/// The synthetic segment a guest gets without `pci-segment` (the single
/// guest's, as before guest nodes: its first port at `0001:01:00.0`).
pub const DEFAULT_SEGMENT: u16 = 1;

/// Bits of an MPIDR that name a CPU: Aff3 (39:32) and Aff2..Aff0 (23:0)
/// (Arm ARM DDI 0487 L.a, D23.2.101 MPIDR_EL1).
pub const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// The hypervisor options that configure the single guest; with guest nodes
/// they are properties of each node instead.
pub const LEGACY_GUEST_OPTIONS: &[&str] = &[
    "pci-passthrough",
    "virtio-blk",
    "virtio-console",
    "root-ports",
    "guest-mem",
];

/// One guest's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Its name: the guest node's name (console prefix, error messages).
    pub name: String,
    /// The host CPUs it runs on, by MPIDR affinity; its vCPU i runs on the
    /// i-th. `host-cpus`.
    pub cpus: Vec<Cpu>,
    /// Its RAM. `host-memory`.
    pub memory: GuestMemory,
    /// Where its kernel image is in host memory (`multiboot,kernel`).
    pub kernel: MemRange<Pa>,
    /// Where its initrd is in host memory (`multiboot,ramdisk`).
    pub ramdisk: Option<MemRange<Pa>>,
    /// Its kernel command line (`bootargs` of the kernel module).
    pub bootargs: Option<String>,
    /// Host PCI functions passed through to it, each behind a root port of
    /// its own, in this order. `pci-passthrough`.
    pub devices: Vec<Sbdf>,
    /// Its emulated virtio-blk devices (after the passed-through functions),
    /// in this order. `virtio-blk`.
    pub disks: Vec<DiskBackend>,
    /// Whether it gets an emulated virtio-console (virtio 1.2, 5.3) after
    /// its virtio-blk devices, its output and input the host console's.
    /// `virtio-console` (an empty property).
    pub console: bool,
    /// The number of its synthetic PCI segment (`linux,pci-domain` in its
    /// DT). `pci-segment`.
    pub segment: u16,
    /// At least this many root ports on its segment (2 to 31), the extra
    /// ones empty; `None`: as many as its devices need. `root-ports`.
    pub root_ports: Option<u8>,
    /// What its PSCI SYSTEM_RESET does. `on-reset`.
    pub on_reset: ResetAction,
}

/// Where a guest's RAM comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMemory {
    /// These host ranges, its alone (a guest node's `host-memory`).
    Static(Vec<MemRange<Pa>>),
    /// Chosen by the hypervisor from the free host RAM: `size` bytes
    /// (`guest-mem=`) or the largest free stretch. Single-guest boots only.
    Auto {
        /// Bytes wanted, if said.
        size: Option<u64>,
    },
}

/// What backs an emulated virtio-blk (virtio 1.2, 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBackend {
    /// A RAM disk of this many bytes carved from host RAM: `ram:SIZE`.
    Ram(u64),
    /// The host virtio-blk at this address, which the hypervisor drives:
    /// `host:SSSS:BB:DD.F`.
    Host(Sbdf),
}

impl DiskBackend {
    /// The host device it claims, if any.
    pub fn host_device(&self) -> Option<Sbdf> {
        match self {
            DiskBackend::Ram(_) => None,
            DiskBackend::Host(s) => Some(*s),
        }
    }
}

impl fmt::Display for DiskBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskBackend::Ram(n) => write!(f, "ram:{}", Size(*n)),
            DiskBackend::Host(s) => write!(f, "host:{s}"),
        }
    }
}

impl FromStr for DiskBackend {
    type Err = String;

    /// `ram:SIZE` (`64M`, `1G`, `4096`, binary units) or `host:SSSS:BB:DD.F`.
    fn from_str(s: &str) -> Result<DiskBackend, String> {
        if let Some(size) = s.strip_prefix("ram:") {
            return guest_dt::boot::parse_size(size)
                .map(DiskBackend::Ram)
                .ok_or_else(|| format!("\"{s}\": want ram:SIZE with SIZE like 64M, not zero"));
        }
        if let Some(sbdf) = s.strip_prefix("host:") {
            return sbdf
                .parse()
                .map(DiskBackend::Host)
                .map_err(|e| format!("\"{s}\": {e}"));
        }
        Err(format!("\"{s}\": want ram:SIZE or host:SSSS:BB:DD.F"))
    }
}

/// A size in the largest binary unit that divides it (`64M`, `4k`, `4097`).
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "k")] {
            if self.0 != 0 && self.0 % (1 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// What a guest's PSCI SYSTEM_RESET (DEN0022 F.b, 5.11) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetAction {
    /// Boot it again from pristine copies of its modules: `restart`.
    Restart,
    /// Stop it, as SYSTEM_OFF does: `stop` (the default).
    #[default]
    Stop,
}

impl fmt::Display for ResetAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResetAction::Restart => "restart",
            ResetAction::Stop => "stop",
        })
    }
}

impl FromStr for ResetAction {
    type Err = String;

    fn from_str(s: &str) -> Result<ResetAction, String> {
        match s {
            "restart" => Ok(ResetAction::Restart),
            "stop" => Ok(ResetAction::Stop),
            _ => Err(format!("\"{s}\": want restart or stop")),
        }
    }
}

/// A stretch of host memory a guest uses, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// One of its `host-memory` ranges.
    Memory,
    /// Its kernel module.
    Kernel,
    /// Its initrd module.
    Ramdisk,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Area::Memory => "memory",
            Area::Kernel => "kernel module",
            Area::Ramdisk => "ramdisk module",
        })
    }
}

/// A guest configuration the hypervisor refuses to boot. Each names the
/// guest(s) involved; `Display` gives the message the boot stops with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// The host DT could not be read.
    DeviceTree(String),
    /// Boot modules directly under `/chosen` beside guest nodes.
    BothStyles {
        /// The module's node path.
        module: String,
        /// A guest node's name.
        guest: String,
    },
    /// A single-guest option on the hypervisor's command line beside guest nodes.
    OptionWithGuestNodes {
        /// The option as given (`pci-passthrough=0000:00:02.0`).
        option: String,
        /// A guest node's name.
        guest: String,
    },
    /// A single-guest option on the hypervisor's command line is malformed.
    BadOption {
        /// The option as given.
        option: String,
        /// What is wrong.
        problem: String,
    },
    /// A property of a guest is malformed.
    Malformed {
        /// The guest.
        guest: String,
        /// The property (or `module@ADDR/property` for a module child).
        property: String,
        /// What is wrong.
        problem: String,
    },
    /// A guest has no CPU.
    NoCpu {
        /// The guest.
        guest: String,
    },
    /// A guest has no memory.
    NoMemory {
        /// The guest.
        guest: String,
    },
    /// A guest has no kernel.
    NoKernel {
        /// The guest.
        guest: String,
    },
    /// Two guests have one name.
    NameShared {
        /// The name.
        name: String,
    },
    /// A guest names a CPU the host does not have.
    CpuMissing {
        /// The guest.
        guest: String,
        /// The MPIDR it names.
        mpidr: u64,
    },
    /// A guest names a host PCI function that was not enumerated.
    DeviceMissing {
        /// The guest.
        guest: String,
        /// The function.
        device: Sbdf,
    },
    /// A guest lists one host function twice (in `pci-passthrough`, or there
    /// and as a `host:` disk).
    DeviceListedTwice {
        /// The guest.
        guest: String,
        /// The function.
        device: Sbdf,
    },
    /// A guest's memory or module lies (partly) outside host RAM.
    OutsideRam {
        /// The guest.
        guest: String,
        /// Which of its areas.
        area: Area,
        /// The area.
        range: MemRange<Pa>,
    },
    /// A guest's memory or module overlaps the hypervisor's own reservation.
    InReservation {
        /// The guest.
        guest: String,
        /// Which of its areas.
        area: Area,
        /// The area.
        range: MemRange<Pa>,
        /// The reserved range it overlaps.
        reserved: MemRange<Pa>,
    },
    /// A guest's module lies in a guest's (its own or another's) memory,
    /// where that guest's writes would spoil the pristine copy.
    ModuleInGuestMemory {
        /// The guest whose module it is.
        guest: String,
        /// Which module.
        area: Area,
        /// The module.
        range: MemRange<Pa>,
        /// The guest whose memory it lies in.
        owner: String,
        /// That memory range.
        memory: MemRange<Pa>,
    },
    /// Two guests claim one CPU.
    CpuShared {
        /// The MPIDR.
        mpidr: u64,
        /// The first guest (configuration order).
        first: String,
        /// The second guest.
        second: String,
    },
    /// Two guests' memory overlaps.
    MemoryShared {
        /// The first guest.
        first: String,
        /// Its range.
        first_range: MemRange<Pa>,
        /// The second guest.
        second: String,
        /// Its range.
        second_range: MemRange<Pa>,
    },
    /// Two guests claim one host PCI function.
    DeviceShared {
        /// The function.
        device: Sbdf,
        /// The first guest.
        first: String,
        /// The second guest.
        second: String,
    },
    /// Two guests have one segment number.
    SegmentShared {
        /// The segment.
        segment: u16,
        /// The first guest.
        first: String,
        /// The second guest.
        second: String,
    },
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GuestError::*;
        match self {
            DeviceTree(p) => write!(f, "host device tree: {p}"),
            BothStyles { module, guest } => write!(
                f,
                "boot module {module} directly under /chosen and guest node {guest}: \
                 give every guest's modules under its guest node"
            ),
            OptionWithGuestNodes { option, guest } => write!(
                f,
                "hypervisor option {option} with guest node {guest}: \
                 give it as a guest node property instead"
            ),
            BadOption { option, problem } => write!(f, "bootargs: {option}: {problem}"),
            Malformed {
                guest,
                property,
                problem,
            } => write!(f, "guest {guest}: property `{property}`: {problem}"),
            NoCpu { guest } => write!(f, "guest {guest}: no CPU (property `host-cpus`)"),
            NoMemory { guest } => {
                write!(f, "guest {guest}: no memory (property `host-memory`)")
            }
            NoKernel { guest } => write!(
                f,
                "guest {guest}: no kernel (a `multiboot,kernel` module)"
            ),
            NameShared { name } => write!(f, "two guests are named {name}"),
            CpuMissing { guest, mpidr } => write!(
                f,
                "guest {guest}: CPU {mpidr:#x} is not a host CPU (no /cpus node has that MPIDR)"
            ),
            DeviceMissing { guest, device } => write!(
                f,
                "guest {guest}: host device {device} does not exist (not found on the host's PCI segments)"
            ),
            DeviceListedTwice { guest, device } => write!(
                f,
                "guest {guest}: host device {device} is listed twice (pci-passthrough, virtio-blk host:)"
            ),
            OutsideRam { guest, area, range } => {
                write!(f, "guest {guest}: {area} {range} is outside host RAM")
            }
            InReservation {
                guest,
                area,
                range,
                reserved,
            } => write!(
                f,
                "guest {guest}: {area} {range} overlaps the hypervisor's reservation {reserved}"
            ),
            ModuleInGuestMemory {
                guest,
                area,
                range,
                owner,
                memory,
            } => write!(
                f,
                "guest {guest}: {area} {range} lies in guest {owner}'s memory {memory}"
            ),
            CpuShared {
                mpidr,
                first,
                second,
            } => write!(f, "guests {first} and {second} both claim CPU {mpidr:#x}"),
            MemoryShared {
                first,
                first_range,
                second,
                second_range,
            } => write!(
                f,
                "guests {first} and {second} both claim host memory: \
                 {first}'s {first_range} overlaps {second}'s {second_range}"
            ),
            DeviceShared {
                device,
                first,
                second,
            } => write!(
                f,
                "guests {first} and {second} both claim host device {device}"
            ),
            SegmentShared {
                segment,
                first,
                second,
            } => write!(
                f,
                "guests {first} and {second} both use PCI segment {segment:04x}"
            ),
        }
    }
}

/// The single guest's options from the hypervisor's command line (README,
/// "The hypervisor's own options"): what [`GuestConfig::legacy`] needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyOptions {
    /// `pci-passthrough=SSSS:BB:DD.F[,...]` (the option may repeat).
    pub devices: Vec<Sbdf>,
    /// `virtio-blk=ram:SIZE`, or `virtio-blk=host` with `host-disk=SBDF`.
    pub disk: Option<DiskBackend>,
    /// `virtio-console`: a virtio console beside the PL011.
    pub console: bool,
    /// `root-ports=N` (2 to 31).
    pub root_ports: Option<u8>,
    /// `guest-mem=SIZE`.
    pub guest_mem: Option<u64>,
}

impl LegacyOptions {
    /// Reads the single-guest options from the hypervisor's command line
    /// (whitespace-separated; other options are left alone). As before guest
    /// nodes, the first `virtio-blk=`, `root-ports=` and `guest-mem=` count.
    pub fn parse(cmdline: &str) -> Result<LegacyOptions, GuestError> {
        let bad = |option: &str, problem: &str| GuestError::BadOption {
            option: option.to_string(),
            problem: problem.to_string(),
        };
        let first = |name: &str| {
            cmdline
                .split_whitespace()
                .find(|a| a.split_once('=').is_some_and(|(n, _)| n == name))
                .map(|a| (a, &a[name.len() + 1..]))
        };
        let mut devices = Vec::new();
        for arg in cmdline.split_whitespace() {
            if let Some(list) = arg.strip_prefix("pci-passthrough=") {
                for item in list.split(',').filter(|s| !s.is_empty()) {
                    devices.push(
                        item.parse::<Sbdf>()
                            .map_err(|e| bad(arg, &format!("{item}: {e}")))?,
                    );
                }
            }
        }
        let host_disk = match first("host-disk") {
            None => None,
            Some((arg, v)) => Some(v.parse::<Sbdf>().map_err(|e| bad(arg, &e.to_string()))?),
        };
        let disk = match first("virtio-blk") {
            None => None,
            Some((arg, "host")) => {
                Some(DiskBackend::Host(host_disk.ok_or_else(|| {
                    bad(arg, "needs host-disk=SSSS:BB:DD.F, the disk it goes to")
                })?))
            }
            Some((arg, v)) => match v.strip_prefix("ram:").and_then(guest_dt::boot::parse_size) {
                Some(n) => Some(DiskBackend::Ram(n)),
                None => return Err(bad(arg, "want ram:SIZE (e.g. ram:64M) or host")),
            },
        };
        let console = cmdline.split_whitespace().any(|a| a == "virtio-console");
        let root_ports = match first("root-ports") {
            None => None,
            Some((arg, v)) => Some(
                v.parse::<u8>()
                    .ok()
                    .filter(|n| (2..=31).contains(n))
                    .ok_or_else(|| bad(arg, "want 2 to 31 (devices 1 to 31 of bus 0)"))?,
            ),
        };
        let guest_mem = match first("guest-mem") {
            None => None,
            Some((arg, v)) => Some(
                guest_dt::boot::parse_size(v)
                    .ok_or_else(|| bad(arg, "want a size like 512M or 2G"))?,
            ),
        };
        Ok(LegacyOptions {
            devices,
            disk,
            console,
            root_ports,
            guest_mem,
        })
    }
}

impl GuestConfig {
    /// The single guest of a boot without guest nodes: named
    /// [`LEGACY_NAME`], every host CPU in DT order, its RAM chosen by the
    /// hypervisor, the modules directly under `/chosen`, segment
    /// [`DEFAULT_SEGMENT`], stopped by SYSTEM_RESET.
    pub fn legacy(platform: &Platform, opts: &LegacyOptions) -> Result<GuestConfig, GuestError> {
        let kernel = platform.kernel().ok_or_else(|| GuestError::NoKernel {
            guest: LEGACY_NAME.to_string(),
        })?;
        Ok(GuestConfig {
            name: LEGACY_NAME.to_string(),
            cpus: platform.cpus.clone(),
            memory: GuestMemory::Auto {
                size: opts.guest_mem,
            },
            kernel: kernel.region.range(),
            ramdisk: platform.ramdisk().map(|m| m.region.range()),
            bootargs: kernel.bootargs.clone(),
            devices: opts.devices.clone(),
            disks: opts.disk.into_iter().collect(),
            console: opts.console,
            segment: DEFAULT_SEGMENT,
            root_ports: opts.root_ports,
            on_reset: ResetAction::Stop,
        })
    }
}

/// The guests of this boot: the guest nodes under `/chosen` if there are
/// any, else the single guest from the modules directly under `/chosen`
/// ([`Platform::modules`]) and the options in `cmdline`. Guest nodes beside
/// such modules, or beside single-guest options ([`LEGACY_GUEST_OPTIONS`]) in
/// `cmdline`, are refused. Not yet [`validate`]d.
pub fn configure(
    dtb: &[u8],
    platform: &Platform,
    cmdline: &str,
) -> Result<Vec<GuestConfig>, GuestError> {
    let guests = parse_nodes(dtb)?;
    let Some(first) = guests.first() else {
        return Ok(alloc::vec![GuestConfig::legacy(
            platform,
            &LegacyOptions::parse(cmdline)?
        )?]);
    };
    if let Some(m) = platform.modules.first() {
        return Err(GuestError::BothStyles {
            module: m.node.clone(),
            guest: first.name.clone(),
        });
    }
    if let Some(opt) = cmdline.split_whitespace().find(|a| {
        let name = a.split_once('=').map_or(*a, |(n, _)| n);
        LEGACY_GUEST_OPTIONS.contains(&name)
    }) {
        return Err(GuestError::OptionWithGuestNodes {
            option: opt.to_string(),
            guest: first.name.clone(),
        });
    }
    Ok(guests)
}

/// Why `name` cannot name a guest node, if it cannot: a node name without
/// unit address (Devicetree Specification v0.4, 2.2.1): 1 to 31 letters,
/// digits and `, . _ + -`, starting with a letter. (xtask checks the names
/// of a TOML file's guests with it.)
pub fn node_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 31 {
        return Some(format!("\"{name}\": want 1 to 31 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some(format!("\"{name}\": want a letter first"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ",._+-".contains(c))
    {
        return Some(format!(
            "\"{name}\": want only letters, digits and , . _ + - (no unit address)"
        ));
    }
    None
}

/// The node name a module at `r` gets when guest nodes are written out.
pub(crate) fn module_node_name(r: MemRange<Pa>) -> String {
    format!("module@{:x}", r.base.0)
}

/// The properties a guest node may have.
const KNOWN_PROPERTIES: &[&str] = &[
    "compatible",
    "#address-cells",
    "#size-cells",
    "host-cpus",
    "host-memory",
    "pci-segment",
    "root-ports",
    "pci-passthrough",
    "virtio-blk",
    "virtio-console",
    "on-reset",
    "phandle",
    "linux,phandle",
];

/// The guest nodes under `/chosen` (`compatible = "synthetic-pci,guest"`), in
/// DT order; empty when there are none. Each property is checked for form
/// only (see [`validate`] for the rest).
pub fn parse_nodes(dtb: &[u8]) -> Result<Vec<GuestConfig>, GuestError> {
    let fdt = Fdt::new(dtb)
        .map_err(|e| GuestError::DeviceTree(format!("not a valid flattened device tree: {e:?}")))?;
    let Some(chosen) = fdt.find_node("/chosen") else {
        return Ok(Vec::new());
    };
    let nodes: Vec<FdtNode<'_, '_>> = chosen
        .children()
        .filter(|n| crate::has_compat(n, COMPATIBLE))
        .collect();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let cpu_cells = match fdt
        .find_node("/cpus")
        .and_then(|c| u32_prop(&c, "#address-cells"))
    {
        Some(c @ 1..=2) => c,
        Some(c) => {
            return Err(GuestError::DeviceTree(format!(
                "/cpus: #address-cells is {c}, not 1 or 2"
            )))
        }
        None => {
            return Err(GuestError::DeviceTree(
                "/cpus: #address-cells missing (guest nodes' host-cpus use it)".into(),
            ))
        }
    };
    nodes.iter().map(|n| parse_node(n, cpu_cells)).collect()
}

/// One guest node.
fn parse_node(node: &FdtNode<'_, '_>, cpu_cells: u32) -> Result<GuestConfig, GuestError> {
    let name = node.name.to_string();
    let bad = |property: &str, problem: String| GuestError::Malformed {
        guest: name.clone(),
        property: property.to_string(),
        problem,
    };
    if let Some(p) = node
        .properties()
        .find(|p| !KNOWN_PROPERTIES.contains(&p.name))
    {
        return Err(bad(p.name, "unknown property".into()));
    }
    let cell_count = |prop: &str, default: u32| match node.property(prop) {
        None => Ok(default),
        Some(p) => match cells_exact(p.value).as_deref() {
            Some([c @ 1..=2]) => Ok(*c),
            _ => Err(bad(prop, "want <1> or <2>".into())),
        },
    };
    // Default 2 + 2, as QEMU's guest-loader writes module `reg`s (not the
    // DT specification's 2 + 1).
    let reg_cells = (
        cell_count("#address-cells", 2)?,
        cell_count("#size-cells", 2)?,
    );

    let cpus = match node.property("host-cpus") {
        None => return Err(GuestError::NoCpu { guest: name }),
        Some(p) => {
            let stride = 4 * cpu_cells as usize;
            if p.value.is_empty() || p.value.len() % stride != 0 {
                return Err(bad(
                    "host-cpus",
                    format!(
                        "{} bytes, not a list of {cpu_cells}-cell MPIDRs (/cpus #address-cells)",
                        p.value.len()
                    ),
                ));
            }
            let mut it = cells(p.value);
            let mut cpus = Vec::new();
            while let Some(mpidr) = read_num(&mut it, cpu_cells) {
                if mpidr & !MPIDR_AFFINITY != 0 {
                    return Err(bad(
                        "host-cpus",
                        format!("{mpidr:#x} has bits outside MPIDR Aff3..Aff0"),
                    ));
                }
                cpus.push(Cpu { mpidr });
            }
            cpus
        }
    };

    let memory = match node.property("host-memory") {
        None => return Err(GuestError::NoMemory { guest: name }),
        Some(p) => ranges(p.value, reg_cells).map_err(|e| bad("host-memory", e))?,
    };

    let mut kernel = None;
    let mut ramdisk = None;
    let mut bootargs = None;
    for m in node.children() {
        let prop = |p: &str| format!("{}/{p}", m.name);
        let kind = if !crate::has_compat(&m, "multiboot,module") {
            return Err(bad(
                &prop("compatible"),
                "not a \"multiboot,module\" (the only children a guest node has)".into(),
            ));
        } else if crate::has_compat(&m, "multiboot,kernel") {
            ModuleKind::Kernel
        } else if crate::has_compat(&m, "multiboot,ramdisk") {
            ModuleKind::Ramdisk
        } else {
            return Err(bad(
                &prop("compatible"),
                "neither \"multiboot,kernel\" nor \"multiboot,ramdisk\"".into(),
            ));
        };
        let reg = m
            .property("reg")
            .ok_or_else(|| bad(&prop("reg"), "missing".into()))?;
        let range = match ranges(reg.value, reg_cells).map_err(|e| bad(&prop("reg"), e))?[..] {
            [r] => r,
            _ => return Err(bad(&prop("reg"), "more than one range".into())),
        };
        let args = match m.property("bootargs") {
            None => None,
            Some(p) => {
                Some(string(p.value).ok_or_else(|| bad(&prop("bootargs"), "not a string".into()))?)
            }
        };
        let slot = match kind {
            ModuleKind::Kernel => {
                bootargs = args;
                &mut kernel
            }
            _ if args.is_some() => {
                return Err(bad(
                    &prop("bootargs"),
                    "on the ramdisk: the kernel module holds the command line".into(),
                ))
            }
            _ => &mut ramdisk,
        };
        if slot.is_some() {
            return Err(bad(
                &prop("compatible"),
                format!(
                    "a second {} module",
                    if kind == ModuleKind::Kernel {
                        "kernel"
                    } else {
                        "ramdisk"
                    }
                ),
            ));
        }
        *slot = Some(range);
    }
    let kernel = kernel.ok_or_else(|| GuestError::NoKernel {
        guest: name.clone(),
    })?;

    let strings_of = |prop: &str| -> Result<Vec<&str>, GuestError> {
        match node.property(prop) {
            None => Ok(Vec::new()),
            Some(p) => {
                string_list(p.value).ok_or_else(|| bad(prop, "not a list of strings".into()))
            }
        }
    };
    let devices = strings_of("pci-passthrough")?
        .into_iter()
        .map(|s| {
            s.parse::<Sbdf>()
                .map_err(|e| bad("pci-passthrough", format!("\"{s}\": {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let disks = strings_of("virtio-blk")?
        .into_iter()
        .map(|s| s.parse::<DiskBackend>().map_err(|e| bad("virtio-blk", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let u32_of = |prop: &str| -> Result<Option<u32>, GuestError> {
        match node.property(prop) {
            None => Ok(None),
            Some(p) => match cells_exact(p.value).as_deref() {
                Some([v]) => Ok(Some(*v)),
                _ => Err(bad(prop, "not one cell".into())),
            },
        }
    };
    let segment = match u32_of("pci-segment")? {
        None => DEFAULT_SEGMENT,
        Some(s) => {
            u16::try_from(s).map_err(|_| bad("pci-segment", format!("{s:#x} is above 0xffff")))?
        }
    };
    let root_ports = match u32_of("root-ports")? {
        None => None,
        Some(n) => Some(
            u8::try_from(n)
                .ok()
                .filter(|n| (2..=31).contains(n))
                .ok_or_else(|| bad("root-ports", format!("{n}: want 2 to 31")))?,
        ),
    };
    let on_reset = match node.property("on-reset") {
        None => ResetAction::default(),
        Some(p) => string(p.value)
            .ok_or_else(|| bad("on-reset", "not one string".into()))?
            .parse()
            .map_err(|e| bad("on-reset", e))?,
    };
    let console = match node.property("virtio-console") {
        None => false,
        Some(p) if p.value.is_empty() => true,
        Some(_) => return Err(bad("virtio-console", "not empty".into())),
    };

    Ok(GuestConfig {
        name,
        cpus,
        memory: GuestMemory::Static(memory),
        kernel,
        ramdisk,
        bootargs,
        devices,
        disks,
        console,
        segment,
        root_ports,
        on_reset,
    })
}

/// `(address, size)` pairs of `cells.0` + `cells.1` cells each; empty,
/// zero-sized or wrapping ones refused.
fn ranges(v: &[u8], (ac, sc): (u32, u32)) -> Result<Vec<MemRange<Pa>>, String> {
    let stride = 4 * (ac + sc) as usize;
    if v.is_empty() || v.len() % stride != 0 {
        return Err(format!(
            "{} bytes, not a list of ({ac} address + {sc} size)-cell ranges",
            v.len()
        ));
    }
    let mut it = cells(v);
    let mut out = Vec::new();
    while let (Some(base), Some(size)) = (read_num(&mut it, ac), read_num(&mut it, sc)) {
        let r = MemRange::new(Pa(base), size);
        if size == 0 {
            return Err(format!("{r}: empty"));
        }
        if r.end().is_none() {
            return Err(format!("{r}: wraps around"));
        }
        out.push(r);
    }
    Ok(out)
}

/// All the cells of a property, `None` if its length is not a multiple of 4.
fn cells_exact(v: &[u8]) -> Option<Vec<u32>> {
    (v.len() % 4 == 0).then(|| cells(v).collect())
}

/// A property's NUL-separated strings, `None` unless each is UTF-8 and
/// NUL-terminated and there is at least one.
fn string_list(v: &[u8]) -> Option<Vec<&str>> {
    let body = v.strip_suffix(&[0])?;
    body.split(|&b| b == 0)
        .map(|s| core::str::from_utf8(s).ok())
        .collect()
}

/// A property holding one string.
fn string(v: &[u8]) -> Option<String> {
    match string_list(v)?[..] {
        [s] => Some(s.to_string()),
        _ => None,
    }
}
