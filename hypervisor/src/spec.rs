//! What each guest is made of, before it is built. The guests come from the
//! host DT (`platform::guests`, `docs/guests.md`): the guest nodes under
//! `/chosen`, or the single guest of the boot modules directly under
//! `/chosen` and the single-guest options. The debug option `split-guest=`
//! (README, "The hypervisor's own options") makes guests from the boot
//! modules without guest nodes, for testing under QEMU until `cargo xtask`
//! writes guest nodes. Every set of guests passes
//! `platform::guests::validate`; [`GuestSpec`] is a guest as the hypervisor
//! builds it: its CPUs as indices into the hypervisor's CPU list.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use platform::guests::GuestConfig;
pub use platform::guests::{DiskBackend, GuestMemory, ResetAction};
use vbus::{MemRange, Pa, Sbdf};

/// The synthetic segment's number when nothing says otherwise.
pub const DEFAULT_SEGMENT: u16 = platform::guests::DEFAULT_SEGMENT;

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

/// A size: bytes, or a number with K, M or G (binary).
fn size(v: &str) -> Option<u64> {
    guest_dt::boot::parse_size(v)
}

/// The guests of `split-guest=NAME,key=value,...` options (one per guest),
/// each booting the boot modules (`kernel`, `ramdisk`, `bootargs`), on the
/// host CPUs `cpus` (MPIDRs, the boot CPU first), which are dealt out in
/// order. Keys: `cpus=N` (default 1), `mem=SIZE` (required: taken from free
/// host RAM), `pci-passthrough=SBDF[+SBDF...]`, `virtio-blk=ram:SIZE`,
/// `virtio-blk=host` (the disk of `host_disk`, the `host-disk=` option) or
/// `virtio-blk=host:SBDF` (repeatable), `virtio-console`, `segment=N` (default: 1 + the
/// guest's position), `root-ports=N`, `on-reset=restart|stop`, and last
/// `append=TEXT`: TEXT (commas included) added to the guest's command line
/// after a space. Returns each guest (its memory still `Auto` with the size
/// it wants) in configuration order; empty without such an option. Errors
/// name the guest and the item.
pub fn split_guests(
    bootargs: &str,
    cpus: &[u64],
    kernel: MemRange<Pa>,
    ramdisk: Option<MemRange<Pa>>,
    guest_bootargs: &str,
    host_disk: Option<Sbdf>,
) -> Result<Vec<GuestConfig>, String> {
    let mut out: Vec<GuestConfig> = Vec::new();
    let mut next_cpu = 0usize;
    for arg in bootargs.split_whitespace() {
        let Some(v) = arg.strip_prefix("split-guest=") else {
            continue;
        };
        let mut items = v.split(',');
        let name = items.next().unwrap_or("").to_string();
        let bad = |item: &str, want: &str| format!("split-guest {name}: {item}: want {want}");
        let mut g = GuestConfig {
            name: name.clone(),
            cpus: Vec::new(),
            memory: GuestMemory::Auto { size: None },
            kernel,
            ramdisk,
            bootargs: Some(guest_bootargs.to_string()),
            devices: Vec::new(),
            disks: Vec::new(),
            console: false,
            segment: DEFAULT_SEGMENT + out.len() as u16,
            root_ports: None,
            on_reset: ResetAction::Stop,
        };
        let mut ncpus = 1usize;
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
                    let line = g.bootargs.get_or_insert_with(String::new);
                    if !line.is_empty() {
                        line.push(' ');
                    }
                    line.push_str(&text);
                }
                "cpus" => {
                    ncpus = val
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(item, "cpus=N, N at least 1"))?
                }
                "mem" => {
                    g.memory = GuestMemory::Auto {
                        size: Some(size(val).ok_or_else(|| bad(item, "mem=SIZE, e.g. 256M"))?),
                    }
                }
                "pci-passthrough" => {
                    for s in val.split('+').filter(|s| !s.is_empty()) {
                        let sbdf: Sbdf = s.parse().map_err(|e| bad(item, &format!("{e}")))?;
                        g.devices.push(sbdf);
                    }
                }
                "virtio-blk" => g.disks.push(match val {
                    "host" => DiskBackend::Host(
                        host_disk.ok_or_else(|| bad(item, "host-disk=SSSS:BB:DD.F beside it"))?,
                    ),
                    _ => val
                        .parse()
                        .map_err(|e: String| bad(item, &format!("ram:SIZE or host[:SBDF] ({e})")))?,
                }),
                "virtio-console" => g.console = true,
                "segment" => {
                    g.segment = val
                        .parse()
                        .map_err(|_| bad(item, "segment=N, 0 to 65535"))?
                }
                "root-ports" => {
                    g.root_ports = Some(
                        val.parse()
                            .ok()
                            .filter(|n| (2..=31).contains(n))
                            .ok_or_else(|| bad(item, "root-ports=N, 2 to 31"))?,
                    )
                }
                "on-reset" => {
                    g.on_reset = val
                        .parse()
                        .map_err(|e: String| bad(item, &format!("on-reset=restart or stop ({e})")))?
                }
                _ => {
                    return Err(bad(
                        item,
                        "cpus=, mem=, pci-passthrough=, virtio-blk=, virtio-console, segment=, root-ports=, on-reset= or append=",
                    ))
                }
            }
        }
        if !matches!(g.memory, GuestMemory::Auto { size: Some(_) }) {
            return Err(format!("split-guest {name}: no mem=SIZE"));
        }
        let Some(mine) = cpus.get(next_cpu..next_cpu + ncpus) else {
            return Err(format!(
                "split-guest {name}: cpus={ncpus}, but only {} of the {} host CPUs are left",
                cpus.len().saturating_sub(next_cpu),
                cpus.len()
            ));
        };
        g.cpus = mine.iter().map(|&mpidr| platform::Cpu { mpidr }).collect();
        next_cpu += ncpus;
        out.push(g);
    }
    Ok(out)
}
