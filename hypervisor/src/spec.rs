//! What each guest is made of, before it is built: the hypervisor's
//! internal description of a guest (`GuestSpec`), filled today from the
//! single-guest inputs (the boot modules directly under `/chosen` and the
//! hypervisor's options) or from the debug option `split-guest=` (several
//! guests; `README.md`, "The hypervisor's own options"). The guest nodes
//! under `/chosen` (`platform::guests`, `docs/guests.md`) will fill the same
//! struct: its fields are theirs.

use alloc::string::String;
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
    #[allow(dead_code, reason = "built by `split-guest=` (next step)")]
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
    #[allow(dead_code, reason = "built by `split-guest=` (next step)")]
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
