//! A [`Config`]'s guests as guest nodes under `/chosen` (docs/guests.md):
//! the host CPUs, host devices and host memory each gets, where the boot
//! modules go in host RAM, the [`GuestConfig`]s, and from them QEMU's
//! arguments, the DTB QEMU is given with `-dtb` and the U-Boot script that
//! builds the same nodes on a board.
//!
//! The host QEMU builds: NIC *i* (in guest order) with its top at `pcie.0`
//! device `2 + i` ([`MAX_NICS`] of them), each image disk a `virtio-blk-pci`
//! on `pcie.0` from device 5 on; buses numbered depth-first from 0, as the
//! hypervisor numbers them. Boot modules are loaded raw by QEMU's generic
//! loader (`-device loader,file=...,addr=...,force-raw=on`), packed low
//! beside the hypervisor and the DTB, the largest first, a file named by
//! several guests once; RAM disks are left room at the top of RAM, where the
//! hypervisor carves them; then each guest's memory in file order, one
//! 2 MiB-aligned range, `"rest"` the largest stretch left.

use std::path::{Path, PathBuf};
use std::process::Command;

use arch_emu::addr::{MemRange, Pa};
use platform::guests::{DiskBackend, GuestConfig, GuestMemory, HostResources};
use platform::Cpu;
use vbus::Sbdf;

use crate::config::{Config, Cpus, DiskSpec, GuestFiles, Memory, DEFAULT_CPUS};
use crate::error::Context;
use crate::layout::{self, Range, MIB2};
use crate::net::{self, NetBackend, Nic, NicSlot, PortForward, NIC_BUS_DEVICE};
use crate::qemu::{self, Mode};
use crate::{Error, Result};

/// NICs the host can have: their tops at `pcie.0` devices 2 to 4, below the
/// first disk's.
pub const MAX_NICS: usize = (qemu::HOST_DISK_DEVICE - NIC_BUS_DEVICE) as usize;

/// The last `pcie.0` device number an image disk can take.
const LAST_DEVICE: u8 = 31;

/// QEMU `virt`'s CPUs per cluster with GICv3 (`GICV3_TARGETLIST_BITS`).
const VIRT_CLUSTER: u32 = 16;

/// The MPIDR affinity QEMU's `virt` (GICv3) gives CPU `index`: Aff1 the
/// cluster of 16, Aff0 the CPU in it (hw/arm/virt.c `virt_cpu_mp_affinity`);
/// what its DT's `/cpus/cpu@N` `reg` holds.
pub fn virt_mpidr(index: u32) -> u64 {
    u64::from(index / VIRT_CLUSTER) << 8 | u64::from(index % VIRT_CLUSTER)
}

/// The `virt` CPU index of `mpidr`, if a `virt` CPU has it.
fn virt_index(mpidr: u64) -> Option<u32> {
    let (aff0, aff1) = (mpidr & 0xff, (mpidr >> 8) & 0xff);
    (mpidr >> 16 == 0 && aff0 < u64::from(VIRT_CLUSTER))
        .then(|| (aff1 * u64::from(VIRT_CLUSTER) + aff0) as u32)
}

/// A NIC QEMU gives the host, passed through to a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNic {
    /// The guest's index in the file.
    pub guest: usize,
    /// The model.
    pub model: Nic,
    /// Where it sits.
    pub slot: NicSlot,
    /// The `pcie.0` device number of its top (itself or its root port).
    pub device: u8,
    /// Its host address.
    pub address: Sbdf,
    /// TCP forwards to its user network.
    pub forwards: Vec<PortForward>,
}

/// A disk image QEMU gives the host as a `virtio-blk-pci`, which the
/// hypervisor drives for a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDisk {
    /// The guest's index in the file.
    pub guest: usize,
    /// The raw image.
    pub image: PathBuf,
    /// Its `pcie.0` device number.
    pub device: u8,
    /// Its host address.
    pub address: Sbdf,
}

/// A file QEMU loads into host RAM as a boot module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The file.
    pub file: PathBuf,
    /// Its host physical address (2 MiB-aligned).
    pub at: u64,
    /// Its length.
    pub len: u64,
}

/// Everything a boot of a [`Config`]'s guests as guest nodes needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The file (for messages).
    pub file: PathBuf,
    /// Under the hypervisor from QEMU's `-kernel`, or from U-Boot.
    pub mode: Mode,
    /// The machine's CPUs.
    pub smp: u32,
    /// The machine's RAM in bytes.
    pub mem_bytes: u64,
    /// Whether the machine gets an SMMUv3 (anything passed through or a host disk, or asked for).
    pub smmu: bool,
    /// The hypervisor's command line after `semihosting`.
    pub hv_args: String,
    /// Extra QEMU arguments, last.
    pub qemu_args: Vec<String>,
    /// The host's NICs.
    pub nics: Vec<HostNic>,
    /// The host's disks.
    pub disks: Vec<HostDisk>,
    /// The boot modules.
    pub modules: Vec<Module>,
    /// Host RAM and what the hypervisor, its DTB and QEMU's boot stub occupy.
    pub host: layout::HostRam,
    /// The guests, as their nodes say.
    pub guests: Vec<GuestConfig>,
}

fn sbdf(s: &str) -> Result<Sbdf> {
    s.parse()
        .map_err(|e| Error(format!("host address {s}: {e}")))
}

/// The guests of `config` (after `--` overrides) as guest nodes booted in
/// `mode` ([`Mode::Hypervisor`] or [`Mode::UBoot`]), with `files` (from
/// [`Config::files`]) and `default_disk` for `"default"` disks. Errors name
/// the file, the guest and the key.
pub fn plan(
    config: &Config,
    files: &[GuestFiles],
    default_disk: &Path,
    mode: &Mode,
) -> Result<Plan> {
    let file = config.path.display();
    if matches!(mode, Mode::Direct) {
        return Err(Error(format!(
            "{file}: guest nodes need the hypervisor (--direct boots one guest)"
        )));
    }
    let (smp, cpus) = assign_cpus(config)?;

    // Host devices.
    let nic_guests: Vec<usize> = (0..config.guests.len())
        .filter(|&i| config.guests[i].nic != Nic::None)
        .collect();
    let slots: Vec<NicSlot> = nic_guests
        .iter()
        .map(|&i| config.guests[i].nic_slot)
        .collect();
    let mut nics = Vec::new();
    for (k, (&i, addr)) in nic_guests
        .iter()
        .zip(net::host_addresses(&slots))
        .enumerate()
    {
        let g = &config.guests[i];
        nics.push(HostNic {
            guest: i,
            model: g.nic,
            slot: g.nic_slot,
            device: NIC_BUS_DEVICE + k as u8,
            address: sbdf(&addr)?,
            forwards: g.hostfwd.clone(),
        });
    }
    let mut disks = Vec::new();
    for (i, g) in config.guests.iter().enumerate() {
        for d in &g.disks {
            let image = match d {
                DiskSpec::Ram(_) => continue,
                DiskSpec::Default => default_disk.to_path_buf(),
                DiskSpec::Image(p) => p.clone(),
            };
            if !image.is_file() {
                return Err(config.problem(
                    Some(i),
                    "disks",
                    format!("{}: no such image file", image.display()),
                ));
            }
            let device = qemu::HOST_DISK_DEVICE + disks.len() as u8;
            if device > LAST_DEVICE {
                return Err(config.problem(
                    Some(i),
                    "disks",
                    format!(
                        "more image disks than the host's pcie.0 has slots for ({})",
                        LAST_DEVICE - qemu::HOST_DISK_DEVICE + 1
                    ),
                ));
            }
            disks.push(HostDisk {
                guest: i,
                image,
                device,
                address: sbdf(&format!("0000:00:{device:02x}.0"))?,
            });
        }
    }

    // Host RAM: the hypervisor and its DTB, then the modules, the RAM disks, the guests.
    if let Mode::Hypervisor(bin) = mode {
        qemu::check_hypervisor_fits(
            &qemu::read_head(bin, 64)?,
            qemu::file_len(bin)?,
            config.machine.memory,
        )
        .map_err(|e| config.problem(None, "memory", e.0))?;
    }
    let host = qemu::host_ram_for(mode, config.machine.memory)?
        .ok_or_else(|| Error(format!("{file}: no host RAM under --direct")))?;
    let mut used = host.used.clone();
    let mut unique: Vec<(PathBuf, u64)> = Vec::new();
    for f in files {
        for p in std::iter::once(&f.kernel).chain(f.initrd.as_ref()) {
            if !unique.iter().any(|(u, _)| u == p) {
                unique.push((p.clone(), qemu::file_len(p)?));
            }
        }
    }
    let mut order: Vec<usize> = (0..unique.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(unique[k].1));
    let mut modules = vec![None; unique.len()];
    for k in order {
        let (p, len) = &unique[k];
        let at = layout::first_fit(host.ram, &used, *len).ok_or_else(|| {
            config.problem(None, "memory", format!(
                "{} MiB of RAM do not hold the modules beside the hypervisor (at {} of {} bytes): give more",
                config.machine.memory >> 20,
                p.display(),
                len
            ))
        })?;
        used.push(Range::at(at, align_up(*len, MIB2)));
        modules[k] = Some(Module {
            file: p.clone(),
            at,
            len: *len,
        });
    }
    let modules: Vec<Module> = modules.into_iter().flatten().collect();
    let module_of = |p: &Path| modules.iter().find(|m| m.file == p);
    for (i, g) in config.guests.iter().enumerate() {
        for d in &g.disks {
            if let DiskSpec::Ram(n) = d {
                let len = align_up(*n, MIB2);
                let at = layout::last_fit(host.ram, &used, len).ok_or_else(|| {
                    config.problem(
                        Some(i),
                        "disks",
                        format!("ram:{n}: no room left in host RAM: give [machine] more memory"),
                    )
                })?;
                used.push(Range::at(at, len));
            }
        }
    }
    let mut memory: Vec<Option<Range>> = vec![None; config.guests.len()];
    for (i, g) in config.guests.iter().enumerate() {
        if let Memory::Size(n) = g.memory {
            let at = layout::first_fit(host.ram, &used, n).ok_or_else(|| {
                config.problem(Some(i), "memory", format!(
                    "{} MiB do not fit in the machine's {} MiB beside the hypervisor, the modules, the RAM disks and the guests before it (largest stretch left: {} MiB)",
                    n >> 20,
                    config.machine.memory >> 20,
                    layout::largest_free(host.ram, &used).map_or(0, |r| r.len() >> 20)
                ))
            })?;
            memory[i] = Some(Range::at(at, n));
            used.push(Range::at(at, n));
        }
    }
    if let Some(i) = config.guests.iter().position(|g| g.memory == Memory::Rest) {
        let r = layout::largest_free(host.ram, &used)
            .ok_or_else(|| config.problem(Some(i), "memory", "\"rest\": nothing is left"))?;
        memory[i] = Some(r);
        used.push(r);
    }

    let mut guests = Vec::new();
    for (i, g) in config.guests.iter().enumerate() {
        let f = &files[i];
        let mem = memory[i].ok_or_else(|| config.problem(Some(i), "memory", "not placed"))?;
        let klen = qemu::file_len(&f.kernel)?;
        let ilen = f.initrd.as_deref().map(qemu::file_len).transpose()?;
        let need = layout::guest_ram_needed(&qemu::read_head(&f.kernel, 64)?, klen, ilen);
        if mem.len() < need {
            return Err(config.problem(
                Some(i),
                "memory",
                format!(
                    "{} MiB is too small: its kernel, {}its DTB and {} MiB to run need {} MiB",
                    mem.len() >> 20,
                    ilen.map_or(String::new(), |l| format!(
                        "initrd ({} MiB, packed and unpacked), ",
                        l >> 20
                    )),
                    layout::working_ram(ilen) >> 20,
                    (need.div_ceil(MIB2) * MIB2) >> 20
                ),
            ));
        }
        let module = |p: &Path| {
            module_of(p)
                .map(|m| MemRange::new(Pa(m.at), m.len))
                .ok_or_else(|| Error(format!("{}: not placed", p.display())))
        };
        let mut backends = Vec::new();
        let mut own_disks = disks.iter().filter(|d| d.guest == i);
        for d in &g.disks {
            backends.push(match d {
                DiskSpec::Ram(n) => DiskBackend::Ram(*n),
                DiskSpec::Default | DiskSpec::Image(_) => DiskBackend::Host(
                    own_disks
                        .next()
                        .map(|d| d.address)
                        .ok_or_else(|| config.problem(Some(i), "disks", "not placed"))?,
                ),
            });
        }
        guests.push(GuestConfig {
            name: g.name.clone(),
            cpus: cpus[i].iter().map(|&mpidr| Cpu { mpidr }).collect(),
            memory: GuestMemory::Static(vec![MemRange::new(Pa(mem.start), mem.len())]),
            kernel: module(&f.kernel)?,
            ramdisk: f.initrd.as_deref().map(module).transpose()?,
            bootargs: Some(config.cmdline(i)?),
            devices: nics
                .iter()
                .filter(|n| n.guest == i)
                .map(|n| n.address)
                .collect(),
            disks: backends,
            console: g.virtio_console,
            segment: g.segment,
            root_ports: g.root_ports,
            on_reset: g.on_reset,
        });
    }
    Ok(Plan {
        file: config.path.clone(),
        mode: mode.clone(),
        smp,
        mem_bytes: config.machine.memory,
        smmu: config.machine.smmu || !nics.is_empty() || !disks.is_empty(),
        hv_args: config.machine.hv_args.join(" "),
        qemu_args: config.machine.qemu_args.clone(),
        nics,
        disks,
        modules,
        host,
        guests,
    })
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The machine's CPU count and each guest's CPUs (MPIDRs): listed ones as
/// listed, counted ones the lowest `virt` CPUs nobody listed, in file order;
/// `"all"` every CPU.
fn assign_cpus(config: &Config) -> Result<(u32, Vec<Vec<u64>>)> {
    let mut listed = Vec::new();
    for (i, g) in config.guests.iter().enumerate() {
        if let Cpus::Mpidrs(m) = &g.cpus {
            for &mpidr in m {
                let idx = virt_index(mpidr).ok_or_else(|| {
                    config.problem(Some(i), "cpus", format!(
                        "{mpidr:#x} is no CPU of QEMU's virt (CPU n has MPIDR (n / 16) << 8 | n % 16)"
                    ))
                })?;
                listed.push(idx);
            }
        }
    }
    let counted: u32 = config
        .guests
        .iter()
        .filter_map(|g| match g.cpus {
            Cpus::Count(n) => Some(n),
            _ => None,
        })
        .sum();
    let all = config.guests.iter().any(|g| g.cpus == Cpus::All);
    let wanted = (counted + listed.len() as u32).max(listed.iter().max().map_or(0, |m| m + 1));
    let smp = match config.machine.cpus {
        Some(n) => n,
        None if all => DEFAULT_CPUS,
        None => wanted,
    };
    let mut next = 0u32;
    let mut out = Vec::new();
    for g in &config.guests {
        out.push(match &g.cpus {
            Cpus::All => (0..smp).map(virt_mpidr).collect(),
            Cpus::Mpidrs(m) => m.clone(),
            Cpus::Count(n) => {
                let mut v = Vec::new();
                while v.len() < *n as usize {
                    if !listed.contains(&next) {
                        v.push(virt_mpidr(next));
                    }
                    next += 1;
                }
                v
            }
        });
    }
    if wanted > smp {
        let each: Vec<String> = config
            .guests
            .iter()
            .zip(&out)
            .map(|(g, c)| format!("{}: {}", g.name, c.len()))
            .collect();
        return Err(config.problem(
            None,
            "cpus",
            format!("{smp}, but the guests need {wanted} ({})", each.join(", ")),
        ));
    }
    Ok((smp, out))
}

impl Plan {
    /// Every host device QEMU gives the host, by address.
    pub fn host_devices(&self) -> Vec<Sbdf> {
        self.nics
            .iter()
            .map(|n| n.address)
            .chain(self.disks.iter().map(|d| d.address))
            .collect()
    }

    /// What the host has to give, as the hypervisor will find it: `virt`'s
    /// CPUs, its RAM, the hypervisor's image, its DTB and QEMU's boot stub
    /// reserved, the devices xtask adds.
    pub fn host_resources(&self) -> HostResources {
        HostResources {
            cpus: (0..self.smp)
                .map(|i| Cpu {
                    mpidr: virt_mpidr(i),
                })
                .collect(),
            ram: vec![MemRange::new(Pa(self.host.ram.start), self.host.ram.len())],
            reserved: self
                .host
                .used
                .iter()
                .map(|r| MemRange::new(Pa(r.start), r.len()))
                .collect(),
            devices: self.host_devices(),
        }
    }

    /// [`platform::guests::validate`] of the guests against
    /// [`Plan::host_resources`]: what the hypervisor checks at boot.
    pub fn validate(&self) -> Result<()> {
        platform::guests::validate(&self.guests, &self.host_resources())
            .map_err(|e| Error(format!("{}: {e}", self.file.display())))
    }

    /// The QEMU arguments: the machine, the hypervisor (with the DTB `dtb`
    /// if given) or U-Boot, the modules, the NICs and disks, the extra ones.
    pub fn qemu_args(&self, dtb: Option<&Path>) -> Vec<String> {
        let mut a = qemu::machine_args(&self.mode, self.smmu, self.smp, self.mem_bytes);
        match &self.mode {
            Mode::Hypervisor(bin) => {
                a.extend(qemu::hypervisor_args(bin, &self.hv_args));
                if let Some(d) = dtb {
                    a.extend(["-dtb".to_string(), d.display().to_string()]);
                }
            }
            Mode::UBoot { bios, hypervisor } => a.extend(qemu::uboot_args(bios, hypervisor)),
            Mode::Direct => {}
        }
        for m in &self.modules {
            a.extend(["-device".to_string(), qemu::loader_arg(&m.file, m.at)]);
        }
        if self.nics.is_empty() {
            a.extend(["-nic".to_string(), "none".to_string()]);
        }
        for (k, n) in self.nics.iter().enumerate() {
            let backend = NetBackend::User {
                forwards: n.forwards.clone(),
            };
            a.extend(net::nic_args(k, n.model, n.slot, n.device, &backend));
        }
        for (k, d) in self.disks.iter().enumerate() {
            a.extend(qemu::host_disk_args(k, &d.image, d.device, None));
        }
        a.extend(self.qemu_args.iter().cloned());
        a
    }

    /// `base` (QEMU's own DTB for this machine) with the guest nodes added.
    pub fn dtb(&self, base: &[u8]) -> Result<Vec<u8>> {
        platform::guests::with_guests(base, &self.guests)
            .map_err(|e| Error(format!("{}: {e}", self.file.display())))
    }

    /// Checks `dtb` (as QEMU loaded it) as the hypervisor will read it: the
    /// host platform parses, its guest nodes read back as [`Plan::guests`]
    /// and pass [`platform::guests::validate`] against the host it describes
    /// (CPUs, RAM) with the hypervisor's reservation and the devices xtask
    /// adds; and it fits the room QEMU gives a DTB.
    pub fn check_dtb(&self, dtb: &[u8]) -> Result<()> {
        let file = self.file.display();
        // The host RAM layout keeps MAX_DTB for it (qemu::host_ram_for).
        if dtb.len() as u64 > guest_dt::boot::MAX_DTB {
            return Err(Error(format!(
                "{file}: QEMU's DTB is {} bytes, more than the {} kept for it",
                dtb.len(),
                guest_dt::boot::MAX_DTB
            )));
        }
        let platform = platform::parse(dtb).map_err(|e| Error(format!("{file}: the DTB: {e}")))?;
        let parsed = platform::guests::parse_nodes(dtb)
            .map_err(|e| Error(format!("{file}: the DTB: {e}")))?;
        if parsed != self.guests {
            return Err(Error(format!(
                "{file}: the DTB's guest nodes read back as {parsed:?}, not {:?}",
                self.guests
            )));
        }
        let host = HostResources::new(
            &platform,
            self.host_resources().reserved,
            self.host_devices(),
        );
        platform::guests::validate(&parsed, &host).map_err(|e| Error(format!("{file}: {e}")))
    }

    /// The U-Boot commands `run --uboot` types (the first line empty: the
    /// key press that stops autoboot): the DT moved where it can grow and
    /// kept there at `booti` (`fdt_high`), the guest nodes
    /// ([`platform::guests::uboot_commands`], `host-cpus` in one cell as on
    /// `virt`), the hypervisor's command line, `booti`.
    pub fn uboot_lines(&self) -> Result<Vec<String>> {
        let cpu_cells = if self
            .guests
            .iter()
            .flat_map(|g| &g.cpus)
            .all(|c| c.mpidr <= u64::from(u32::MAX))
        {
            1
        } else {
            2
        };
        let nodes = platform::guests::uboot_commands(&self.guests, cpu_cells)
            .map_err(|e| Error(format!("{}: {e}", self.file.display())))?;
        let mut lines = qemu::uboot_prologue();
        // `booti` would copy the DT to the top of RAM (U-Boot's fdt_high),
        // where a guest's memory may be: keep it where the plan reserves it.
        lines.push("setenv fdt_high 0xffffffffffffffff".to_string());
        lines.extend(nodes.lines().map(String::from));
        lines.extend(qemu::uboot_epilogue(&self.hv_args));
        Ok(lines)
    }

    /// What `cargo xtask uboot-script FILE` prints for this plan (under
    /// [`Mode::UBoot`]): where each file goes ([`Plan::uboot_loads`]), then
    /// the commands ([`Plan::uboot_lines`]); [`qemu::uboot_listing`].
    pub fn uboot_listing(&self) -> Result<String> {
        Ok(qemu::uboot_listing(
            &self.file,
            &self.uboot_loads()?,
            &self.uboot_lines()?,
        ))
    }

    /// What `cargo xtask run --uboot` types on U-Boot's console once its
    /// autoboot prompt appears, as [`qemu::launch`]'s input: the commands of
    /// [`Plan::uboot_listing`], as printed ([`qemu::uboot_keystrokes`]).
    pub fn uboot_input(&self) -> Result<qemu::ConsoleInput> {
        Ok((
            qemu::UBOOT_PROMPT_MARKER.to_string(),
            qemu::uboot_keystrokes(&self.uboot_listing()?),
        ))
    }

    /// Where each file goes, one `#` comment line each, the hypervisor
    /// first (under [`Mode::UBoot`]; see [`qemu::uboot_listing`]).
    pub fn uboot_loads(&self) -> Result<Vec<String>> {
        let Mode::UBoot { hypervisor, .. } = &self.mode else {
            return Err(Error::msg("the U-Boot flow needs Mode::UBoot"));
        };
        let mut out = vec![qemu::uboot_load_line(
            qemu::UBOOT_HYPERVISOR_ADDR,
            hypervisor,
        )?];
        for m in &self.modules {
            out.push(qemu::uboot_load_line(m.at, &m.file)?);
        }
        Ok(out)
    }
}

/// QEMU's own DTB for the machine `args` describe (the run's arguments
/// without `-dtb`): `args` with `-machine dumpdtb=OUT`, which writes the DTB
/// it would give the guest, `/chosen/bootargs` from `-append` included, and
/// exits.
pub fn dump_dtb(args: &[String], out: &Path) -> Result<Vec<u8>> {
    let _ = std::fs::remove_file(out);
    let o = Command::new("qemu-system-aarch64")
        .args(args)
        .args(["-machine".to_string(), format!("dumpdtb={}", out.display())])
        .output()
        .context(|| "running qemu-system-aarch64 for its DTB".to_string())?;
    if !o.status.success() {
        return Err(Error(format!(
            "qemu-system-aarch64 -machine dumpdtb= failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    std::fs::read(out).context(|| out.display().to_string())
}

/// The QEMU arguments and console input that boot `plan` as `cargo xtask
/// run --config` does. From QEMU's `-kernel`: the guest nodes in the DTB
/// written to `dtb` ([`qemu_args_with_dtb`]), no input. Under U-Boot: QEMU's
/// loader puts each file where [`Plan::uboot_listing`] says, and with
/// `type_script` the commands `cargo xtask uboot-script` prints are typed
/// ([`Plan::uboot_input`]); without it the user types them.
pub fn launch_args(
    plan: &Plan,
    dtb: &Path,
    type_script: bool,
) -> Result<(Vec<String>, Option<qemu::ConsoleInput>)> {
    match &plan.mode {
        Mode::UBoot { .. } => Ok((
            plan.qemu_args(None),
            type_script.then(|| plan.uboot_input()).transpose()?,
        )),
        _ => Ok((qemu_args_with_dtb(plan, dtb)?, None)),
    }
}

/// The root nodes QEMU's `arm_load_dtb` (hw/arm/boot.c) writes itself into
/// a `-dtb`: `/memory@...` from `-m`, `/psci` from the CPUs' PSCI conduit. It
/// turns any it finds into FDT_NOP tokens first, which the `fdt` crate's path
/// lookup does not get past ([`platform::guests::without_root_nodes`]), so
/// xtask leaves them out of what it gives QEMU.
const QEMU_REPLACES: &[&str] = &["memory", "psci"];

/// The QEMU arguments that boot `plan` from QEMU's `-kernel`: QEMU's own DTB
/// dumped (to `dtb` with `.base` before its extension), the guest nodes
/// added, written to `dtb` without the nodes QEMU writes itself
/// ([`QEMU_REPLACES`]) and given with `-dtb`; what QEMU then loads (dumped
/// to `dtb` with `.loaded`) is checked as the hypervisor will read it
/// ([`Plan::check_dtb`]).
pub fn qemu_args_with_dtb(plan: &Plan, dtb: &Path) -> Result<Vec<String>> {
    if let Some(d) = dtb.parent() {
        std::fs::create_dir_all(d).context(|| d.display().to_string())?;
    }
    let base = dump_dtb(&plan.qemu_args(None), &dtb.with_extension("base.dtb"))?;
    let given = platform::guests::without_root_nodes(&plan.dtb(&base)?, QEMU_REPLACES)
        .map_err(|e| Error(format!("{}: {e}", plan.file.display())))?;
    std::fs::write(dtb, &given).context(|| dtb.display().to_string())?;
    let args = plan.qemu_args(Some(dtb));
    plan.check_dtb(&dump_dtb(&args, &dtb.with_extension("loaded.dtb"))?)?;
    Ok(args)
}

#[cfg(test)]
mod tests;
