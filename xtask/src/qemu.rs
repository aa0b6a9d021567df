//! Booting a guest under QEMU, with or without the hypervisor, and reading
//! the outcome from QEMU's exit status and the console.
//!
//! Contract with the hypervisor: its own console lines start with `[hv] `;
//! it leaves QEMU through semihosting `SYS_EXIT_EXTENDED` with
//! [`HV_EXIT_POWER_OFF`], [`HV_EXIT_GUEST_RESET`] or [`HV_EXIT_FAULT`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Context;
use crate::net::{self, NetBackend, Nic, NicSlot};
use crate::{Error, Result};

/// Hypervisor exit status: the guest powered off (PSCI `SYSTEM_OFF`).
pub const HV_EXIT_POWER_OFF: i32 = 0;
/// Hypervisor exit status: hypervisor fault.
pub const HV_EXIT_FAULT: i32 = 2;
/// Hypervisor exit status: the guest asked for `SYSTEM_RESET` (a panic with `panic=-1`).
pub const HV_EXIT_GUEST_RESET: i32 = 3;

/// Line `/init` prints as soon as it runs.
pub const INIT_MARKER: &str = "XTASK-INIT-START";
/// Prefix of the line `/init` prints with the `--exec` command's status.
pub const EXIT_STATUS_MARKER: &str = "XTASK-EXIT-STATUS=";
/// What the Linux kernel prints when it panics.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";
/// Kernel command-line parameter carrying the base64 `--exec` command.
pub const EXEC_PARAM: &str = "xtask.exec=";

/// Guest physical address of RAM on QEMU's `virt` machine.
pub const VIRT_RAM_BASE: u64 = 0x4000_0000;
/// Where the guest kernel is loaded under the hypervisor. Not RAM base +
/// 128 MiB: with `-kernel` and no `-initrd`, QEMU puts the host DTB there, and a
/// guest-loader module at that address would overlap it.
pub const GUEST_KERNEL_ADDR: u64 = 0x4a00_0000;
/// Alignment of guest-loader modules.
pub const MODULE_ALIGN: u64 = 2 << 20;
/// Longest kernel command line accepted (arm64 `COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE: usize = 2048;

/// Guest command line always passed.
pub const BASE_BOOTARGS: &str = "console=ttyAMA0 panic=-1";

/// How the guest is booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Under the hypervisor, given as the flat binary QEMU's `-kernel` loads.
    Hypervisor(PathBuf),
    /// Directly on QEMU, without the hypervisor (the baseline).
    Direct,
    /// As on a board: QEMU runs U-Boot (`bios`, the distribution's
    /// `qemu_arm64` build), the images are preloaded in RAM, and U-Boot is told
    /// on its console to describe the modules in the DT and `booti` the
    /// hypervisor at [`UBOOT_HYPERVISOR_ADDR`].
    UBoot {
        /// U-Boot's `u-boot.bin`.
        bios: PathBuf,
        /// The flat hypervisor binary.
        hypervisor: PathBuf,
    },
}

/// Where U-Boot mode preloads the hypervisor: 2 MiB above QEMU's `-kernel`
/// address, so it runs away from its link address.
pub const UBOOT_HYPERVISOR_ADDR: u64 = 0x4040_0000;
/// Where U-Boot mode moves the DT to edit it.
pub const UBOOT_DTB_ADDR: u64 = 0x4800_0000;
/// U-Boot's autoboot prompt: the script is typed once it appears.
pub const UBOOT_PROMPT_MARKER: &str = "Hit any key to stop autoboot";

/// [`uboot_script`] for `cfg`'s kernel, initrd and command line.
pub fn uboot_script_for(cfg: &RunConfig) -> Result<String> {
    let klen = file_len(&cfg.kernel)?;
    let footprint = kernel_footprint(&read_head(&cfg.kernel, 64)?).max(klen);
    let ilen = file_len(&cfg.initrd)?;
    let (k, i) = module_addresses(footprint, ilen, cfg.mem_bytes)?;
    let cmdline = guest_cmdline(&cfg.append, cfg.exec.as_deref())?;
    Ok(uboot_script(
        k,
        klen,
        i,
        ilen,
        &cmdline,
        &cfg.hypervisor_extra_args(),
    ))
}

/// The U-Boot console input that boots the hypervisor: stop autoboot, copy the
/// DT where it can grow, add the `multiboot,module` nodes, `booti`.
pub fn uboot_script(k: u64, klen: u64, i: u64, ilen: u64, cmdline: &str, hv_args: &str) -> String {
    let lines = [
        String::new(),
        "fdt addr ${fdtcontroladdr}".to_string(),
        format!("fdt move ${{fdtcontroladdr}} {UBOOT_DTB_ADDR:#x} 0x100000"),
        format!("fdt addr {UBOOT_DTB_ADDR:#x}"),
        "fdt resize 4096".to_string(),
        format!("fdt mknode /chosen module@{k:x}"),
        format!(
            "fdt set /chosen/module@{k:x} compatible \"multiboot,module\" \"multiboot,kernel\""
        ),
        format!("fdt set /chosen/module@{k:x} reg <0x0 {k:#x} 0x0 {klen:#x}>"),
        format!("fdt set /chosen/module@{k:x} bootargs \"{cmdline}\""),
        format!("fdt mknode /chosen module@{i:x}"),
        format!(
            "fdt set /chosen/module@{i:x} compatible \"multiboot,module\" \"multiboot,ramdisk\""
        ),
        format!("fdt set /chosen/module@{i:x} reg <0x0 {i:#x} 0x0 {ilen:#x}>"),
        format!(
            "fdt set /chosen bootargs \"{}\"",
            format!("semihosting {hv_args}").trim_end()
        ),
        format!("booti {UBOOT_HYPERVISOR_ADDR:#x} - {UBOOT_DTB_ADDR:#x}"),
    ];
    lines.iter().map(|l| format!("{l}\r")).collect()
}

/// Everything one QEMU run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// With or without the hypervisor.
    pub mode: Mode,
    /// The guest kernel `Image`.
    pub kernel: PathBuf,
    /// The guest initramfs.
    pub initrd: PathBuf,
    /// Added to the guest kernel command line.
    pub append: String,
    /// Number of CPUs.
    pub smp: u32,
    /// RAM size in bytes.
    pub mem_bytes: u64,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Command `/init` runs with `sh -c` before powering off; `None` for a shell.
    pub exec: Option<String>,
    /// QEMU is killed after this long.
    pub timeout: Option<Duration>,
    /// Copy the console to our stdout as it arrives.
    pub echo: bool,
    /// Pass our stdin to the guest console.
    pub interactive: bool,
    /// Type these bytes on the guest console once a console line contains the
    /// marker (tests of console input).
    pub input: Option<(String, Vec<u8>)>,
    /// Added to the hypervisor's own command line (after `semihosting`), e.g.
    /// `guest-psci=smc` or `loglevel=debug`. The NIC's `pci-passthrough=`
    /// is added to these (see [`RunConfig::hypervisor_extra_args`]).
    pub hypervisor_args: String,
    /// The host NIC QEMU emulates.
    pub nic: Nic,
    /// Where the NIC sits on the host's PCIe hierarchy.
    pub nic_slot: NicSlot,
    /// What the NIC is cabled to.
    pub net: NetBackend,
    /// The guest's emulated virtio-blk (under the hypervisor; `--direct` has none).
    pub disk: Disk,
    /// QEMU's `virt` gets an SMMUv3 (`iommu=smmuv3`, stages 1 and 2) in front
    /// of its PCIe host. Implied under the hypervisor when a NIC is passed through.
    pub iommu: bool,
    /// A raw disk image QEMU gives the host as a virtio-blk at
    /// [`HOST_DISK_ADDRESS`]; under the hypervisor, `host-disk=` names it (the
    /// hypervisor drives it, the guest never sees it), and the machine gets an
    /// SMMUv3. Under `--direct` the guest's Linux drives it.
    pub host_disk: Option<PathBuf>,
}

/// The host PCI address of the host disk ([`RunConfig::host_disk`]): QEMU's
/// `virtio-blk-pci` at `bus=pcie.0,addr=0x5`, away from the NIC's slot 2.
pub const HOST_DISK_ADDRESS: &str = "0000:00:05.0";

impl RunConfig {
    /// Defaults: 2 CPUs, 2 GiB, no extra arguments, no command, no timeout, echo on.
    pub fn new(mode: Mode, kernel: PathBuf, initrd: PathBuf) -> Self {
        Self {
            mode,
            kernel,
            initrd,
            append: String::new(),
            smp: 2,
            mem_bytes: 2 << 30,
            qemu_args: Vec::new(),
            exec: None,
            timeout: None,
            echo: true,
            interactive: false,
            input: None,
            hypervisor_args: String::new(),
            nic: Nic::None,
            nic_slot: NicSlot::RootPort,
            net: NetBackend::default(),
            disk: Disk::None,
            iommu: false,
            host_disk: None,
        }
    }

    /// Whether the hypervisor boots (and is given the NIC to pass through).
    pub fn under_hypervisor(&self) -> bool {
        !matches!(self.mode, Mode::Direct)
    }

    /// The host PCI address of the NIC the hypervisor passes through to the
    /// guest: `None` without a NIC or under `--direct` (the guest drives it).
    pub fn passthrough_address(&self) -> Option<&'static str> {
        (self.under_hypervisor() && self.nic != Nic::None).then(|| self.nic_slot.host_address())
    }

    /// Whether QEMU's machine gets an SMMUv3: asked for, or a NIC passed through.
    pub fn smmu(&self) -> bool {
        self.iommu
            || self.passthrough_address().is_some()
            || (self.under_hypervisor() && self.host_disk.is_some())
    }

    /// The hypervisor's command line after `semihosting`:
    /// [`RunConfig::hypervisor_args`], then `pci-passthrough=SEG:BUS:DEV.FN`
    /// for the NIC, then `host-disk=`[`HOST_DISK_ADDRESS`] with a host disk.
    pub fn hypervisor_extra_args(&self) -> String {
        let mut args = self.hypervisor_args.trim().to_string();
        let disk = match self.disk {
            Disk::None => None,
            Disk::Ram(n) => Some(format!("virtio-blk=ram:{n}")),
            Disk::Host => Some("virtio-blk=host".to_string()),
        };
        if let Some(d) = disk {
            if !args.is_empty() {
                args.push(' ');
            }
            args.push_str(&d);
        }
        if let Some(bdf) = self.passthrough_address() {
            if !args.is_empty() {
                args.push(' ');
            }
            args.push_str("pci-passthrough=");
            args.push_str(bdf);
        }
        if self.under_hypervisor() && self.host_disk.is_some() {
            if !args.is_empty() {
                args.push(' ');
            }
            args.push_str("host-disk=");
            args.push_str(HOST_DISK_ADDRESS);
        }
        args
    }
}

/// The guest's emulated virtio-blk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Disk {
    /// None.
    #[default]
    None,
    /// A RAM disk of this many bytes inside the hypervisor (`virtio-blk=ram:N`).
    Ram(u64),
    /// Backed by [`RunConfig::host_disk`], the host virtio-blk the hypervisor
    /// drives (`virtio-blk=host`): zero-copy to the image file.
    Host,
}

impl Disk {
    /// `none` or `ram:SIZE` (`ram:64M`); an image path is [`Disk::Host`]
    /// with [`RunConfig::host_disk`], set by the caller.
    pub fn parse(s: &str) -> Result<Disk> {
        match s {
            "none" => Ok(Disk::None),
            _ => match s.strip_prefix("ram:") {
                Some(size) => Ok(Disk::Ram(parse_size(size)?)),
                None => Err(Error(format!("bad --disk {s}: want ram:SIZE or none"))),
            },
        }
    }
}

/// `arg` as a POSIX shell word: as it is when it needs no quoting, else in
/// single quotes (a `'` inside becomes `'\''`), so a printed command line
/// can be pasted into a shell.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The guest powered off cleanly.
    PoweredOff,
    /// The guest kernel panicked (the console shows `Kernel panic`).
    GuestPanic,
    /// The guest asked for a reset without a panic.
    GuestReset,
    /// The hypervisor reported a fault.
    HypervisorFault,
    /// The run exceeded its timeout and QEMU was killed.
    TimedOut,
    /// QEMU exited with an unexpected status (`None`: killed by a signal).
    QemuFailed(Option<i32>),
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// How it ended.
    pub verdict: Verdict,
    /// Console lines (QEMU's stdout), without line terminators.
    pub console: Vec<String>,
    /// QEMU's stderr.
    pub qemu_stderr: String,
    /// QEMU's exit status (`None` if killed).
    pub qemu_status: Option<i32>,
    /// Time from QEMU start to the [`INIT_MARKER`] line.
    pub init_start: Option<Duration>,
    /// The `--exec` command's status from the [`EXIT_STATUS_MARKER`] line.
    pub exec_status: Option<i32>,
    /// Whether a command was run.
    pub had_exec: bool,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunOutcome {
    /// The status `cargo xtask run` exits with: the command's status after a
    /// clean power-off (0 without a command), non-zero otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::PoweredOff => match (self.had_exec, self.exec_status) {
                (_, Some(s)) => s,
                (false, None) => 0,
                (true, None) => 1,
            },
            Verdict::GuestPanic | Verdict::GuestReset => 3,
            Verdict::HypervisorFault => 2,
            Verdict::TimedOut => 124,
            Verdict::QemuFailed(s) => s.filter(|s| *s != 0).unwrap_or(1),
        }
    }

    /// The last `n` console lines, newline-terminated.
    pub fn tail(&self, n: usize) -> String {
        let start = self.console.len().saturating_sub(n);
        self.console[start..]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The console from the first `Kernel panic` line on (at most 40 lines),
    /// preceded by up to 20 lines of context.
    pub fn panic_lines(&self) -> Option<String> {
        let at = self
            .console
            .iter()
            .position(|l| l.contains("Kernel panic"))?;
        let from = at.saturating_sub(20);
        let to = (at + 40).min(self.console.len());
        Some(
            self.console[from..to]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect(),
        )
    }

    /// A one-line description of the outcome.
    pub fn summary(&self) -> String {
        let init = self
            .init_start
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".into());
        format!(
            "{:?} after {:.2} s (QEMU status {:?}, init started: {init}, command status {:?})",
            self.verdict,
            self.elapsed.as_secs_f64(),
            self.qemu_status,
            self.exec_status
        )
    }
}

/// Parses a memory size: bytes, or a number with suffix `K`, `M`, `G` (binary).
pub fn parse_mem(s: &str) -> Result<u64> {
    parse_size(s)?
        .checked_mul(1)
        .filter(|b| *b >= 64 << 20)
        .ok_or_else(|| Error(format!("memory size {s:?} out of range (at least 64M)")))
}

/// A size in bytes with an optional K, M or G suffix (`512K`, `64M`, `2G`).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, shift) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| Error(format!("bad memory size {s:?} (e.g. 2G, 512M)")))?;
    n.checked_mul(1 << shift)
        .filter(|b| *b > 0)
        .ok_or_else(|| Error(format!("size {s:?} out of range")))
}

/// Standard base64 (RFC 4648, with padding), as busybox `base64 -d` reads it.
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The guest kernel command line: [`BASE_BOOTARGS`], `append`, and the
/// base64 command if any. Fails when longer than [`MAX_CMDLINE`].
pub fn guest_cmdline(append: &str, exec: Option<&str>) -> Result<String> {
    let mut line = BASE_BOOTARGS.to_string();
    if !append.trim().is_empty() {
        line.push(' ');
        line.push_str(append.trim());
    }
    if let Some(cmd) = exec {
        line.push(' ');
        line.push_str(EXEC_PARAM);
        line.push_str(&base64_encode(cmd.as_bytes()));
    }
    if line.len() >= MAX_CMDLINE {
        return Err(Error(format!(
            "guest command line is {} bytes, the limit is {MAX_CMDLINE}: shorten the command",
            line.len()
        )));
    }
    Ok(line)
}

/// Rounds `v` up to a multiple of `align` (a power of two).
fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// Size the kernel occupies once loaded: the larger of the file and the
/// arm64 `Image` header's `image_size` (offset 16, includes `.bss`).
pub fn kernel_footprint(image: &[u8]) -> u64 {
    let header_size = image
        .get(16..24)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    header_size.max(image.len() as u64)
}

/// Addresses of the guest kernel and initrd for `-device guest-loader`:
/// kernel at [`GUEST_KERNEL_ADDR`], initrd at the next [`MODULE_ALIGN`]
/// boundary after it; both must end below the end of RAM.
pub fn module_addresses(
    kernel_footprint: u64,
    initrd_size: u64,
    mem_bytes: u64,
) -> Result<(u64, u64)> {
    let kernel_end = GUEST_KERNEL_ADDR
        .checked_add(kernel_footprint)
        .ok_or_else(|| Error::msg("kernel too large"))?;
    let initrd =
        align_up(kernel_end, MODULE_ALIGN).ok_or_else(|| Error::msg("kernel too large"))?;
    let end = initrd
        .checked_add(initrd_size)
        .ok_or_else(|| Error::msg("initrd too large"))?;
    let ram_end = VIRT_RAM_BASE.saturating_add(mem_bytes);
    if end > ram_end {
        return Err(Error(format!(
            "kernel and initrd end at {end:#x}, beyond the end of RAM {ram_end:#x}: raise --mem"
        )));
    }
    Ok((GUEST_KERNEL_ADDR, initrd))
}

/// Checks that an arm64 `Image` (the hypervisor, `head` = its first 64
/// bytes, `len` = file size) loaded by QEMU at RAM base + `text_offset` ends
/// below [`GUEST_KERNEL_ADDR`]. Binaries without the header are not checked.
pub fn check_hypervisor_fits(head: &[u8], len: u64) -> Result<()> {
    if !crate::flat::has_arm64_image_header(head) {
        return Ok(());
    }
    let text_offset = head
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let end = VIRT_RAM_BASE
        .saturating_add(text_offset)
        .saturating_add(kernel_footprint(head).max(len));
    if end > GUEST_KERNEL_ADDR {
        return Err(Error(format!(
            "the hypervisor ends at {end:#x}, over the guest kernel at {GUEST_KERNEL_ADDR:#x}"
        )));
    }
    Ok(())
}

/// QEMU's option syntax doubles commas inside a value.
fn qemu_escape(v: &str) -> String {
    v.replace(',', ",,")
}

/// The `qemu-system-aarch64` arguments for `cfg`.
pub fn qemu_args(cfg: &RunConfig) -> Result<Vec<String>> {
    let cmdline = guest_cmdline(&cfg.append, cfg.exec.as_deref())?;
    let mem_mib = cfg.mem_bytes >> 20;
    let mut a: Vec<String> = Vec::new();
    let mut machine = match cfg.mode {
        Mode::Hypervisor(_) | Mode::UBoot { .. } => "virt,gic-version=3,virtualization=on",
        // Without highmem-mmio=off, Linux 6.1 warns about the 512 GiB
        // 64-bit PCI window of the virt machine ("Memory resource size
        // exceeds max for 32 bits"); the 32-bit window is enough for our devices.
        Mode::Direct => "virt,gic-version=3,highmem-mmio=off",
    }
    .to_string();
    if cfg.smmu() {
        machine.push_str(",iommu=smmuv3");
    }
    a.extend(["-M".to_string(), machine]);
    if cfg.smmu() {
        // QEMU's SMMUv3 offers stage 1 only by default; passthrough needs stage 2.
        a.extend(["-global", "arm-smmuv3.stage=nested"].map(String::from));
    }
    // pauth-impdef: TCG's architected QARMA pointer authentication is slow.
    a.extend(["-cpu", "max,pauth-impdef=on"].map(String::from));
    a.extend([
        "-smp".to_string(),
        cfg.smp.to_string(),
        "-m".to_string(),
        format!("{mem_mib}M"),
        "-nographic".to_string(),
        "-no-reboot".to_string(),
    ]);
    match &cfg.mode {
        Mode::Hypervisor(bin) => {
            check_hypervisor_fits(&read_head(bin, 64)?, file_len(bin)?)?;
            let kernel_len =
                kernel_footprint(&read_head(&cfg.kernel, 64)?).max(file_len(&cfg.kernel)?);
            let initrd_len = file_len(&cfg.initrd)?;
            let (k, i) = module_addresses(kernel_len, initrd_len, cfg.mem_bytes)?;
            a.extend([
                "-semihosting-config".to_string(),
                "enable=on,target=native".to_string(),
                "-kernel".to_string(),
                bin.display().to_string(),
                "-append".to_string(),
                format!("semihosting {}", cfg.hypervisor_extra_args())
                    .trim_end()
                    .to_string(),
                "-device".to_string(),
                format!(
                    "guest-loader,addr={k:#x},kernel={},bootargs={}",
                    qemu_escape(&cfg.kernel.display().to_string()),
                    qemu_escape(&cmdline)
                ),
                "-device".to_string(),
                format!(
                    "guest-loader,addr={i:#x},initrd={}",
                    qemu_escape(&cfg.initrd.display().to_string())
                ),
            ]);
        }
        Mode::UBoot { bios, hypervisor } => {
            let kernel_len =
                kernel_footprint(&read_head(&cfg.kernel, 64)?).max(file_len(&cfg.kernel)?);
            let (k, i) = module_addresses(kernel_len, file_len(&cfg.initrd)?, cfg.mem_bytes)?;
            let loader = |f: &Path, at: u64| {
                format!(
                    "loader,file={},addr={at:#x},force-raw=on",
                    qemu_escape(&f.display().to_string())
                )
            };
            a.extend([
                "-semihosting-config".to_string(),
                "enable=on,target=native".to_string(),
                "-bios".to_string(),
                bios.display().to_string(),
                "-device".to_string(),
                loader(hypervisor, UBOOT_HYPERVISOR_ADDR),
                "-device".to_string(),
                loader(&cfg.kernel, k),
                "-device".to_string(),
                loader(&cfg.initrd, i),
            ]);
        }
        Mode::Direct => {
            a.extend([
                "-kernel".to_string(),
                cfg.kernel.display().to_string(),
                "-initrd".to_string(),
                cfg.initrd.display().to_string(),
                "-append".to_string(),
                cmdline,
            ]);
        }
    }
    a.extend(net::qemu_args(cfg.nic, cfg.nic_slot, &cfg.net));
    if let Some(img) = &cfg.host_disk {
        a.extend([
            "-drive".to_string(),
            format!(
                "file={},if=none,id=hostdisk0,format=raw",
                qemu_escape(&img.display().to_string())
            ),
            "-device".to_string(),
            "virtio-blk-pci,drive=hostdisk0,bus=pcie.0,addr=0x5".to_string(),
        ]);
    }
    a.extend(cfg.qemu_args.iter().cloned());
    Ok(a)
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .context(|| p.display().to_string())?
        .len())
}

fn read_head(p: &Path, n: usize) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(p).context(|| p.display().to_string())?;
    let mut buf = vec![0u8; n];
    let got = f.read(&mut buf)?;
    buf.truncate(got);
    Ok(buf)
}

#[derive(Default)]
struct Capture {
    lines: Vec<String>,
    partial: Vec<u8>,
    init_start: Option<Duration>,
}

impl Capture {
    fn feed(&mut self, bytes: &[u8], started: Instant) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = String::from_utf8_lossy(&self.partial).into_owned();
                if line.ends_with('\r') {
                    line.pop();
                }
                if self.init_start.is_none() && line.contains(INIT_MARKER) {
                    self.init_start = Some(started.elapsed());
                }
                self.lines.push(line);
                self.partial.clear();
            } else {
                self.partial.push(b);
            }
        }
    }
}

/// The command's status from the console's [`EXIT_STATUS_MARKER`] line.
pub fn parse_exit_status(console: &[String]) -> Option<i32> {
    console.iter().rev().find_map(|l| {
        let rest = &l[l.find(EXIT_STATUS_MARKER)? + EXIT_STATUS_MARKER.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// Classifies a finished run.
pub fn verdict(mode: &Mode, qemu_status: Option<i32>, console: &[String]) -> Verdict {
    if console.iter().any(|l| l.contains(PANIC_MARKER)) {
        return Verdict::GuestPanic;
    }
    let restarted = console
        .iter()
        .any(|l| l.contains("reboot: Restarting system"));
    match (mode, qemu_status) {
        (Mode::Hypervisor(_) | Mode::UBoot { .. }, Some(HV_EXIT_POWER_OFF)) => Verdict::PoweredOff,
        (Mode::Hypervisor(_) | Mode::UBoot { .. }, Some(HV_EXIT_GUEST_RESET)) => {
            Verdict::GuestReset
        }
        (Mode::Hypervisor(_) | Mode::UBoot { .. }, Some(HV_EXIT_FAULT)) => Verdict::HypervisorFault,
        // With -no-reboot QEMU exits 0 on both power-off and reset.
        (Mode::Direct, Some(0)) if restarted => Verdict::GuestReset,
        (Mode::Direct, Some(0)) => Verdict::PoweredOff,
        (_, s) => Verdict::QemuFailed(s),
    }
}

/// Boots `cfg` under QEMU and waits for it to end (or for the timeout).
pub fn run(cfg: &RunConfig) -> Result<RunOutcome> {
    let args = qemu_args(cfg)?;
    // U-Boot mode types its boot script on U-Boot's console.
    let input = match &cfg.mode {
        Mode::UBoot { .. } if !cfg.interactive => Some((
            UBOOT_PROMPT_MARKER.to_string(),
            uboot_script_for(cfg)?.into_bytes(),
        )),
        _ => cfg.input.clone(),
    };
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if cfg.interactive {
            Stdio::inherit()
        } else if cfg.input.is_some() || matches!(cfg.mode, Mode::UBoot { .. }) {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    if cfg.echo {
        let shown: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        eprintln!("xtask: qemu-system-aarch64 {}", shown.join(" "));
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context(|| "starting qemu-system-aarch64".to_string())?;
    let capture = Arc::new(Mutex::new(Capture::default()));
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::msg("no QEMU stdout"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::msg("no QEMU stderr"))?;
    let echo = cfg.echo;
    let cap = Arc::clone(&capture);
    let out_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut console = std::io::stdout();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            if echo {
                let _ = console.write_all(&buf[..n]);
                let _ = console.flush();
            }
            if let Ok(mut c) = cap.lock() {
                c.feed(&buf[..n], started);
            }
        }
    });
    if let (Some((marker, bytes)), Some(mut stdin)) = (input, child.stdin.take()) {
        let cap = Arc::clone(&capture);
        std::thread::spawn(move || loop {
            // The marker may end a line or still be the line in progress (a prompt).
            let seen = cap.lock().is_ok_and(|c| {
                c.lines.iter().any(|l| l.contains(&marker))
                    || String::from_utf8_lossy(&c.partial).contains(&marker)
            });
            if seen {
                let _ = stdin.write_all(&bytes);
                let _ = stdin.flush();
                // Keep stdin open until QEMU exits: EOF is not a keystroke.
                std::thread::sleep(Duration::from_secs(3600));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        });
    }
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if cfg.timeout.is_some_and(|t| started.elapsed() > t) {
            let _ = child.kill();
            timed_out = true;
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let _ = out_thread.join();
    let qemu_stderr = err_thread.join().unwrap_or_default();
    if echo && !qemu_stderr.is_empty() {
        eprint!("{qemu_stderr}");
    }
    let mut cap = std::mem::take(&mut *capture.lock().map_err(|_| Error::msg("capture poisoned"))?);
    if !cap.partial.is_empty() {
        cap.feed(b"\n", started);
    }
    let qemu_status = status.code();
    let verdict = if timed_out {
        Verdict::TimedOut
    } else {
        verdict(&cfg.mode, qemu_status, &cap.lines)
    };
    Ok(RunOutcome {
        verdict,
        exec_status: parse_exit_status(&cap.lines),
        console: cap.lines,
        qemu_stderr,
        qemu_status,
        init_start: cap.init_start,
        had_exec: cfg.exec.is_some(),
        elapsed,
    })
}

/// Environment variables through which `cargo xtask test` hands artifacts
/// to the end-to-end tests.
pub mod env {
    /// Path of the guest kernel `Image`.
    pub const KERNEL: &str = "XTASK_GUEST_KERNEL";
    /// Path of the newer guest kernel `Image` (the backports suite's; same initramfs).
    pub const NEW_KERNEL: &str = "XTASK_GUEST_KERNEL_NEW";
    /// Path of the guest initramfs.
    pub const INITRD: &str = "XTASK_GUEST_INITRD";
    /// Path of the flat hypervisor binary (hypervisor mode).
    pub const HYPERVISOR_BIN: &str = "XTASK_HYPERVISOR_BIN";
    /// Path of U-Boot's `qemu_arm64` `u-boot.bin` (U-Boot mode tests).
    pub const UBOOT: &str = "XTASK_UBOOT";
    /// `1`: boot the end-to-end guests directly on QEMU, without the
    /// hypervisor (only while the hypervisor cannot boot Linux yet).
    pub const E2E_DIRECT: &str = "XTASK_E2E_DIRECT";
}

/// The run configuration the end-to-end tests use, from [`env`] variables:
/// direct mode when [`env::E2E_DIRECT`] is `1`, else under the hypervisor.
pub fn config_from_env() -> Result<RunConfig> {
    let var = |name: &str| {
        std::env::var_os(name).map(PathBuf::from).ok_or_else(|| {
            Error(format!(
                "{name} is not set: run the end-to-end tests through `cargo xtask test`"
            ))
        })
    };
    let mode = if std::env::var(env::E2E_DIRECT).is_ok_and(|v| v == "1") {
        Mode::Direct
    } else {
        Mode::Hypervisor(var(env::HYPERVISOR_BIN)?)
    };
    Ok(RunConfig::new(mode, var(env::KERNEL)?, var(env::INITRD)?))
}

#[cfg(test)]
mod tests {

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("virt,gic-version=3"), "virt,gic-version=3");
        assert_eq!(
            shell_quote("semihosting pci-passthrough=0000:01:00.0"),
            "'semihosting pci-passthrough=0000:01:00.0'"
        );
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn cmdline_carries_command_in_base64() {
        let line = guest_cmdline("quiet", Some("exit 7")).expect("short");
        assert_eq!(line, "console=ttyAMA0 panic=-1 quiet xtask.exec=ZXhpdCA3");
    }

    #[test]
    fn overlong_command_is_rejected() {
        assert!(guest_cmdline("", Some(&"x".repeat(2000))).is_err());
    }

    #[test]
    fn mem_size_accepts_binary_suffixes() {
        assert_eq!(parse_mem("2G").expect("valid"), 2 << 30);
        assert_eq!(parse_mem("512m").expect("valid"), 512 << 20);
    }

    #[test]
    fn mem_size_rejects_garbage() {
        assert!(parse_mem("lots").is_err());
    }

    #[test]
    fn initrd_is_placed_at_next_2mib_boundary_after_kernel() {
        let (k, i) = module_addresses(0x20_0001, 0x1000, 2 << 30).expect("fits");
        assert_eq!((k, i), (0x4a00_0000, 0x4a40_0000));
    }

    #[test]
    fn modules_beyond_end_of_ram_are_rejected() {
        assert!(module_addresses(0x100_0000, 200 << 20, 256 << 20).is_err());
    }

    fn image_head(text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut head = vec![0u8; 64];
        head[8..16].copy_from_slice(&text_offset.to_le_bytes());
        head[16..24].copy_from_slice(&image_size.to_le_bytes());
        head[56..60].copy_from_slice(b"ARM\x64");
        head
    }

    #[test]
    fn hypervisor_below_guest_kernel_is_accepted() {
        assert!(check_hypervisor_fits(&image_head(0, 4 << 20), 1 << 20).is_ok());
    }

    #[test]
    fn hypervisor_overlapping_guest_kernel_is_rejected() {
        assert!(check_hypervisor_fits(&image_head(0x20_0000, 159 << 20), 1 << 20).is_err());
    }

    #[test]
    fn kernel_footprint_uses_image_header_size() {
        let mut image = vec![0u8; 64];
        image[16..24].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert_eq!(kernel_footprint(&image), 0x10_0000);
    }

    #[test]
    fn exit_status_is_read_from_marker_line() {
        let c = lines(&["hello", "XTASK-EXIT-STATUS=7", "reboot: Power down"]);
        assert_eq!(parse_exit_status(&c), Some(7));
    }

    #[test]
    fn panic_on_console_wins_over_clean_exit() {
        let c = lines(&["Kernel panic - not syncing: sysrq triggered crash"]);
        assert_eq!(verdict(&Mode::Direct, Some(0), &c), Verdict::GuestPanic);
    }

    #[test]
    fn hypervisor_status_two_is_a_fault() {
        let m = Mode::Hypervisor(PathBuf::from("hv.bin"));
        assert_eq!(
            verdict(&m, Some(HV_EXIT_FAULT), &[]),
            Verdict::HypervisorFault
        );
    }

    #[test]
    fn hypervisor_status_three_without_panic_is_a_reset() {
        let m = Mode::Hypervisor(PathBuf::from("hv.bin"));
        assert_eq!(
            verdict(&m, Some(HV_EXIT_GUEST_RESET), &[]),
            Verdict::GuestReset
        );
    }

    #[test]
    fn clean_power_off_exits_with_command_status() {
        let o = RunOutcome {
            verdict: Verdict::PoweredOff,
            console: Vec::new(),
            qemu_stderr: String::new(),
            qemu_status: Some(0),
            init_start: None,
            exec_status: Some(7),
            had_exec: true,
            elapsed: Duration::ZERO,
        };
        assert_eq!(o.exit_code(), 7);
    }

    #[test]
    fn uboot_script_describes_both_modules_and_boots_the_hypervisor() {
        let s = uboot_script(
            0x4a00_0000,
            0x100,
            0x4c20_0000,
            0x200,
            "console=ttyAMA0",
            "",
        );
        let lines: Vec<&str> = s.split('\r').collect();
        assert_eq!(lines[0], "", "a key press stops autoboot");
        assert!(lines.contains(&"fdt set /chosen/module@4a000000 reg <0x0 0x4a000000 0x0 0x100>"));
        assert!(lines.contains(
            &"fdt set /chosen/module@4c200000 compatible \"multiboot,module\" \"multiboot,ramdisk\""
        ));
        assert!(lines.contains(&"fdt set /chosen bootargs \"semihosting\""));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("booti 0x40400000 - 0x48000000")));
    }

    fn hv_config_with_nic(slot: NicSlot) -> RunConfig {
        let mut cfg = RunConfig::new(
            Mode::Hypervisor("hv.bin".into()),
            "Image".into(),
            "initrd".into(),
        );
        cfg.nic = Nic::E1000e;
        cfg.nic_slot = slot;
        cfg.hypervisor_args = "loglevel=debug".into();
        cfg
    }

    #[test]
    fn host_disk_is_named_to_the_hypervisor_and_given_an_smmu() {
        let mut cfg = hv_config_with_nic(NicSlot::RootPort);
        cfg.nic = Nic::None;
        cfg.host_disk = Some("disk.img".into());
        assert_eq!(
            cfg.hypervisor_extra_args(),
            format!("loglevel=debug host-disk={HOST_DISK_ADDRESS}")
        );
        assert!(cfg.smmu());
        let mut direct = cfg.clone();
        direct.mode = Mode::Direct;
        assert!(!direct.smmu());
        assert_eq!(direct.hypervisor_extra_args(), "loglevel=debug");
    }

    #[test]
    fn hypervisor_is_told_to_pass_the_nic_through_at_its_host_address() {
        let cfg = hv_config_with_nic(NicSlot::Switch);
        assert_eq!(
            cfg.hypervisor_extra_args(),
            "loglevel=debug pci-passthrough=0000:03:00.0"
        );
    }

    #[test]
    fn passing_a_nic_through_puts_an_smmuv3_on_the_machine() {
        assert!(hv_config_with_nic(NicSlot::RootPort).smmu());
    }

    #[test]
    fn direct_mode_has_no_smmu_and_no_passthrough() {
        let mut cfg = hv_config_with_nic(NicSlot::RootPort);
        cfg.mode = Mode::Direct;
        assert!(!cfg.smmu());
        assert_eq!(cfg.hypervisor_extra_args(), "loglevel=debug");
        let a = qemu_args(&cfg).expect("args");
        assert!(!a.iter().any(|x| x.contains("iommu")), "{a:?}");
        assert!(a.iter().any(|x| x.starts_with("e1000e,")), "{a:?}");
    }

    #[test]
    fn without_a_nic_the_hypervisor_gets_no_passthrough_argument() {
        let mut cfg = hv_config_with_nic(NicSlot::Bus);
        cfg.nic = Nic::None;
        assert_eq!(cfg.hypervisor_extra_args(), "loglevel=debug");
        assert!(!cfg.smmu());
    }

    #[test]
    fn uboot_mode_passes_the_nic_through_too() {
        let mut cfg = hv_config_with_nic(NicSlot::Bus);
        cfg.mode = Mode::UBoot {
            bios: "u-boot.bin".into(),
            hypervisor: "hv.bin".into(),
        };
        assert_eq!(cfg.passthrough_address(), Some("0000:00:02.0"));
    }

    #[test]
    fn direct_mode_uses_kernel_and_initrd_options() {
        let cfg = RunConfig::new(Mode::Direct, "Image".into(), "initrd".into());
        let a = qemu_args(&cfg).expect("args");
        assert!(a.windows(2).any(|w| w[0] == "-initrd" && w[1] == "initrd"));
        assert!(a.iter().any(|x| x.starts_with("virt,gic-version=3")));
    }
}
