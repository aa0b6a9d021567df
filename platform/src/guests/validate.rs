//! The checks a set of guests passes before the hypervisor boots them: each
//! guest against the host, then every pair against each other.

use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use arch_emu::addr::{MemRange, Pa};
use vbus::Sbdf;

use super::{node_name_problem, Area, GuestConfig, GuestError, GuestMemory, MPIDR_AFFINITY};
use crate::{Cpu, Platform};

/// The granule guest memory is mapped in (stage 2 with 4 KiB pages, Arm ARM
/// D8.2).
const PAGE: u64 = 0x1000;

/// What the host has to give, as the hypervisor found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostResources {
    /// The CPUs (`/cpus`).
    pub cpus: Vec<Cpu>,
    /// RAM (the memory nodes).
    pub ram: Vec<MemRange<Pa>>,
    /// What the hypervisor keeps for itself (its image, heap, stacks, the
    /// host DT): no guest memory or module may overlap it.
    pub reserved: Vec<MemRange<Pa>>,
    /// Every PCI function found when the host's segments were enumerated.
    pub devices: Vec<Sbdf>,
}

impl HostResources {
    /// CPUs and RAM from `platform`, with the hypervisor's reservation and
    /// the enumerated functions.
    pub fn new(platform: &Platform, reserved: Vec<MemRange<Pa>>, devices: Vec<Sbdf>) -> Self {
        HostResources {
            cpus: platform.cpus.clone(),
            ram: platform.memory.iter().map(|r| r.range()).collect(),
            reserved,
            devices,
        }
    }
}

/// Checks `guests` against `host` and against each other; the first problem
/// found, in configuration order, is the error:
/// - each guest: a valid node name; at least one CPU, each a host CPU, none
///   twice; memory (required with more than one guest) in 4 KiB-aligned,
///   non-overlapping ranges inside host RAM and outside the reservation;
///   modules non-empty, inside host RAM, outside the reservation and apart;
///   its host devices (passthrough and `host:` disks) enumerated and each
///   named once; RAM disks non-empty; `root-ports` 2 to 31;
/// - each pair of guests: distinct names, CPUs, memory, host devices and
///   segment numbers;
/// - no module inside any guest's memory (the guest could overwrite what a
///   restart boots from).
pub fn validate(guests: &[GuestConfig], host: &HostResources) -> Result<(), GuestError> {
    for g in guests {
        check_guest(g, guests.len(), host)?;
    }
    for (i, a) in guests.iter().enumerate() {
        for b in &guests[i + 1..] {
            check_pair(a, b)?;
        }
    }
    for g in guests {
        for (area, range) in modules(g) {
            for o in guests {
                if let Some(m) = static_memory(o).iter().find(|m| m.overlaps(&range)) {
                    return Err(GuestError::ModuleInGuestMemory {
                        guest: g.name.clone(),
                        area,
                        range,
                        owner: o.name.clone(),
                        memory: *m,
                    });
                }
            }
        }
    }
    Ok(())
}

fn check_guest(g: &GuestConfig, count: usize, host: &HostResources) -> Result<(), GuestError> {
    let guest = || g.name.clone();
    let bad = |property: &str, problem: alloc::string::String| GuestError::Malformed {
        guest: guest(),
        property: property.to_string(),
        problem,
    };
    if let Some(p) = node_name_problem(&g.name) {
        return Err(bad("name", p));
    }

    if g.cpus.is_empty() {
        return Err(GuestError::NoCpu { guest: guest() });
    }
    for (i, c) in g.cpus.iter().enumerate() {
        if c.mpidr & !MPIDR_AFFINITY != 0 {
            return Err(bad(
                "host-cpus",
                format!("{:#x} has bits outside MPIDR Aff3..Aff0", c.mpidr),
            ));
        }
        if g.cpus[..i].contains(c) {
            return Err(bad("host-cpus", format!("CPU {:#x} listed twice", c.mpidr)));
        }
        if !host.cpus.contains(c) {
            return Err(GuestError::CpuMissing {
                guest: guest(),
                mpidr: c.mpidr,
            });
        }
    }

    match &g.memory {
        GuestMemory::Auto { .. } if count > 1 => {
            return Err(GuestError::NoMemory { guest: guest() })
        }
        GuestMemory::Auto { .. } => {}
        GuestMemory::Static(v) if v.is_empty() => {
            return Err(GuestError::NoMemory { guest: guest() })
        }
        GuestMemory::Static(v) => {
            for (i, r) in v.iter().enumerate() {
                if r.size == 0 || r.base.0 % PAGE != 0 || r.size % PAGE != 0 {
                    return Err(bad(
                        "host-memory",
                        format!("{r}: not a non-empty range of whole 4 KiB pages"),
                    ));
                }
                if let Some(o) = v[..i].iter().find(|o| o.overlaps(r)) {
                    return Err(bad("host-memory", format!("{r} overlaps {o}")));
                }
                place(g, Area::Memory, *r, host)?;
            }
        }
    }

    for (area, r) in modules(g) {
        if r.size == 0 {
            return Err(bad(&module_reg(r), format!("{area} is empty")));
        }
        place(g, area, r, host)?;
    }
    if let Some(rd) = g.ramdisk.filter(|rd| rd.overlaps(&g.kernel)) {
        return Err(bad(
            &module_reg(rd),
            format!(
                "ramdisk module {rd} overlaps the kernel module {}",
                g.kernel
            ),
        ));
    }

    let claimed = claimed_devices(g);
    for (i, d) in claimed.iter().enumerate() {
        if claimed[..i].contains(d) {
            return Err(GuestError::DeviceListedTwice {
                guest: guest(),
                device: *d,
            });
        }
        if !host.devices.contains(d) {
            return Err(GuestError::DeviceMissing {
                guest: guest(),
                device: *d,
            });
        }
    }
    if g.disks.contains(&super::DiskBackend::Ram(0)) {
        return Err(bad("virtio-blk", "ram:0: an empty RAM disk".into()));
    }
    if let Some(n) = g.root_ports.filter(|n| !(2..=31).contains(n)) {
        return Err(bad("root-ports", format!("{n}: want 2 to 31")));
    }
    Ok(())
}

/// Whether `range` (the guest's `area`) lies in host RAM and outside the
/// hypervisor's reservation.
fn place(
    g: &GuestConfig,
    area: Area,
    range: MemRange<Pa>,
    host: &HostResources,
) -> Result<(), GuestError> {
    if !host.ram.iter().any(|ram| ram.covers(&range)) {
        return Err(GuestError::OutsideRam {
            guest: g.name.clone(),
            area,
            range,
        });
    }
    if let Some(res) = host.reserved.iter().find(|res| res.overlaps(&range)) {
        return Err(GuestError::InReservation {
            guest: g.name.clone(),
            area,
            range,
            reserved: *res,
        });
    }
    Ok(())
}

fn check_pair(a: &GuestConfig, b: &GuestConfig) -> Result<(), GuestError> {
    let (first, second) = (a.name.clone(), b.name.clone());
    if a.name == b.name {
        return Err(GuestError::NameShared { name: first });
    }
    if let Some(c) = a.cpus.iter().find(|c| b.cpus.contains(c)) {
        return Err(GuestError::CpuShared {
            mpidr: c.mpidr,
            first,
            second,
        });
    }
    for ra in static_memory(a) {
        if let Some(rb) = static_memory(b).iter().find(|rb| rb.overlaps(ra)) {
            return Err(GuestError::MemoryShared {
                first,
                first_range: *ra,
                second,
                second_range: *rb,
            });
        }
    }
    let theirs = claimed_devices(b);
    if let Some(d) = claimed_devices(a).into_iter().find(|d| theirs.contains(d)) {
        return Err(GuestError::DeviceShared {
            device: d,
            first,
            second,
        });
    }
    if a.segment == b.segment {
        return Err(GuestError::SegmentShared {
            segment: a.segment,
            first,
            second,
        });
    }
    Ok(())
}

/// The host functions a guest claims: its passthrough devices, then its
/// `host:` disks.
fn claimed_devices(g: &GuestConfig) -> Vec<Sbdf> {
    g.devices
        .iter()
        .copied()
        .chain(g.disks.iter().filter_map(|d| d.host_device()))
        .collect()
}

fn static_memory(g: &GuestConfig) -> &[MemRange<Pa>] {
    match &g.memory {
        GuestMemory::Static(v) => v,
        GuestMemory::Auto { .. } => &[],
    }
}

fn modules(g: &GuestConfig) -> impl Iterator<Item = (Area, MemRange<Pa>)> {
    core::iter::once((Area::Kernel, g.kernel)).chain(g.ramdisk.map(|r| (Area::Ramdisk, r)))
}

/// How a module's `reg` is named: under the node name the renderer gives it.
fn module_reg(r: MemRange<Pa>) -> alloc::string::String {
    format!("{}/reg", super::module_node_name(r))
}
