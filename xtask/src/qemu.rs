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
/// What the Linux kernel prints when the initramfs does not unpack (too
/// little RAM, a corrupt archive); it then boots on without it.
pub const INITRAMFS_FAILED_MARKER: &str = "Initramfs unpacking failed";
/// Kernel command-line parameter carrying the base64 `--exec` command.
pub const EXEC_PARAM: &str = "xtask.exec=";

/// Guest physical address of RAM on QEMU's `virt` machine.
pub const VIRT_RAM_BASE: u64 = 0x4000_0000;
/// Alignment of guest-loader modules.
pub const MODULE_ALIGN: u64 = 2 << 20;
/// Where QEMU's `-kernel` loads an image without an arm64 `Image` header
/// (hw/arm/boot.c `KERNEL64_LOAD_ADDR`), as the hypervisor does for a guest
/// (`guest_dt::boot::RAW_KERNEL_OFFSET`).
pub const RAW_KERNEL_OFFSET: u64 = guest_dt::boot::RAW_KERNEL_OFFSET;
/// QEMU's `-kernel` keeps the first page of RAM for its boot stub: an `Image`
/// asking for a `text_offset` below this goes 2 MiB higher (hw/arm/boot.c,
/// `load_aarch64_image`).
const QEMU_BOOTLOADER_MAX: u64 = 4096;
/// Longest kernel command line accepted (arm64 `COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE: usize = 2048;

/// Guest command line always passed.
pub const BASE_BOOTARGS: &str = "console=ttyAMA0 panic=-1";

/// [`BASE_BOOTARGS`] for a guest whose console is the hypervisor's virtio
/// console (`virtio-console`): hvc0 alone, so that nothing goes through the
/// PL011 (the kernel's messages until then are replayed when hvc0
/// registers; /init loads its driver first).
pub const VIRTIO_CONSOLE_BOOTARGS: &str = "console=hvc0 panic=-1";

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
    Ok(uboot_typed(&uboot_lines_for(cfg)?))
}

/// The lines of [`uboot_script_for`].
pub fn uboot_lines_for(cfg: &RunConfig) -> Result<Vec<String>> {
    let klen = file_len(&cfg.kernel)?;
    let plan = module_plan(cfg)?;
    let initrd = match (plan.initrd, &cfg.initrd) {
        (Some(i), Some(path)) => Some((i, file_len(path)?)),
        _ => None,
    };
    let cmdline = cfg.guest_cmdline()?;
    Ok(uboot_lines(
        (plan.kernel, klen),
        initrd,
        &cmdline,
        &cfg.hypervisor_extra_args(),
    ))
}

/// Where the U-Boot flow of `cfg` (under [`Mode::UBoot`]) has each file
/// loaded, one `#` comment line each, the hypervisor first: what
/// [`uboot_listing`] shows.
pub fn uboot_loads_for(cfg: &RunConfig) -> Result<Vec<String>> {
    let Mode::UBoot { hypervisor, .. } = &cfg.mode else {
        return Err(Error::msg("the U-Boot flow needs Mode::UBoot"));
    };
    let plan = module_plan(cfg)?;
    let mut out = vec![uboot_load_line(UBOOT_HYPERVISOR_ADDR, hypervisor)?];
    out.push(uboot_load_line(plan.kernel, &cfg.kernel)?);
    if let (Some(i), Some(path)) = (plan.initrd, &cfg.initrd) {
        out.push(uboot_load_line(i, path)?);
    }
    Ok(out)
}

/// `#   ADDR  FILE (N bytes)`: where a file goes, for [`uboot_listing`].
pub fn uboot_load_line(at: u64, file: &Path) -> Result<String> {
    Ok(format!(
        "#   {at:#010x}  {} ({} bytes)",
        file.display(),
        file_len(file)?
    ))
}

/// What `cargo xtask uboot-script FILE` prints: comment lines naming the
/// file and where each of `loads` goes (QEMU's loader does it for `run
/// --uboot`; on a board, `load` them there), then the commands `run --uboot`
/// types (`lines` without the key press that stops autoboot), one a line.
pub fn uboot_listing(file: &Path, loads: &[String], lines: &[String]) -> String {
    let mut out = format!(
        "# U-Boot commands that boot {} (cargo xtask uboot-script) on QEMU's virt as cargo xtask run --uboot sets it up; on a board, adapt them (docs/guests.md, \"The U-Boot script on a board\")\n# Load each file at its address first (run --uboot has QEMU's loader do it; on a board e.g. load mmc 0:1 ADDR FILE):\n",
        file.display()
    );
    for l in loads {
        out.push_str(l);
        out.push('\n');
    }
    for l in lines.iter().filter(|l| !l.is_empty()) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The U-Boot console input that boots the hypervisor: stop autoboot, copy the
/// DT where it can grow, add the `multiboot,module` nodes (the kernel at
/// `kernel` = (address, size), the initrd if any), `booti`.
pub fn uboot_script(
    kernel: (u64, u64),
    initrd: Option<(u64, u64)>,
    cmdline: &str,
    hv_args: &str,
) -> String {
    uboot_typed(&uboot_lines(kernel, initrd, cmdline, hv_args))
}

/// The lines of [`uboot_script`].
pub fn uboot_lines(
    kernel: (u64, u64),
    initrd: Option<(u64, u64)>,
    cmdline: &str,
    hv_args: &str,
) -> Vec<String> {
    let (k, klen) = kernel;
    let mut lines = uboot_prologue();
    lines.extend([
        format!("fdt mknode /chosen module@{k:x}"),
        format!(
            "fdt set /chosen/module@{k:x} compatible \"multiboot,module\" \"multiboot,kernel\""
        ),
        format!("fdt set /chosen/module@{k:x} reg <0x0 {k:#x} 0x0 {klen:#x}>"),
        format!("fdt set /chosen/module@{k:x} bootargs \"{cmdline}\""),
    ]);
    if let Some((i, ilen)) = initrd {
        lines.extend([
            format!("fdt mknode /chosen module@{i:x}"),
            format!(
                "fdt set /chosen/module@{i:x} compatible \"multiboot,module\" \"multiboot,ramdisk\""
            ),
            format!("fdt set /chosen/module@{i:x} reg <0x0 {i:#x} 0x0 {ilen:#x}>"),
        ]);
    }
    lines.extend(uboot_epilogue(hv_args));
    lines
}

/// The start of every U-Boot script: an empty line (the key press that
/// stops autoboot), then the DT QEMU gave U-Boot moved to
/// [`UBOOT_DTB_ADDR`] with room to grow.
pub fn uboot_prologue() -> Vec<String> {
    vec![
        String::new(),
        "fdt addr ${fdtcontroladdr}".to_string(),
        format!("fdt move ${{fdtcontroladdr}} {UBOOT_DTB_ADDR:#x} 0x100000"),
        format!("fdt addr {UBOOT_DTB_ADDR:#x}"),
        "fdt resize 4096".to_string(),
    ]
}

/// The end of every U-Boot script: the hypervisor's command line
/// (`semihosting` and `hv_args`) in U-Boot's `bootargs` variable, and the
/// `booti` of the hypervisor at [`UBOOT_HYPERVISOR_ADDR`] with the edited DT.
/// `booti` writes `bootargs` into `/chosen` (U-Boot's `fdt_chosen`), over
/// any `fdt set /chosen bootargs`: a board's environment often holds a
/// Linux command line there, which would otherwise replace ours.
pub fn uboot_epilogue(hv_args: &str) -> Vec<String> {
    vec![
        format!(
            "setenv bootargs \"{}\"",
            format!("semihosting {hv_args}").trim_end()
        ),
        format!("booti {UBOOT_HYPERVISOR_ADDR:#x} - {UBOOT_DTB_ADDR:#x}"),
    ]
}

/// What `cargo xtask run --uboot` types for `listing` (what `cargo xtask
/// uboot-script` prints, [`uboot_listing`]): a key press that stops
/// autoboot, then every line but the `#` comments as it is, each ended by a
/// carriage return.
pub fn uboot_keystrokes(listing: &str) -> Vec<u8> {
    let commands: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect();
    let mut out = vec![b'\r'];
    out.extend(uboot_typed(&commands).into_bytes());
    out
}

/// Script lines as typed on U-Boot's console: each ended by a carriage return.
pub fn uboot_typed(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\r")).collect()
}

/// Bytes typed on the console once a console line (or the line in
/// progress, a prompt) contains the marker: (marker, bytes).
pub type ConsoleInput = (String, Vec<u8>);

/// Everything one QEMU run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// With or without the hypervisor.
    pub mode: Mode,
    /// The guest kernel: an arm64 `Image`, or a raw image without its
    /// header (loaded at RAM + [`RAW_KERNEL_OFFSET`], as QEMU's `-kernel` does).
    pub kernel: PathBuf,
    /// The guest initramfs; `None` for a guest without one.
    pub initrd: Option<PathBuf>,
    /// Added to the guest kernel command line.
    pub append: String,
    /// The whole guest command line, replacing [`BASE_BOOTARGS`] and the
    /// `--exec` machinery (for guests other than our Linux image); excludes
    /// `append` and `exec` (see [`RunConfig::guest_cmdline`]).
    pub cmdline: Option<String>,
    /// Under the hypervisor, the guest's console is a virtio console
    /// (`virtio-console` for the hypervisor, [`VIRTIO_CONSOLE_BOOTARGS`]);
    /// directly on QEMU it stays QEMU's PL011.
    pub virtio_console: bool,
    /// Number of CPUs.
    pub smp: u32,
    /// RAM size in bytes.
    pub mem_bytes: u64,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Command `/init` runs with `sh -c` before powering off; `None` for a shell.
    pub exec: Option<String>,
    /// With several guests (guest nodes), the names of those that run a
    /// command: each reports its status on a `[name] `-prefixed
    /// [`EXIT_STATUS_MARKER`] line and the run's status combines them
    /// ([`exec_status_of`]). Empty: one guest, whose line has no prefix.
    pub exec_guests: Vec<String>,
    /// QEMU is killed after this long.
    pub timeout: Option<Duration>,
    /// Copy the console to our stdout as it arrives.
    pub echo: bool,
    /// Pass our stdin to the guest console.
    pub interactive: bool,
    /// Type these bytes on the guest console once a console line contains the
    /// marker (tests of console input).
    pub input: Option<ConsoleInput>,
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
    /// QEMU throttles the host disk to this many requests per second
    /// (`throttling.iops-total`): tests of requests that stay in flight.
    pub host_disk_iops: Option<u32>,
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
            initrd: Some(initrd),
            append: String::new(),
            cmdline: None,
            smp: 2,
            mem_bytes: 2 << 30,
            qemu_args: Vec::new(),
            exec: None,
            exec_guests: Vec::new(),
            timeout: None,
            echo: true,
            interactive: false,
            input: None,
            hypervisor_args: String::new(),
            virtio_console: false,
            nic: Nic::None,
            nic_slot: NicSlot::RootPort,
            net: NetBackend::default(),
            disk: Disk::None,
            iommu: false,
            host_disk: None,
            host_disk_iops: None,
        }
    }

    /// The guest kernel command line: [`cmdline_for`] of
    /// [`RunConfig::cmdline`], `append` and `exec`.
    pub fn guest_cmdline(&self) -> Result<String> {
        cmdline_for(
            self.cmdline.as_deref(),
            self.virtio_console && self.under_hypervisor(),
            &self.append,
            self.exec.as_deref(),
        )
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
    /// [`RunConfig::hypervisor_args`], then `virtio-blk=` for the disk and
    /// `pci-passthrough=SEG:BUS:DEV.FN` for the NIC, then
    /// `host-disk=`[`HOST_DISK_ADDRESS`] with a host disk.
    pub fn hypervisor_extra_args(&self) -> String {
        let mut args = self.hypervisor_args.trim().to_string();
        if self.virtio_console && self.under_hypervisor() {
            if !args.is_empty() {
                args.push(' ');
            }
            args.push_str("virtio-console");
        }
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

/// A guest kernel command line: `cmdline` as it is, else [`guest_cmdline`]
/// of `append` and `exec`. `cmdline` with `append` or `exec` is refused (the
/// first replaces what the others add to), and so is a line the guest could
/// not be given intact (a `"`, which ends the U-Boot script's quoted
/// `bootargs`, or a control character) or one longer than [`MAX_CMDLINE`].
pub fn cmdline_for(
    cmdline: Option<&str>,
    virtio_console: bool,
    append: &str,
    exec: Option<&str>,
) -> Result<String> {
    let Some(line) = cmdline else {
        return guest_cmdline_on(virtio_console, append, exec);
    };
    if !append.trim().is_empty() {
        return Err(Error::msg(
            "--cmdline replaces the whole guest command line and --append adds to the default one: give one of them",
        ));
    }
    if exec.is_some() {
        return Err(Error::msg(
            "--exec hands the command to our /init on the default command line (console=ttyAMA0 ... xtask.exec=); --cmdline replaces that line: give one of them",
        ));
    }
    if let Some(c) = line.chars().find(|c| *c == '"' || c.is_control()) {
        return Err(Error(format!(
            "--cmdline {line:?}: {c:?} cannot be passed to the guest intact"
        )));
    }
    let line = line.trim().to_string();
    if line.len() >= MAX_CMDLINE {
        return Err(Error(format!(
            "--cmdline is {} bytes, the limit is {MAX_CMDLINE}",
            line.len()
        )));
    }
    Ok(line)
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
                Some(size) => parse_size(size).map(Disk::Ram).map_err(|e| {
                    Error(format!(
                        "--disk ram:SIZE: {} (a size above 0, e.g. ram:64M)",
                        e.0
                    ))
                }),
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
    /// The guest's initramfs did not unpack (the console shows
    /// [`INITRAMFS_FAILED_MARKER`]): whatever followed ran without it.
    InitramfsFailed,
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
                // The probe guest (tests/probe) says how many checks failed.
                (false, None) if self.probe_failures() > 0 => 1,
                (false, None) => 0,
                (true, None) => 1,
            },
            Verdict::GuestPanic | Verdict::GuestReset => 3,
            Verdict::InitramfsFailed => 4,
            Verdict::HypervisorFault => 2,
            Verdict::TimedOut => 124,
            Verdict::QemuFailed(s) => s.filter(|s| *s != 0).unwrap_or(1),
        }
    }

    /// Failed checks the probe guest reported on its `PROBE-DONE checks=N
    /// failed=M` line (0 without one).
    pub fn probe_failures(&self) -> u64 {
        self.console
            .iter()
            .rev()
            .find_map(|l| {
                l.split("PROBE-DONE ")
                    .nth(1)?
                    .split("failed=")
                    .nth(1)?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// The last `n` console lines, newline-terminated.
    pub fn tail(&self, n: usize) -> String {
        let start = self.console.len().saturating_sub(n);
        self.console[start..]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The console's [`INITRAMFS_FAILED_MARKER`] line, if any.
    pub fn initramfs_failure(&self) -> Option<&str> {
        self.console
            .iter()
            .find(|l| l.contains(INITRAMFS_FAILED_MARKER))
            .map(String::as_str)
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
    guest_cmdline_on(false, append, exec)
}

/// [`guest_cmdline`] from [`VIRTIO_CONSOLE_BOOTARGS`] when `virtio_console`.
pub fn guest_cmdline_on(virtio_console: bool, append: &str, exec: Option<&str>) -> Result<String> {
    let mut line = if virtio_console {
        VIRTIO_CONSOLE_BOOTARGS
    } else {
        BASE_BOOTARGS
    }
    .to_string();
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

/// Where a kernel loads (offset from the start of RAM) and how many bytes it
/// occupies there, as `guest_dt::boot::place` (the hypervisor) has it: an
/// arm64 `Image` (magic `ARM\x64` at offset 56, non-zero `image_size`) at its
/// `text_offset` over the larger of `image_size` (which covers `.bss`) and the
/// file; anything else is a raw image at [`RAW_KERNEL_OFFSET`], its file size.
/// `head` is the file's first 64 bytes, `len` its size.
pub fn kernel_load(head: &[u8], len: u64) -> (u64, u64) {
    match guest_dt::boot::place(u64::MAX / 4, head, len, None, 0) {
        Ok(p) => (p.kernel, p.kernel_footprint),
        Err(_) => (RAW_KERNEL_OFFSET, len),
    }
}

/// Bytes a kernel occupies once loaded (see [`kernel_load`]).
pub fn kernel_footprint(head: &[u8], len: u64) -> u64 {
    kernel_load(head, len).1
}

/// Where QEMU's `-kernel` puts an image in RAM (offset from RAM base) and its
/// footprint: `text_offset` for an arm64 `Image` (2 MiB higher when that
/// would overlap QEMU's boot stub in the first page), 0x80000 for a raw one
/// (hw/arm/boot.c, `load_aarch64_image`).
fn qemu_kernel_load(head: &[u8], len: u64) -> (u64, u64) {
    let (off, footprint) = kernel_load(head, len);
    if guest_dt::boot::has_image_header(head) && off < QEMU_BOOTLOADER_MAX {
        (off + MODULE_ALIGN, footprint)
    } else {
        (off, footprint)
    }
}

/// Where QEMU's `-kernel` puts the DTB on `virt` when there is no `-initrd`:
/// at RAM + half of RAM, at most 128 MiB, rounded up to 2 MiB (hw/arm/boot.c,
/// `arm_setup_direct_kernel_boot`).
pub fn qemu_dtb_addr(mem_bytes: u64) -> u64 {
    let at = VIRT_RAM_BASE + (mem_bytes / 2).min(128 << 20);
    at.div_ceil(MODULE_ALIGN) * MODULE_ALIGN
}

/// Host RAM as the hypervisor finds it at boot under `cfg` (before the
/// modules): the first 2 MiB (QEMU's boot stub or firmware DTB), the
/// hypervisor image (with its BSS, heap and stacks) where QEMU's `-kernel` or
/// U-Boot's `booti` put it, and 2 MiB for the DTB. `None` for
/// [`Mode::Direct`].
pub fn host_ram(cfg: &RunConfig) -> Result<Option<crate::layout::HostRam>> {
    host_ram_for(&cfg.mode, cfg.mem_bytes)
}

/// [`host_ram`] of a machine booted in `mode` with `mem_bytes` of RAM.
pub fn host_ram_for(mode: &Mode, mem_bytes: u64) -> Result<Option<crate::layout::HostRam>> {
    use crate::layout::{HostRam, Range};
    let (hv_at, bin, dtb) = match mode {
        Mode::Direct => return Ok(None),
        Mode::Hypervisor(bin) => {
            let (off, _) = qemu_kernel_load(&read_head(bin, 64)?, file_len(bin)?);
            (VIRT_RAM_BASE + off, bin, qemu_dtb_addr(mem_bytes))
        }
        Mode::UBoot { hypervisor, .. } => (UBOOT_HYPERVISOR_ADDR, hypervisor, UBOOT_DTB_ADDR),
    };
    let footprint = kernel_footprint(&read_head(bin, 64)?, file_len(bin)?);
    let hv = Range::at(hv_at, footprint);
    let dtb = Range::at(dtb, guest_dt::boot::MAX_DTB);
    if hv.end > dtb.start && hv.start < dtb.end {
        return Err(Error(format!(
            "the hypervisor ({:#x}-{:#x}) overlaps the DTB at {:#x}: raise --mem",
            hv.start, hv.end, dtb.start
        )));
    }
    // QEMU's boot stub (`-kernel`) or its DTB for the firmware (`-bios`).
    let stub = Range::at(VIRT_RAM_BASE, MODULE_ALIGN);
    Ok(Some(HostRam {
        ram: Range::at(VIRT_RAM_BASE, mem_bytes),
        used: vec![stub, hv, dtb],
    }))
}

/// Where `cfg`'s modules go in host RAM and the RAM its guest gets (see
/// [`crate::layout`]); under [`Mode::Direct`] the guest gets all of RAM and
/// the addresses are QEMU's business (0).
pub fn module_plan(cfg: &RunConfig) -> Result<crate::layout::Plan> {
    let klen = file_len(&cfg.kernel)?;
    let ilen = cfg.initrd.as_deref().map(file_len).transpose()?;
    match host_ram(cfg)? {
        Some(host) => crate::layout::plan(&host, klen, ilen),
        None => Ok(crate::layout::Plan {
            kernel: 0,
            initrd: None,
            free: crate::layout::Range::at(VIRT_RAM_BASE, cfg.mem_bytes),
            guest_ram: cfg.mem_bytes,
        }),
    }
}

/// Refuses a `--mem` whose guest RAM (`plan.guest_ram`) cannot hold `cfg`'s
/// kernel and initrd ([`crate::layout::guest_ram_needed`]), naming the numbers.
pub fn check_guest_fits(cfg: &RunConfig, plan: &crate::layout::Plan) -> Result<()> {
    let head = read_head(&cfg.kernel, 64)?;
    let klen = file_len(&cfg.kernel)?;
    let ilen = cfg.initrd.as_deref().map(file_len).transpose()?;
    let need = crate::layout::guest_ram_needed(&head, klen, ilen);
    if plan.guest_ram >= need {
        return Ok(());
    }
    let mib = |b: u64| b >> 20;
    Err(Error(format!(
        "--mem {} MiB is too small: the guest would get {} MiB ({}), but its kernel ({} MiB loaded){} and {} MiB to run need {} MiB: give --mem {}M or more",
        mib(cfg.mem_bytes),
        mib(plan.guest_ram),
        if cfg.under_hypervisor() {
            "what the hypervisor image, its heap, the DTB and the kernel module leave"
        } else {
            "all of RAM"
        },
        mib(kernel_load(&head, klen).1),
        ilen.map_or(String::new(), |i| format!(
            ", initrd ({} MiB, twice: packed and unpacked)",
            mib(i)
        )),
        mib(crate::layout::working_ram(ilen)),
        mib(need),
        mib(cfg.mem_bytes + (need - plan.guest_ram)).div_ceil(16) * 16 + 16,
    )))
}

/// Checks that an arm64 `Image` (the hypervisor, `head` = its first 64
/// bytes, `len` = file size) loaded by QEMU's `-kernel` ends below the DTB
/// QEMU puts at [`qemu_dtb_addr`] for `mem_bytes` of RAM. Binaries without
/// the header are not checked.
pub fn check_hypervisor_fits(head: &[u8], len: u64, mem_bytes: u64) -> Result<()> {
    if !crate::flat::has_arm64_image_header(head) {
        return Ok(());
    }
    let (off, footprint) = qemu_kernel_load(head, len);
    let end = VIRT_RAM_BASE.saturating_add(off).saturating_add(footprint);
    let dtb = qemu_dtb_addr(mem_bytes);
    if end > dtb {
        return Err(Error(format!(
            "the hypervisor ends at {end:#x}, over the DTB QEMU puts at {dtb:#x}: raise --mem"
        )));
    }
    Ok(())
}

/// QEMU's option syntax doubles commas inside a value.
fn qemu_escape(v: &str) -> String {
    v.replace(',', ",,")
}

/// The machine's arguments, what every boot starts with: `virt` with GICv3
/// (and EL2 unless `mode` is [`Mode::Direct`]), an SMMUv3 with stage 2 when
/// `smmu`, `smp` CPUs, `mem_bytes` of RAM, the console on stdio, no reboot.
pub fn machine_args(mode: &Mode, smmu: bool, smp: u32, mem_bytes: u64) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut machine = match mode {
        Mode::Hypervisor(_) | Mode::UBoot { .. } => "virt,gic-version=3,virtualization=on",
        // Without highmem-mmio=off, Linux 6.1 warns about the 512 GiB
        // 64-bit PCI window of the virt machine ("Memory resource size
        // exceeds max for 32 bits"); the 32-bit window is enough for our devices.
        Mode::Direct => "virt,gic-version=3,highmem-mmio=off",
    }
    .to_string();
    if smmu {
        machine.push_str(",iommu=smmuv3");
    }
    a.extend(["-M".to_string(), machine]);
    if smmu {
        // QEMU's SMMUv3 offers stage 1 only by default; passthrough needs stage 2.
        a.extend(["-global", "arm-smmuv3.stage=nested"].map(String::from));
    }
    // pauth-impdef: TCG's architected QARMA pointer authentication is slow.
    a.extend(["-cpu", "max,pauth-impdef=on"].map(String::from));
    a.extend([
        "-smp".to_string(),
        smp.to_string(),
        "-m".to_string(),
        format!("{}M", mem_bytes >> 20),
        "-nographic".to_string(),
        "-no-reboot".to_string(),
    ]);
    a
}

/// The hypervisor as QEMU's `-kernel` with its command line (`semihosting`
/// and `hv_args`), semihosting on for its exit status.
pub fn hypervisor_args(bin: &Path, hv_args: &str) -> Vec<String> {
    vec![
        "-semihosting-config".to_string(),
        "enable=on,target=native".to_string(),
        "-kernel".to_string(),
        bin.display().to_string(),
        "-append".to_string(),
        format!("semihosting {hv_args}").trim_end().to_string(),
    ]
}

/// U-Boot (`bios`) as the firmware, with the hypervisor preloaded at
/// [`UBOOT_HYPERVISOR_ADDR`], semihosting on for its exit status.
pub fn uboot_args(bios: &Path, hypervisor: &Path) -> Vec<String> {
    vec![
        "-semihosting-config".to_string(),
        "enable=on,target=native".to_string(),
        "-bios".to_string(),
        bios.display().to_string(),
        "-device".to_string(),
        loader_arg(hypervisor, UBOOT_HYPERVISOR_ADDR),
    ]
}

/// QEMU's generic loader putting `file`'s bytes, as they are, at host
/// physical address `at` (`-device` value).
pub fn loader_arg(file: &Path, at: u64) -> String {
    format!(
        "loader,file={},addr={at:#x},force-raw=on",
        qemu_escape(&file.display().to_string())
    )
}

/// The host's `index`-th disk: a `virtio-blk-pci` over the raw `image` on
/// `pcie.0` at `device` (QEMU drive `hostdisk<index>`), throttled to `iops`
/// requests a second if said.
pub fn host_disk_args(index: usize, image: &Path, device: u8, iops: Option<u32>) -> Vec<String> {
    vec![
        "-drive".to_string(),
        format!(
            "file={},if=none,id=hostdisk{index},format=raw{}",
            qemu_escape(&image.display().to_string()),
            iops.map(|n| format!(",throttling.iops-total={n}"))
                .unwrap_or_default()
        ),
        "-device".to_string(),
        format!("virtio-blk-pci,drive=hostdisk{index},bus=pcie.0,addr={device:#x}"),
    ]
}

/// The `pcie.0` device number of [`HOST_DISK_ADDRESS`].
pub const HOST_DISK_DEVICE: u8 = 5;

/// The `qemu-system-aarch64` arguments for `cfg`.
pub fn qemu_args(cfg: &RunConfig) -> Result<Vec<String>> {
    let cmdline = cfg.guest_cmdline()?;
    if let Mode::Hypervisor(bin) = &cfg.mode {
        check_hypervisor_fits(&read_head(bin, 64)?, file_len(bin)?, cfg.mem_bytes)?;
    }
    let plan = module_plan(cfg)?;
    check_guest_fits(cfg, &plan)?;
    let mut a = machine_args(&cfg.mode, cfg.smmu(), cfg.smp, cfg.mem_bytes);
    match &cfg.mode {
        Mode::Hypervisor(bin) => {
            let k = plan.kernel;
            a.extend(hypervisor_args(bin, &cfg.hypervisor_extra_args()));
            a.extend([
                "-device".to_string(),
                format!(
                    "guest-loader,addr={k:#x},kernel={},bootargs={}",
                    qemu_escape(&cfg.kernel.display().to_string()),
                    qemu_escape(&cmdline)
                ),
            ]);
            if let (Some(i), Some(initrd)) = (plan.initrd, &cfg.initrd) {
                a.extend([
                    "-device".to_string(),
                    format!(
                        "guest-loader,addr={i:#x},initrd={}",
                        qemu_escape(&initrd.display().to_string())
                    ),
                ]);
            }
        }
        Mode::UBoot { bios, hypervisor } => {
            a.extend(uboot_args(bios, hypervisor));
            a.extend(["-device".to_string(), loader_arg(&cfg.kernel, plan.kernel)]);
            if let (Some(i), Some(initrd)) = (plan.initrd, &cfg.initrd) {
                a.extend(["-device".to_string(), loader_arg(initrd, i)]);
            }
        }
        Mode::Direct => {
            a.extend(["-kernel".to_string(), cfg.kernel.display().to_string()]);
            if let Some(initrd) = &cfg.initrd {
                a.extend(["-initrd".to_string(), initrd.display().to_string()]);
            }
            a.extend(["-append".to_string(), cmdline]);
        }
    }
    a.extend(net::qemu_args(cfg.nic, cfg.nic_slot, &cfg.net));
    if let Some(img) = &cfg.host_disk {
        a.extend(host_disk_args(0, img, HOST_DISK_DEVICE, cfg.host_disk_iops));
    }
    a.extend(cfg.qemu_args.iter().cloned());
    Ok(a)
}

/// The length of file `p`.
pub fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .context(|| p.display().to_string())?
        .len())
}

/// The first `n` bytes of file `p` (fewer if it is shorter).
pub fn read_head(p: &Path, n: usize) -> Result<Vec<u8>> {
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
    /// Each complete line is also sent here (see [`run_tapped`]).
    tap: Option<std::sync::mpsc::Sender<String>>,
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
                if let Some(tap) = &self.tap {
                    // A receiver gone is a listener done listening.
                    let _ = tap.send(line.clone());
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

/// The status guest `name`'s command reported: the last
/// [`EXIT_STATUS_MARKER`] line with its `[name] ` prefix.
pub fn parse_guest_exit_status(console: &[String], name: &str) -> Option<i32> {
    let prefix = format!("[{name}] ");
    let lines: Vec<String> = console
        .iter()
        .filter_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .collect();
    parse_exit_status(&lines)
}

/// The run's command status: with one guest (`guests` empty) its
/// [`EXIT_STATUS_MARKER`] line's; with several, that of the first guest in
/// `guests` (the file's order) whose status is missing (`None`) or not 0,
/// else 0: the run succeeds only when every guest's command did.
pub fn exec_status_of(console: &[String], guests: &[String]) -> Option<i32> {
    if guests.is_empty() {
        return parse_exit_status(console);
    }
    for g in guests {
        match parse_guest_exit_status(console, g) {
            Some(0) => {}
            other => return other,
        }
    }
    Some(0)
}

/// The guests (by their `[name] ` console prefix) whose kernel panicked.
pub fn panicked_guests(console: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in console.iter().filter(|l| l.contains(PANIC_MARKER)) {
        let Some(name) = l
            .strip_prefix('[')
            .and_then(|r| r.split_once("] "))
            .map(|(n, _)| n)
        else {
            continue;
        };
        if name != "hv" && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Classifies a finished run.
/// A panic wins; then an initramfs that did not unpack, whatever the exit.
pub fn verdict(mode: &Mode, qemu_status: Option<i32>, console: &[String]) -> Verdict {
    if console.iter().any(|l| l.contains(PANIC_MARKER)) {
        return Verdict::GuestPanic;
    }
    if console.iter().any(|l| l.contains(INITRAMFS_FAILED_MARKER)) {
        return Verdict::InitramfsFailed;
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
    run_inner(cfg, None)
}

/// [`run`], sending each console line to `tap` as it arrives, so that
/// another thread can act on the guest's progress (the bench starts its host
/// side of a workload when the guest prints that it is ready). The sender is
/// dropped when QEMU has exited.
pub fn run_tapped(cfg: &RunConfig, tap: std::sync::mpsc::Sender<String>) -> Result<RunOutcome> {
    run_inner(cfg, Some(tap))
}

fn run_inner(cfg: &RunConfig, tap: Option<std::sync::mpsc::Sender<String>>) -> Result<RunOutcome> {
    let args = qemu_args(cfg)?;
    // U-Boot mode types its boot script on U-Boot's console.
    let input = match &cfg.mode {
        Mode::UBoot { .. } if !cfg.interactive => Some((
            UBOOT_PROMPT_MARKER.to_string(),
            uboot_script_for(cfg)?.into_bytes(),
        )),
        _ => cfg.input.clone(),
    };
    launch(cfg, &args, input, tap)
}

/// Runs QEMU with `args` and waits for it to end (or for `cfg`'s timeout),
/// typing `input`'s bytes once its marker appears on the console; `cfg`
/// gives the mode (for the verdict), the timeout, echo, interactivity and
/// whether a command runs; each console line also goes to `tap`, if any.
pub fn launch(
    cfg: &RunConfig,
    args: &[String],
    input: Option<ConsoleInput>,
    tap: Option<std::sync::mpsc::Sender<String>>,
) -> Result<RunOutcome> {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if cfg.interactive {
            Stdio::inherit()
        } else if input.is_some() {
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
    let capture = Arc::new(Mutex::new(Capture {
        tap,
        ..Capture::default()
    }));
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
        exec_status: exec_status_of(&cap.lines, &cfg.exec_guests),
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
    /// Path of the probe guest's flat binary (`tests/probe`), booted as the
    /// guest kernel by the probe tests.
    pub const PROBE_BIN: &str = "XTASK_PROBE_BIN";
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

    fn image_head(text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut head = vec![0u8; 64];
        head[8..16].copy_from_slice(&text_offset.to_le_bytes());
        head[16..24].copy_from_slice(&image_size.to_le_bytes());
        head[56..60].copy_from_slice(b"ARM\x64");
        head
    }

    /// A file of `len` bytes (sparse) starting with `head`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, head: &[u8], len: u64) -> TempFile {
            let p =
                std::env::temp_dir().join(format!("xtask-qemu-test-{}-{name}", std::process::id()));
            let mut f = std::fs::File::create(&p).expect("create");
            f.write_all(head).expect("write");
            f.set_len(len).expect("set_len");
            TempFile(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The hypervisor as `cargo xtask build` makes it: text_offset 0, 12.4 MiB with BSS.
    fn hypervisor_bin(name: &str) -> TempFile {
        TempFile::new(name, &image_head(0, 0xc5_a000), 352_912)
    }

    fn guest_loader_addrs(args: &[String]) -> Vec<u64> {
        args.iter()
            .filter_map(|a| a.strip_prefix("guest-loader,addr=0x"))
            .map(|a| u64::from_str_radix(a.split(',').next().unwrap_or(""), 16).expect("hex"))
            .collect()
    }

    #[test]
    fn raw_kernel_without_image_header_loads_at_0x80000_over_its_file_size() {
        // Fault 7: bytes 16..24 of a raw image are code, not an image_size.
        let mut raw = vec![0xffu8; 64];
        raw[56..60].copy_from_slice(b"\0\0\0\0");
        assert_eq!(kernel_load(&raw, 0x3000), (RAW_KERNEL_OFFSET, 0x3000));
        assert_eq!(kernel_footprint(&raw, 0x3000), 0x3000);
    }

    #[test]
    fn kernel_footprint_uses_image_header_size_only_with_the_magic() {
        assert_eq!(
            kernel_footprint(&image_head(0, 0x10_0000), 0x1000),
            0x10_0000
        );
        let mut no_magic = image_head(0, 0x10_0000);
        no_magic[56..60].copy_from_slice(b"ARM\0");
        assert_eq!(kernel_footprint(&no_magic, 0x1000), 0x1000);
    }

    #[test]
    fn raw_kernel_without_initrd_boots_under_the_hypervisor_with_its_own_cmdline() {
        // Fault 7: a bare-metal test image, no initrd, a command line of its own.
        let hv = hypervisor_bin("raw-hv");
        let raw = TempFile::new("raw-kernel", &[0xff; 64], 0x2000);
        let mut cfg = RunConfig::new(Mode::Hypervisor(hv.0.clone()), raw.0.clone(), "x".into());
        cfg.initrd = None;
        cfg.cmdline = Some("probe=1 mode=fast".into());
        cfg.mem_bytes = 256 << 20;
        let a = qemu_args(&cfg).expect("a raw kernel is accepted");
        let loaders: Vec<&String> = a.iter().filter(|x| x.starts_with("guest-loader")).collect();
        assert_eq!(loaders.len(), 1, "{a:?}");
        assert!(
            loaders[0].ends_with(",bootargs=probe=1 mode=fast"),
            "{}",
            loaders[0]
        );
        // Right after the hypervisor (RAM + 2 MiB + 12.4 MiB, rounded up to 2 MiB).
        assert_eq!(guest_loader_addrs(&a), [0x4100_0000]);
    }

    #[test]
    fn cmdline_replaces_the_default_line() {
        let mut cfg = RunConfig::new(Mode::Direct, "k".into(), "i".into());
        cfg.cmdline = Some(" console=hvc0 root=/dev/vda ".into());
        assert_eq!(
            cfg.guest_cmdline().expect("valid"),
            "console=hvc0 root=/dev/vda"
        );
    }

    #[test]
    fn cmdline_with_append_or_exec_is_refused() {
        let mut cfg = RunConfig::new(Mode::Direct, "k".into(), "i".into());
        cfg.cmdline = Some("x".into());
        cfg.append = "quiet".into();
        let e = cfg.guest_cmdline().expect_err("append and cmdline");
        assert!(e.0.contains("--cmdline") && e.0.contains("--append"), "{e}");
        cfg.append.clear();
        cfg.exec = Some("true".into());
        let e = cfg.guest_cmdline().expect_err("exec and cmdline");
        assert!(e.0.contains("--exec"), "{e}");
    }

    #[test]
    fn cmdline_with_a_double_quote_is_refused() {
        let mut cfg = RunConfig::new(Mode::Direct, "k".into(), "i".into());
        cfg.cmdline = Some("a=\"b\"".into());
        assert!(cfg.guest_cmdline().is_err());
    }

    #[test]
    fn without_initrd_direct_mode_passes_no_initrd() {
        let k = TempFile::new("direct-kernel", &image_head(0, 0x20_0000), 0x1000);
        let mut cfg = RunConfig::new(Mode::Direct, k.0.clone(), "i".into());
        cfg.initrd = None;
        let a = qemu_args(&cfg).expect("args");
        assert!(!a.iter().any(|x| x == "-initrd"), "{a:?}");
    }

    /// The guest image's sizes (Debian 6.1 `Image`, our initramfs).
    const KERNEL_LEN: u64 = 32_956_352;
    const KERNEL_IMAGE_SIZE: u64 = 0x201_0000;
    const INITRD_LEN: u64 = 92_513_332;

    #[test]
    fn mem_512m_gives_the_guest_all_ram_above_the_modules_and_the_initrd() {
        // Fault 8: the modules at 0x4a000000 and after split RAM, the guest got
        // the largest piece (about 200 MB) and its initramfs did not unpack.
        let hv = hypervisor_bin("512-hv");
        let k = TempFile::new("512-kernel", &image_head(0, KERNEL_IMAGE_SIZE), KERNEL_LEN);
        let i = TempFile::new("512-initrd", b"070701", INITRD_LEN);
        let mut cfg = RunConfig::new(Mode::Hypervisor(hv.0.clone()), k.0.clone(), i.0.clone());
        cfg.mem_bytes = 512 << 20;
        let plan = module_plan(&cfg).expect("fits");
        assert_eq!((plan.kernel, plan.initrd), (0x4820_0000, Some(0x4100_0000)));
        assert_eq!(plan.free.start, 0x4a20_0000);
        assert_eq!(plan.free.end, VIRT_RAM_BASE + (512 << 20));
        let a = qemu_args(&cfg).expect("512M holds the guest");
        assert_eq!(guest_loader_addrs(&a), [0x4820_0000, 0x4100_0000]);
    }

    #[test]
    fn undersized_mem_is_refused_naming_the_numbers() {
        let hv = hypervisor_bin("256-hv");
        let k = TempFile::new("256-kernel", &image_head(0, KERNEL_IMAGE_SIZE), KERNEL_LEN);
        let i = TempFile::new("256-initrd", b"070701", INITRD_LEN);
        let mut cfg = RunConfig::new(Mode::Hypervisor(hv.0.clone()), k.0.clone(), i.0.clone());
        cfg.mem_bytes = 256 << 20;
        let e = qemu_args(&cfg).expect_err("256M cannot hold it");
        // Free: 0x4a200000-0x50000000 (94 MiB) + the initrd mapped in place (88 MiB).
        // Need: kernel 34 MiB, initrd 88 MiB at 34 MiB, DTB 2, unpacked 88, 176.
        assert!(e.0.contains("--mem 256 MiB is too small"), "{e}");
        assert!(e.0.contains("the guest would get 182 MiB"), "{e}");
        assert!(e.0.contains("need 390 MiB"), "{e}");
        assert!(e.0.contains("give --mem 480M or more"), "{e}");
        // What it asks for is enough.
        cfg.mem_bytes = 480 << 20;
        assert!(qemu_args(&cfg).is_ok());
    }

    #[test]
    fn hypervisor_below_the_dtb_is_accepted() {
        assert!(check_hypervisor_fits(&image_head(0, 4 << 20), 1 << 20, 2 << 30).is_ok());
    }

    #[test]
    fn hypervisor_overlapping_the_dtb_is_rejected() {
        assert!(
            check_hypervisor_fits(&image_head(0x20_0000, 159 << 20), 1 << 20, 2 << 30).is_err()
        );
    }

    #[test]
    fn initramfs_unpacking_failure_fails_the_run_with_the_line_shown() {
        let m = Mode::Hypervisor(PathBuf::from("hv.bin"));
        let c = lines(&[
            "[    1.5] Initramfs unpacking failed: write error",
            "XTASK-EXIT-STATUS=0",
        ]);
        let v = verdict(&m, Some(HV_EXIT_POWER_OFF), &c);
        assert_eq!(v, Verdict::InitramfsFailed);
        let o = RunOutcome {
            verdict: v,
            console: c,
            qemu_stderr: String::new(),
            qemu_status: Some(0),
            init_start: None,
            exec_status: Some(0),
            had_exec: true,
            elapsed: Duration::ZERO,
        };
        assert_eq!(o.exit_code(), 4);
        assert_eq!(
            o.initramfs_failure(),
            Some("[    1.5] Initramfs unpacking failed: write error")
        );
    }

    #[test]
    fn capture_sends_each_complete_line_to_its_tap() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut c = Capture {
            tap: Some(tx),
            ..Capture::default()
        };
        c.feed(b"one\r\ntw", Instant::now());
        assert_eq!(rx.try_recv().ok().as_deref(), Some("one"));
        assert!(rx.try_recv().is_err(), "a partial line is not sent");
        c.feed(b"o\n", Instant::now());
        assert_eq!(rx.try_recv().ok().as_deref(), Some("two"));
    }

    #[test]
    fn each_guests_status_is_read_from_its_prefixed_line() {
        let c = lines(&["[net] XTASK-EXIT-STATUS=0", "[blk] XTASK-EXIT-STATUS=5"]);
        assert_eq!(parse_guest_exit_status(&c, "net"), Some(0));
        assert_eq!(parse_guest_exit_status(&c, "blk"), Some(5));
    }

    #[test]
    fn several_guests_status_is_0_only_when_every_command_returned_0() {
        let both = |net: &str, blk: &str| {
            exec_status_of(
                &lines(&[
                    &format!("[net] XTASK-EXIT-STATUS={net}"),
                    &format!("[blk] XTASK-EXIT-STATUS={blk}"),
                ]),
                &["net".to_string(), "blk".to_string()],
            )
        };
        assert_eq!(both("0", "0"), Some(0));
        assert_eq!(both("0", "5"), Some(5));
        assert_eq!(
            both("2", "5"),
            Some(2),
            "the first guest in the file's order wins"
        );
    }

    #[test]
    fn a_guest_that_never_reported_makes_the_status_unknown() {
        let c = lines(&["[net] XTASK-EXIT-STATUS=0"]);
        let guests = ["net".to_string(), "blk".to_string()];
        assert_eq!(exec_status_of(&c, &guests), None);
    }

    #[test]
    fn panicked_guests_are_named_by_their_console_prefix() {
        let c = lines(&[
            "[blk] fio: done",
            "[net] Kernel panic - not syncing: sysrq triggered crash",
            "[net] Kernel panic - not syncing: again",
        ]);
        assert_eq!(panicked_guests(&c), ["net"]);
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
            (0x4a00_0000, 0x100),
            Some((0x4c20_0000, 0x200)),
            "console=ttyAMA0",
            "",
        );
        let lines: Vec<&str> = s.split('\r').collect();
        assert_eq!(lines[0], "", "a key press stops autoboot");
        assert!(lines.contains(&"fdt set /chosen/module@4a000000 reg <0x0 0x4a000000 0x0 0x100>"));
        assert!(lines.contains(
            &"fdt set /chosen/module@4c200000 compatible \"multiboot,module\" \"multiboot,ramdisk\""
        ));
        assert!(lines.contains(&"setenv bootargs \"semihosting\""));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("booti 0x40400000 - 0x48000000")));
    }

    #[test]
    fn uboot_keystrokes_are_a_key_press_then_each_command_of_the_listing_without_comments() {
        let listing = "# U-Boot commands\n#   0x40400000  hv.bin (4 bytes)\nfdt addr 0x48000000\nsetenv bootargs \"semihosting\"\nbooti 0x40400000 - 0x48000000\n";
        assert_eq!(
            String::from_utf8(uboot_keystrokes(listing)).expect("text"),
            "\rfdt addr 0x48000000\rsetenv bootargs \"semihosting\"\rbooti 0x40400000 - 0x48000000\r"
        );
    }

    #[test]
    fn uboot_script_without_initrd_describes_no_ramdisk() {
        let s = uboot_script((0x4100_0000, 0x100), None, "probe", "");
        assert!(!s.contains("ramdisk"), "{s}");
        assert!(s.contains("fdt set /chosen/module@41000000 bootargs \"probe\""));
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
    fn a_probe_run_with_failed_checks_exits_1() {
        let out = |last: &str| RunOutcome {
            verdict: Verdict::PoweredOff,
            exec_status: None,
            console: vec!["PROBE ok a/b x [s]".into(), last.into()],
            qemu_stderr: String::new(),
            qemu_status: Some(0),
            init_start: None,
            had_exec: false,
            elapsed: Duration::from_secs(1),
        };
        assert_eq!(out("PROBE-DONE checks=2 failed=1").exit_code(), 1);
        assert_eq!(out("PROBE-DONE checks=2 failed=0").exit_code(), 0);
        assert_eq!(out("login:").exit_code(), 0);
    }

    #[test]
    fn a_throttled_host_disk_gets_qemus_iops_limit() {
        let k = TempFile::new("throttle-kernel", &image_head(0, 0x20_0000), 0x1000);
        let i = TempFile::new("throttle-initrd", b"070701", 0x1000);
        let mut cfg = RunConfig::new(Mode::Direct, k.0.clone(), i.0.clone());
        cfg.host_disk = Some("disk.img".into());
        let drive = |cfg: &RunConfig| {
            let a = qemu_args(cfg).expect("args");
            let i = a.iter().position(|x| x == "-drive").expect("-drive");
            a[i + 1].clone()
        };
        assert_eq!(drive(&cfg), "file=disk.img,if=none,id=hostdisk0,format=raw");
        cfg.host_disk_iops = Some(1);
        assert_eq!(
            drive(&cfg),
            "file=disk.img,if=none,id=hostdisk0,format=raw,throttling.iops-total=1"
        );
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
        let k = TempFile::new("nosmmu-kernel", &image_head(0, 0x20_0000), 0x1000);
        let i = TempFile::new("nosmmu-initrd", b"070701", 0x1000);
        let mut cfg = hv_config_with_nic(NicSlot::RootPort);
        cfg.mode = Mode::Direct;
        cfg.kernel = k.0.clone();
        cfg.initrd = Some(i.0.clone());
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
        let k = TempFile::new("direct2-kernel", &image_head(0, 0x20_0000), 0x1000);
        let i = TempFile::new("direct2-initrd", b"070701", 0x1000);
        let cfg = RunConfig::new(Mode::Direct, k.0.clone(), i.0.clone());
        let a = qemu_args(&cfg).expect("args");
        let initrd = i.0.display().to_string();
        assert!(a.windows(2).any(|w| w[0] == "-initrd" && w[1] == initrd));
        assert!(a.iter().any(|x| x.starts_with("virt,gic-version=3")));
    }
}
