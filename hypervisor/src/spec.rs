//! What each guest is made of, before it is built. The guests come from the
//! host DT (`platform::guests`, `docs/guests.md`): the guest nodes under
//! `/chosen`, or the single guest of the boot modules directly under
//! `/chosen` and the single-guest options. Every set of guests passes
//! `platform::guests::validate`; [`GuestSpec`] is a guest as the hypervisor
//! builds it: its CPUs as indices into the hypervisor's CPU list.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use platform::guests::GuestConfig;
pub use platform::guests::{DiskBackend, GuestMemory, ResetAction};
use vbus::{MemRange, Pa, Sbdf};

/// One guest, as the hypervisor builds it.
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
    /// Its emulated virtio-blk devices, after the passed-through functions.
    pub disks: Vec<DiskBackend>,
    /// Whether it gets a virtio-console after its disks (virtio 1.2, 5.3).
    pub console: bool,
    /// The number of its synthetic PCI segment.
    pub segment: u16,
    /// At least this many root ports on its segment (0: as many as its
    /// devices need, two at least).
    pub root_ports: usize,
    /// What its SYSTEM_RESET does.
    pub on_reset: ResetAction,
}

impl GuestSpec {
    /// `c` (validated) on the host whose CPUs are `cpus` (MPIDRs, the boot
    /// CPU first; at most `max_cpus` of them run guests). The single guest
    /// of a boot without guest nodes gets every CPU in that order, so that
    /// its vCPU 0 is the boot CPU as before guest nodes.
    pub fn from_config(c: &GuestConfig, cpus: &[u64], max_cpus: usize) -> Result<Self, String> {
        let legacy =
            c.name == platform::guests::LEGACY_NAME && matches!(c.memory, GuestMemory::Auto { .. });
        let indices: Vec<usize> = if legacy {
            (0..cpus.len().min(max_cpus)).collect()
        } else {
            c.cpus
                .iter()
                .map(|cpu| {
                    cpus.iter()
                        .position(|&m| m == cpu.mpidr)
                        .filter(|&i| i < max_cpus)
                        .ok_or_else(|| {
                            format!(
                                "guest {}: CPU {:#x}: only the first {max_cpus} host CPUs run guests",
                                c.name, cpu.mpidr
                            )
                        })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(GuestSpec {
            name: c.name.clone(),
            cpus: indices,
            memory: c.memory.clone(),
            kernel: c.kernel,
            ramdisk: c.ramdisk,
            bootargs: c.bootargs.clone().unwrap_or_default(),
            devices: c.devices.clone(),
            disks: c.disks.clone(),
            console: c.console,
            segment: c.segment,
            root_ports: c.root_ports.map_or(0, usize::from),
            on_reset: c.on_reset,
        })
    }

    /// Whether it is the single guest of a boot without guest nodes (its
    /// lines read as they always did).
    pub fn is_single(&self) -> bool {
        self.name == platform::guests::LEGACY_NAME
            && matches!(self.memory, GuestMemory::Auto { .. })
    }
}
