//! What each guest is made of, before it is built: the hypervisor's
//! internal description of a guest (`GuestSpec`), filled today from the
//! single-guest inputs (the boot modules directly under `/chosen` and the
//! hypervisor's options) or from the debug option `split-guest=` (several
//! guests; `README.md`, "The hypervisor's own options"). The guest nodes
//! under `/chosen` (`platform::guests`, `docs/guests.md`) will fill the same
//! struct: its fields are theirs.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use vbus::{MemRange, Pa, Sbdf};

/// The name the single guest gets (no guest nodes, no `split-guest=`).
pub const SINGLE_GUEST_NAME: &str = "guest";
/// The synthetic segment's number when nothing says otherwise.
pub const DEFAULT_SEGMENT: u16 = 1;

/// Where a guest's RAM comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMemory {
    /// These host ranges, its alone, mapped one after the other from the
    /// guest's RAM base.
    Static(Vec<MemRange<Pa>>),
    /// Chosen by the hypervisor from the free host RAM: `size` bytes
    /// (`guest-mem=`) or the largest free stretch; a page-aligned initrd
    /// module is then mapped in place (single-guest boots only).
    Auto {
        /// Bytes wanted, if said.
        size: Option<u64>,
    },
}

/// What backs a guest's emulated virtio-blk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBackend {
    /// A RAM disk of this many bytes carved from host RAM (`ram:SIZE`).
    Ram(u64),
    /// The host disk the hypervisor drives (`host`, with `host-disk=`).
    Host,
}

/// What a guest's PSCI SYSTEM_RESET does (PSCI 1.1, DEN0022D 5.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetAction {
    /// Boot it again from its modules.
    Restart,
    /// Stop it, as SYSTEM_OFF does (the default).
    #[default]
    Stop,
}

/// One guest, as configured.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Its name (console prefix, messages).
    pub name: String,
    /// The host CPUs it runs on, by index in the hypervisor's CPU list (the
    /// boot CPU is 0); its vCPU i runs on the i-th.
    pub cpus: Vec<usize>,
    /// Its RAM.
    pub memory: GuestMemory,
    /// Its kernel module in host memory.
    pub kernel: MemRange<Pa>,
    /// Its initrd module in host memory.
    pub ramdisk: Option<MemRange<Pa>>,
    /// Its kernel command line.
    pub bootargs: String,
    /// Host PCI functions passed through to it, in this order.
    pub devices: Vec<Sbdf>,
    /// Its emulated virtio-blk, after the passed-through functions.
    pub disk: Option<DiskBackend>,
    /// The number of its synthetic PCI segment.
    pub segment: u16,
    /// At least this many root ports on its segment (0: as many as its
    /// devices need, two at least).
    pub root_ports: usize,
    /// What its SYSTEM_RESET does.
    pub on_reset: ResetAction,
}
/// A size: bytes, or a number with K, M or G (binary).
fn size(v: &str) -> Option<u64> {
    guest_dt::boot::parse_size(v)
}

/// The guests of `split-guest=NAME,key=value,...` options (one per guest),
/// from the boot modules (`kernel`, `ramdisk`, `bootargs`: every guest boots
/// them) and the host's `ncpus` CPUs, which are dealt out in order. Keys:
/// `cpus=N` (default 1), `mem=SIZE` (required: taken from free host RAM at
/// build), `pci-passthrough=SBDF[+SBDF...]`, `virtio-blk=ram:SIZE|host`,
/// `segment=N` (default: 1 + the guest's position), `root-ports=N`,
/// `on-reset=restart|stop`, and last `append=TEXT`: TEXT (commas included)
/// added to the guest's command line after a space. Returns each guest
/// with the RAM it wants. Empty when there is no such option. Errors name
/// the guest and the item, or both guests for a conflict.
pub fn split_guests(
    bootargs: &str,
    ncpus: usize,
    kernel: MemRange<Pa>,
    ramdisk: Option<MemRange<Pa>>,
    guest_bootargs: &str,
) -> Result<Vec<(GuestSpec, u64)>, String> {
    let mut out: Vec<(GuestSpec, u64)> = Vec::new();
    let mut next_cpu = 0usize;
    for arg in bootargs.split_whitespace() {
        let Some(v) = arg.strip_prefix("split-guest=") else {
            continue;
        };
        let mut items = v.split(',');
        let name = items.next().unwrap_or("").to_string();
        if name.is_empty()
            || name == "hv"
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "split-guest={v}: the name comes first: letters, digits, - and _ (not \"hv\")"
            ));
        }
        let bad = |item: &str, want: &str| format!("split-guest {name}: {item}: want {want}");
        let mut spec = GuestSpec {
            name: name.clone(),
            cpus: Vec::new(),
            memory: GuestMemory::Static(Vec::new()),
            kernel,
            ramdisk,
            bootargs: guest_bootargs.to_string(),
            devices: Vec::new(),
            disk: None,
            segment: DEFAULT_SEGMENT + out.len() as u16,
            root_ports: 0,
            on_reset: ResetAction::Stop,
        };
        let mut cpus = 1usize;
        let mut mem = None;
        let rest: Vec<&str> = items.collect();
        let mut i = 0;
        while let Some(&item) = rest.get(i) {
            i += 1;
            let (k, val) = item.split_once('=').unwrap_or((item, ""));
            match k {
                "append" => {
                    // The rest of the option, commas included.
                    let mut text = String::from(val);
                    for more in rest.get(i..).unwrap_or(&[]) {
                        text.push(',');
                        text.push_str(more);
                    }
                    i = rest.len();
                    if !spec.bootargs.is_empty() {
                        spec.bootargs.push(' ');
                    }
                    spec.bootargs.push_str(&text);
                }
                "cpus" => {
                    cpus = val
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(item, "cpus=N, N at least 1"))?
                }
                "mem" => mem = Some(size(val).ok_or_else(|| bad(item, "mem=SIZE, e.g. 256M"))?),
                "pci-passthrough" => {
                    for s in val.split('+').filter(|s| !s.is_empty()) {
                        let sbdf: Sbdf = s.parse().map_err(|e| bad(item, &format!("{e}")))?;
                        spec.devices.push(sbdf);
                    }
                }
                "virtio-blk" => {
                    spec.disk = Some(match val {
                        "host" => DiskBackend::Host,
                        _ => DiskBackend::Ram(
                            val.strip_prefix("ram:")
                                .and_then(size)
                                .ok_or_else(|| bad(item, "virtio-blk=ram:SIZE or host"))?,
                        ),
                    })
                }
                "segment" => {
                    spec.segment = val
                        .parse()
                        .map_err(|_| bad(item, "segment=N, 0 to 65535"))?
                }
                "root-ports" => {
                    spec.root_ports = val
                        .parse()
                        .ok()
                        .filter(|n| (2..=31).contains(n))
                        .ok_or_else(|| bad(item, "root-ports=N, 2 to 31"))?
                }
                "on-reset" => {
                    spec.on_reset = match val {
                        "restart" => ResetAction::Restart,
                        "stop" => ResetAction::Stop,
                        _ => return Err(bad(item, "on-reset=restart or stop")),
                    }
                }
                _ => {
                    return Err(bad(
                        item,
                        "cpus=, mem=, pci-passthrough=, virtio-blk=, segment=, root-ports=, on-reset= or append=",
                    ))
                }
            }
        }
        let mem = mem.ok_or_else(|| format!("split-guest {name}: no mem=SIZE"))?;
        if next_cpu + cpus > ncpus {
            return Err(format!(
                "split-guest {name}: cpus={cpus}, but only {} of the {ncpus} host CPUs are left",
                ncpus - next_cpu
            ));
        }
        spec.cpus = (next_cpu..next_cpu + cpus).collect();
        next_cpu += cpus;
        for (other, _) in &out {
            if other.name == spec.name {
                return Err(format!("two guests are named {name}"));
            }
            if other.segment == spec.segment {
                return Err(format!(
                    "guests {} and {name} both use PCI segment {:04x}",
                    other.name, spec.segment
                ));
            }
            if let Some(d) = spec.devices.iter().find(|d| other.devices.contains(d)) {
                return Err(format!(
                    "guests {} and {name} both claim host device {d}",
                    other.name
                ));
            }
            if other.disk == Some(DiskBackend::Host) && spec.disk == Some(DiskBackend::Host) {
                return Err(format!(
                    "guests {} and {name} both claim the host disk",
                    other.name
                ));
            }
        }
        out.push((spec, mem));
    }
    Ok(out)
}
