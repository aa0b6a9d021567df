//! `cargo xtask`: build, assemble the guest image, run under QEMU, test.
//!
//! ```text
//! cargo xtask build            the hypervisor, as ELF and flat binary
//! cargo xtask image            the guest kernel and initramfs (cached)
//! cargo xtask run [OPTIONS]    boot the guests of a TOML file under the hypervisor (or --direct)
//! cargo xtask uboot-script FILE the U-Boot commands that boot FILE's guests on a board
//! cargo xtask test             every test, then the end-to-end boots
//! cargo xtask bench [OPTIONS]  the same guest timed directly and under the hypervisor
//! cargo xtask <command> --help its options
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{exit, Command};
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use xtask::config::{self, Config, DiskSpec, Overrides};
use xtask::error::Context;
use xtask::net::{NetBackend, Nic, NicSlot, PortForward};
use xtask::qemu::{self, Mode, RunConfig, Verdict};
use xtask::{flat, guests, image, install, paths, Error, Result};

/// Build the hypervisor, assemble the guest image, boot it under QEMU, test.
#[derive(Parser, Debug)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true,
    after_help = "`cargo xtask <command> --help` describes a command's options."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the hypervisor and the probe guest and their flat binaries
    ///
    /// Both for aarch64-unknown-none-softfloat, release; the flat binaries
    /// (`.bin`) are written next to the ELF files in
    /// target/aarch64-unknown-none-softfloat/release/.
    Build,
    /// Assemble (or reuse the cached) guest kernels and initramfs; print their paths
    ///
    /// Prints `kernel:`, `initrd:` and `kernel-new:` (the backports suite's
    /// newer kernel, same initramfs). The image is cached in
    /// ${XDG_CACHE_HOME:-~/.cache}/synthetic-pci/, keyed by the package
    /// versions and the /init script.
    Image,
    /// Boot the guests a TOML file describes under the hypervisor under QEMU (or one directly, --direct)
    ///
    /// The file (--config, default configs/main.toml: the main job, one
    /// Linux guest with a passed-through e1000e and a virtio-blk) gives the
    /// machine and its guests; the options below override its values (see
    /// docs/guests.md, "The TOML file"). Without --exec (or an `exec` in the
    /// file) the guest console is interactive (QEMU -nographic: Ctrl-a x
    /// quits, `exit` powers the guest off). Prints the time from QEMU start
    /// to the guest's XTASK-INIT-START line. Exit status: the command's
    /// after a clean power-off (0 without --exec), 3 after a guest panic or
    /// reset, 4 when the initramfs did not unpack, 2 after a hypervisor
    /// fault or when the file or the options are refused before QEMU
    /// starts, 124 on timeout.
    Run(RunArgs),
    /// cargo test, build the hypervisor and the probe guest, then the end-to-end boots
    ///
    /// The end-to-end tests (tests/tests/e2e.rs, --ignored
    /// --test-threads=1) boot the guest under the hypervisor;
    /// XTASK_E2E_DIRECT=1 boots them directly on QEMU instead.
    Test,
    /// Measure the same Linux directly on QEMU and under the hypervisor
    ///
    /// Directly on QEMU, Linux drives QEMU's e1000e and virtio-blk-pci; under
    /// the hypervisor, the e1000e is passed through and the virtio-blk is
    /// the hypervisor's, on the same image (bench-disk.img in the cache
    /// directory). Alternately, --runs times, one boot per arrangement runs
    /// every workload (boot to init, iperf3 both ways with the host's
    /// client, ping, fio, syscalls, user loop, IPIs, timer, console), and a
    /// probe guest boot times a config read, a virtio notify, a GICD read
    /// and an hvc. Prints median, min and max per arrangement and the ratio
    /// hypervisor / direct; writes target/bench/bench.{json,md,svg},
    /// docs/bench.svg and README.md's table; exits 1 when a ratio misses its
    /// target in bench/ratio-thresholds.toml. With --icount, counts
    /// instructions per trapped operation instead; with --scaling, times
    /// boots by CPU count.
    Bench(BenchArgs),
    /// Print the U-Boot commands that boot the guests of a TOML file on a board
    ///
    /// First, as comments, where each file goes (the hypervisor at
    /// 0x4040_0000, the modules where `run --uboot` has QEMU load them);
    /// then the commands `cargo xtask run --uboot --config FILE` types on
    /// U-Boot's console: the DT moved where it can grow, the guest nodes
    /// (or, for a single guest with every CPU and the rest of RAM, its
    /// modules directly under /chosen), the hypervisor's command line,
    /// `booti`. Builds the hypervisor and, when a guest takes it, the guest
    /// image, for their sizes. Written for QEMU's virt: docs/guests.md ("The
    /// U-Boot script on a board") says what to adapt on a board.
    UbootScript {
        /// The TOML file (docs/guests.md, "The TOML file")
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// The guest and the machine: options `run` and `bench` share.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Guest and machine")]
struct GuestArgs {
    /// Guest kernel [default: the Image from the guest image]
    ///
    /// An arm64 Image (loaded at its text_offset, over its image_size), or a
    /// raw image without that header (magic ARM\x64 at offset 56), loaded at
    /// RAM + 0x80000 over its file size, as QEMU's -kernel loads one.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Guest initramfs [default: from the guest image]; `none`: the guest gets no initrd
    #[arg(long, value_name = "PATH|none", value_parser = parse_initrd)]
    initrd: Option<Initrd>,
    /// Added to the guest kernel command line (repeatable)
    ///
    /// After `console=ttyAMA0 panic=-1`, before `xtask.exec=`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Vec<String>,
    /// CPUs [default: 2]
    #[arg(long, value_name = "N", value_parser = parse_smp)]
    smp: Option<u32>,
    /// RAM, e.g. 512M [default: 2G]
    ///
    /// Under the hypervisor the guest gets all of it but the hypervisor's
    /// share (the first 2 MiB, the hypervisor image with its heap and
    /// stacks, about 13 MiB, and 2 MiB for the host DTB and the kernel
    /// module); too little for the kernel, the initrd twice, the DTB and
    /// 32 MiB is refused, naming the numbers.
    #[arg(long, value_name = "SIZE", value_parser = qemu::parse_mem)]
    mem: Option<u64>,
    /// Extra QEMU argument (repeatable)
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,
    /// Host NIC [default: e1000e]
    ///
    /// The guest's /init gives the first Ethernet interface 10.0.2.15/24 via
    /// 10.0.2.2 (QEMU user networking, restrict=on: only 10.0.2.2, which is
    /// QEMU, answers). Under the hypervisor the NIC is passed through
    /// (pci-passthrough= on the hypervisor's command line, iommu=smmuv3 on
    /// the machine); with --direct, Linux drives it.
    #[arg(long, value_name = "MODEL", value_parser = nic_parser())]
    nic: Option<Nic>,
    /// Where the NIC sits on the host's PCIe [default: root-port]
    ///
    /// Host buses are numbered depth-first from 0.
    #[arg(long = "nic-slot", value_name = "WHERE", value_parser = nic_slot_parser())]
    nic_slot: Option<NicSlot>,
    /// Forward TCP 127.0.0.1:H on the host to guest port G (repeatable)
    #[arg(long = "hostfwd", value_name = "H:G", value_parser = PortForward::parse)]
    forwards: Vec<PortForward>,
}

/// `cargo xtask run`'s options.
#[derive(Args, Debug, Default)]
#[command(args_override_self = true)]
struct RunArgs {
    /// The machine and its guests [default: configs/main.toml]
    ///
    /// A TOML file (docs/guests.md, "The TOML file"). One guest with
    /// `cpus = "all"` and `memory = "rest"` boots as the single guest always
    /// did (its modules directly under /chosen, its options on the
    /// hypervisor's command line); anything else as guest nodes under
    /// /chosen in a DTB given to QEMU. The guest options (kernel, initrd,
    /// append, cmdline, exec, smp, nic, nic-slot, hostfwd, disk) change the
    /// file's guest, and with several guests the one named by the --guest
    /// before them; mem, qemu-arg, hv-arg and smmu change the machine
    /// (given before any --guest, refused after one).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The guest of --config the guest options after it apply to (repeatable)
    ///
    /// The guest options after `--guest NAME`, up to the next --guest,
    /// change guest NAME. Before any --guest they change the file's only
    /// guest; with several guests only --exec may come before any --guest:
    /// it is then the command of every guest without one of its own.
    #[arg(long = "guest", value_name = "NAME", action = clap::ArgAction::Append)]
    guest_name: Vec<String>,
    /// Run CMD in the guest (sh -c), print its output, exit with its status (default timeout 600 s)
    ///
    /// With several guests, either every guest runs a command (`--guest
    /// NAME --exec CMD`, `exec` in the file, or --exec before any --guest
    /// for every guest without one) or none does: the run is refused (status
    /// 2) naming the guests left without one.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    exec: Option<String>,
    /// Boot the guest directly on QEMU, without the hypervisor (the baseline)
    #[arg(long)]
    direct: bool,
    /// As on a board: U-Boot booti's the hypervisor with the modules described in the DT
    ///
    /// QEMU runs U-Boot (the distribution's qemu_arm64 build, fetched and
    /// cached like the guest packages), which adds the multiboot,module
    /// nodes to the DT and booti's the hypervisor at 0x4040_0000 (typed on
    /// U-Boot's console with --exec; printed for you to type without).
    #[arg(long)]
    uboot: bool,
    /// The whole guest command line instead of the default one
    ///
    /// For guests other than our Linux image; refused with --append or
    /// --exec (which need the default line), and when it holds a `"` or a
    /// control character.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    cmdline: Option<String>,
    /// Added to the hypervisor's own command line, e.g. root-ports=31 or loglevel=debug (repeatable)
    #[arg(long = "hv-arg", value_name = "ARG", allow_hyphen_values = true)]
    hv_args: Vec<String>,
    /// Give the machine an SMMUv3 (virt iommu=smmuv3, stages 1 and 2) even without a passed-through NIC
    #[arg(long)]
    smmu: bool,
    /// The guest's virtio-blk (/dev/vda): IMG, ram:SIZE or none [default: the file's; main.toml: disk.img in the cache directory]
    ///
    /// Emulated by the hypervisor behind its own root port (guest
    /// 0001:02:00.0). IMG, a raw image file, becomes a host virtio-blk-pci
    /// the hypervisor drives, and the guest's requests reach it zero-copy;
    /// ram:SIZE is a RAM disk in host memory, lost at power-off; the default
    /// image is 256 MiB, created once and kept between runs. With --direct
    /// an image is the guest's own virtio-blk-pci, ram: gives none. Replaces
    /// the guest's `disks`.
    #[arg(long, value_name = "DISK", value_parser = parse_disk)]
    disk: Option<DiskArg>,
    /// (Testing the host-disk driver alone) a raw image as a host virtio-blk at 0000:00:05.0
    ///
    /// Under the hypervisor: host-disk=0000:00:05.0 host-disk-selftest and
    /// iommu=smmuv3; the hypervisor drives it, the guest does not see it.
    /// With --direct the guest's Linux drives it.
    #[arg(long = "host-disk", value_name = "IMG", conflicts_with = "disk")]
    host_disk: Option<PathBuf>,
    /// The guest's console is a virtio console (hvc0) the hypervisor emulates
    ///
    /// Beside its virtio-blk on its segment: console=hvc0 instead of
    /// console=ttyAMA0, the guest's output through its transmit queue (the
    /// same lines on the host console), the host console's input into its
    /// receive queue. With --direct the guest keeps QEMU's PL011. Sets the
    /// guest's `virtio-console`.
    #[arg(long = "virtio-console")]
    virtio_console: bool,
    /// Kill QEMU after SECS [default: none interactive, 600 with --exec]
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    #[command(flatten)]
    guest: GuestArgs,
    /// The guest options of each `--guest NAME` section, in order (set by
    /// [`parse`]); those before any --guest are this struct's own.
    #[arg(skip)]
    per_guest: Vec<(String, RunArgs)>,
}

/// `cargo xtask bench`'s options.
#[derive(Args, Debug, Default)]
#[command(args_override_self = true)]
struct BenchArgs {
    /// Boots in each mode
    #[arg(long, value_name = "N", default_value_t = 3)]
    runs: usize,
    /// Instead: instructions per trapped operation under QEMU -icount shift=0
    ///
    /// The probe guest's cost group: hvc, GICD, PL011, ECAM read and write,
    /// virtio, with 2 and 31 root ports; writes target/bench/icount.{md,json}
    /// and exits 1 when a figure is over its limit in
    /// bench/icount-thresholds.toml.
    #[arg(long, conflicts_with_all = ["runs", "GuestArgs", "scaling"])]
    icount: bool,
    /// Instead: boot to init with 1, 2, 4 and 8 CPUs in both arrangements
    ///
    /// Writes target/bench/scaling.{md,json} and README.md's scaling table.
    #[arg(long)]
    scaling: bool,
    #[command(flatten)]
    guest: GuestArgs,
}

/// `--initrd`: a file, or none at all.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Initrd {
    /// No initrd (`--initrd none`).
    None,
    /// This file.
    File(PathBuf),
}

fn parse_initrd(s: &str) -> Result<Initrd> {
    Ok(match s {
        "none" => Initrd::None,
        path => Initrd::File(path.into()),
    })
}

fn parse_smp(s: &str) -> std::result::Result<u32, &'static str> {
    s.parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or("a number of CPUs, 1 or more")
}

fn nic_parser() -> impl TypedValueParser<Value = Nic> {
    PossibleValuesParser::new([
        PossibleValue::new("e1000e").help("Intel 82574L"),
        PossibleValue::new("igb").help("Intel 82576"),
        PossibleValue::new("none").help("no NIC"),
    ])
    .try_map(|s| Nic::parse(&s))
}

fn nic_slot_parser() -> impl TypedValueParser<Value = NicSlot> {
    PossibleValuesParser::new([
        PossibleValue::new("bus").help("on pcie.0 at 00:02.0"),
        PossibleValue::new("root-port").help("behind a pcie-root-port at 00:02.0; NIC at 01:00.0"),
        PossibleValue::new("switch").help(
            "behind a switch (root port, x3130-upstream, xio3130-downstream); NIC at 03:00.0",
        ),
    ])
    .try_map(|s| NicSlot::parse(&s))
}

/// `--disk`: none (`none`), or the guest's one disk (`ram:SIZE`, an image).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DiskArg(Option<DiskSpec>);

fn parse_disk(s: &str) -> Result<DiskArg> {
    if s == "none" || s.starts_with("ram:") {
        match qemu::Disk::parse(s)? {
            qemu::Disk::Ram(n) => Ok(DiskArg(Some(DiskSpec::Ram(n)))),
            _ => Ok(DiskArg(None)),
        }
    } else {
        Ok(DiskArg(Some(DiskSpec::Image(s.into()))))
    }
}

/// Parses xtask's command line (`args[0]` is the program), with the checks
/// between options clap's declarations do not express.
fn parse<I, T>(args: I) -> std::result::Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cli = Cli::try_parse_from(&args)?;
    if let Cmd::Run(r) = &mut cli.command {
        let mut cmd = Cli::command();
        cmd.build();
        let run = cmd
            .find_subcommand_mut("run")
            .ok_or_else(|| clap::Error::new(ErrorKind::InvalidSubcommand))?;
        let after_run = args
            .iter()
            .skip(1)
            .position(|a| a == "run")
            .map_or(args.len(), |i| i + 2);
        let (before, sections) = guest_sections(run, &args[after_run..]);
        // The guest options are those of each section: parsed on their own
        // (the whole line already parsed, so each part does too).
        let section = |tokens: &[OsString]| -> std::result::Result<RunArgs, clap::Error> {
            let line = ["xtask", "run"].map(OsString::from).into_iter();
            match Cli::try_parse_from(line.chain(tokens.iter().cloned()))?.command {
                Cmd::Run(s) => Ok(s),
                _ => Err(clap::Error::new(ErrorKind::InvalidSubcommand)),
            }
        };
        let first = section(&before)?;
        r.set_guest_options(&first);
        for (name, tokens) in &sections {
            let s = section(tokens)?;
            // The machine's options stand anywhere on the line; after a
            // --guest they would read as that guest's.
            let machine = [
                ("--mem", s.guest.mem.is_some()),
                ("--qemu-arg", !s.guest.qemu_args.is_empty()),
                ("--hv-arg", !s.hv_args.is_empty()),
                ("--smmu", s.smmu),
            ];
            if let Some((opt, _)) = machine.iter().find(|(_, given)| *given) {
                return Err(run.error(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "{opt} after --guest {name}: {opt} is the machine's, not a guest's (a guest's memory is `memory` in its [[guest]] table): give it before any --guest"
                    ),
                ));
            }
            r.per_guest.push((name.clone(), s));
        }
        let checks = std::iter::once(&*r).chain(r.per_guest.iter().map(|(_, s)| s));
        for s in checks {
            if let Err(msg) = s.check() {
                return Err(run.error(ErrorKind::ArgumentConflict, msg));
            }
        }
    }
    Ok(cli)
}

/// A guest's name and the arguments after its `--guest NAME`.
type Section = (String, Vec<OsString>);

/// `run`'s arguments `tokens` cut at each `--guest NAME` (or
/// `--guest=NAME`): those before the first, then each guest's name with
/// the arguments up to the next. `run` says which options take a value (the
/// token after such an option is its value, never a `--guest`).
fn guest_sections(run: &clap::Command, tokens: &[OsString]) -> (Vec<OsString>, Vec<Section>) {
    let takes_value = |long: &str| {
        run.get_arguments()
            .any(|a| a.get_long() == Some(long) && a.get_action().takes_values())
    };
    let mut before = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].to_string_lossy();
        let option = t.strip_prefix("--").filter(|o| !o.is_empty());
        let (long, inline) = match option {
            Some(o) => o.split_once('=').map_or((o, false), |(l, _)| (l, true)),
            None => ("", false),
        };
        if long == "guest" {
            let name = match t.split_once('=') {
                Some((_, v)) => v.to_string(),
                None => {
                    i += 1;
                    tokens
                        .get(i)
                        .map_or(String::new(), |v| v.to_string_lossy().into_owned())
                }
            };
            sections.push((name, Vec::new()));
            i += 1;
            continue;
        }
        let n = if !long.is_empty() && !inline && takes_value(long) {
            2
        } else {
            1
        };
        let end = (i + n).min(tokens.len());
        let into = match sections.last_mut() {
            Some((_, s)) => s,
            None => &mut before,
        };
        into.extend_from_slice(&tokens[i..end]);
        i = end;
    }
    (before, sections)
}

/// Size of the disk image `cargo xtask run` creates when it has none.
const DEFAULT_DISK_BYTES: u64 = 256 << 20;

/// The default disk (`disks = ["default"]`): `disk.img` in the cache
/// directory, created (sparse, zeroed) the first time and kept between runs.
fn default_disk(create: bool) -> Result<PathBuf> {
    let p = paths::cache_dir().join("disk.img");
    if create && !p.exists() {
        std::fs::create_dir_all(paths::cache_dir())
            .and_then(|()| std::fs::File::create(&p))
            .and_then(|f| f.set_len(DEFAULT_DISK_BYTES))
            .map_err(|e| Error(format!("creating {}: {e}", p.display())))?;
        eprintln!(
            "xtask: created the guest's disk image {} ({} MiB)",
            p.display(),
            DEFAULT_DISK_BYTES >> 20
        );
    }
    Ok(p)
}

/// Default timeout of a `--exec` run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(600);
/// Hypervisor target triple.
/// Soft-float: the hypervisor must never touch the FP/SIMD/SVE registers, which hold
/// the guest's state across every exit.
const TARGET: &str = "aarch64-unknown-none-softfloat";

fn main() {
    let cli = parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let code = match dispatch(cli.command) {
        Ok(code) => code,
        Err(Stop::Failed(e)) => {
            eprintln!("xtask: error: {e}");
            1
        }
        Err(Stop::Refused(e)) => {
            eprintln!("xtask: error: {e}");
            REFUSED
        }
    };
    exit(code);
}

/// The exit status when xtask refuses a run's file or options (a bad
/// configuration) before QEMU starts, as for an option value clap refuses.
const REFUSED: i32 = 2;

/// Why a command stopped without a status of its own.
#[derive(Debug)]
enum Stop {
    /// The file or the options describe something xtask does not boot: the
    /// exit status is [`REFUSED`].
    Refused(Error),
    /// A step failed (a build, a download, QEMU): exit status 1.
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e)
    }
}

/// Marks a step's error as a refusal of the configuration.
trait Refusal<T> {
    fn refused(self) -> std::result::Result<T, Stop>;
}

impl<T> Refusal<T> for Result<T> {
    fn refused(self) -> std::result::Result<T, Stop> {
        self.map_err(Stop::Refused)
    }
}

fn dispatch(command: Cmd) -> std::result::Result<i32, Stop> {
    Ok(match command {
        Cmd::Build => build_hypervisor().and_then(|_| build_probe()).map(|_| 0)?,
        Cmd::Image => image::ensure_guest_image().map(|img| {
            println!("kernel: {}", img.kernel.display());
            println!("initrd: {}", img.initrd.display());
            println!("kernel-new: {}", img.new_kernel.display());
            0
        })?,
        Cmd::Run(a) => run(a)?,
        Cmd::Test => test()?,
        Cmd::Bench(a) => bench(a)?,
        Cmd::UbootScript { file } => uboot_script(&file)?,
    })
}

/// Each guest's kernel and initrd ([`Config::files`]): a named file that
/// does not exist is a refusal, the project's image failing to build is not.
fn guest_files(config: &Config) -> std::result::Result<Vec<config::GuestFiles>, Stop> {
    let mut image_error = None;
    let files = config.files(|| {
        image::ensure_guest_image()
            .map(|i| (i.kernel, i.initrd))
            .inspect_err(|e| image_error = Some(e.clone()))
    });
    match (files, image_error) {
        (Ok(f), _) => Ok(f),
        (Err(_), Some(e)) => Err(Stop::Failed(e)),
        (Err(e), None) => Err(Stop::Refused(e)),
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args(args)
        .status()
        .context(|| "running cargo".to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(Error(format!("cargo {} failed: {status}", args.join(" "))))
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                paths::workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| paths::workspace_root().join("target"))
}

/// Builds the hypervisor and writes its flat binary next to the ELF.
fn build_hypervisor() -> Result<PathBuf> {
    build_flat("hypervisor")
}

/// Builds the probe guest (`tests/probe`), a flat arm64 Image the
/// end-to-end tests boot as the guest kernel.
fn build_probe() -> Result<PathBuf> {
    build_flat("probe")
}

/// Builds `package` (a bare-metal binary with an arm64 Image header) and
/// writes its flat binary next to the ELF.
fn build_flat(package: &str) -> Result<PathBuf> {
    install::ensure_rust_target(TARGET)?;
    cargo(&["build", "-p", package, "--target", TARGET, "--release"])?;
    let elf_path = target_dir().join(TARGET).join("release").join(package);
    let elf = std::fs::read(&elf_path).context(|| elf_path.display().to_string())?;
    let flat = flat::elf_to_flat(&elf).context(|| format!("flattening {}", elf_path.display()))?;
    if !flat::has_arm64_image_header(&flat.bytes) {
        eprintln!(
            "xtask: warning: {} does not start with an arm64 Image header: QEMU will not boot it as a kernel",
            elf_path.display()
        );
    }
    let bin = elf_path.with_extension("bin");
    std::fs::write(&bin, &flat.bytes)?;
    eprintln!(
        "xtask: {package}: {} ({} bytes, loads at {:#x})",
        bin.display(),
        flat.bytes.len(),
        flat.load_address
    );
    Ok(bin)
}

impl GuestArgs {
    /// Sets `cfg`'s NIC, its slot and user networking with the forwards;
    /// `default_nic` when `--nic` was not given.
    fn apply_network(&self, cfg: &mut RunConfig, default_nic: Nic) {
        cfg.nic = self.nic.unwrap_or(default_nic);
        cfg.nic_slot = self.nic_slot.unwrap_or(cfg.nic_slot);
        cfg.net = NetBackend::User {
            forwards: self.forwards.clone(),
        };
    }

    /// The guest kernel and initrd: the options', else the guest image's
    /// (built only when one of them is needed).
    fn guest_files(&self) -> Result<(PathBuf, Option<PathBuf>)> {
        let (kernel, initrd) = match (&self.kernel, &self.initrd) {
            (Some(kernel), Some(initrd)) => (kernel.clone(), initrd.clone()),
            (kernel, initrd) => {
                let img = image::ensure_guest_image()?;
                (
                    kernel.clone().unwrap_or(img.kernel),
                    initrd.clone().unwrap_or(Initrd::File(img.initrd)),
                )
            }
        };
        Ok(match initrd {
            Initrd::None => (kernel, None),
            Initrd::File(path) => (kernel, Some(path)),
        })
    }

    /// Sets `cfg`'s initrd, added command line, CPUs, RAM and QEMU arguments
    /// from the options.
    fn apply_guest(&self, cfg: &mut RunConfig, initrd: Option<PathBuf>) {
        cfg.initrd = initrd;
        cfg.append = self.append.join(" ");
        cfg.smp = self.smp.unwrap_or(cfg.smp);
        cfg.mem_bytes = self.mem.unwrap_or(cfg.mem_bytes);
        cfg.qemu_args = self.qemu_args.clone();
    }
}

impl RunArgs {
    /// The checks between options: `--cmdline` excludes `--append` and
    /// `--exec`, which need the default command line.
    fn check(&self) -> std::result::Result<(), &'static str> {
        if self.cmdline.is_some() && !self.guest.append.is_empty() {
            return Err("--cmdline replaces the whole guest command line and --append adds to the default one: give one of them");
        }
        if self.cmdline.is_some() && self.exec.is_some() {
            return Err("--exec needs our /init and the default command line; --cmdline replaces that line: give one of them");
        }
        Ok(())
    }
}

impl RunArgs {
    /// Takes the guest options of `from` (those before any --guest) in
    /// place of the whole line's.
    fn set_guest_options(&mut self, from: &RunArgs) {
        self.guest.kernel.clone_from(&from.guest.kernel);
        self.guest.initrd.clone_from(&from.guest.initrd);
        self.guest.append.clone_from(&from.guest.append);
        self.guest.smp = from.guest.smp;
        self.guest.nic = from.guest.nic;
        self.guest.nic_slot = from.guest.nic_slot;
        self.guest.forwards.clone_from(&from.guest.forwards);
        self.cmdline.clone_from(&from.cmdline);
        self.exec.clone_from(&from.exec);
        self.disk.clone_from(&from.disk);
    }

    /// The guest options of a `--guest NAME` section.
    fn guest_overrides(&self, name: &str) -> Overrides {
        let all = self.overrides_of(Some(name.to_string()));
        Overrides {
            mem: None,
            qemu_args: Vec::new(),
            hv_args: Vec::new(),
            smmu: false,
            ..all
        }
    }

    /// The options that change the file's values ([`Config::apply_all`]):
    /// those before any --guest with the machine's, then each --guest's.
    fn overrides(&self) -> (Overrides, Vec<Overrides>) {
        (
            self.overrides_of(None),
            self.per_guest
                .iter()
                .map(|(name, s)| s.guest_overrides(name))
                .collect(),
        )
    }

    /// This struct's options as [`Overrides`] for `guest`.
    fn overrides_of(&self, guest: Option<String>) -> Overrides {
        Overrides {
            guest,
            kernel: self.guest.kernel.clone(),
            initrd: self.guest.initrd.clone().map(|i| match i {
                Initrd::None => None,
                Initrd::File(p) => Some(p),
            }),
            append: self.guest.append.clone(),
            cmdline: self.cmdline.clone(),
            exec: self.exec.clone(),
            smp: self.guest.smp,
            nic: self.guest.nic,
            nic_slot: self.guest.nic_slot,
            hostfwd: self.guest.forwards.clone(),
            disk: self.disk.clone().map(|d| d.0),
            virtio_console: self.virtio_console,
            mem: self.guest.mem,
            qemu_args: self.guest.qemu_args.clone(),
            hv_args: self.hv_args.clone(),
            smmu: self.smmu,
        }
    }

    /// The file, with the options applied, and the checks between options
    /// and file: `--direct` boots one guest, `--host-disk` tests the single
    /// guest's host disk, a `--disk` image exists.
    fn config(&self) -> Result<Config> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| paths::workspace_root().join(config::MAIN_CONFIG));
        let mut c = Config::load(&path)?;
        let (global, per_guest) = self.overrides();
        c.apply_all(&global, &per_guest)?;
        let file = path.display();
        if self.direct && c.guests.len() > 1 {
            return Err(Error(format!(
                "{file}: --direct boots one guest without the hypervisor, and the file has {}",
                c.guests.len()
            )));
        }
        if self.host_disk.is_some() && !c.single_style() {
            return Err(Error(format!(
                "{file}: --host-disk tests the host-disk driver beside a single guest (cpus = \"all\", memory = \"rest\")"
            )));
        }
        let disks = std::iter::once(self).chain(self.per_guest.iter().map(|(_, s)| s));
        for d in disks.filter_map(|s| s.disk.as_ref()) {
            if let DiskArg(Some(DiskSpec::Image(p))) = d {
                if !p.is_file() {
                    return Err(Error(format!("--disk {}: no such image file", p.display())));
                }
            }
        }
        Ok(c)
    }
}

impl RunArgs {
    /// [`RunArgs::config`], refused when some guests run a command and
    /// others would wait in a shell ([`Config::check_commands`]).
    fn checked_config(&self) -> Result<Config> {
        let c = self.config()?;
        c.check_commands()?;
        Ok(c)
    }
}

/// Where a run of `config` writes the DTB it gives QEMU:
/// `target/xtask/<file stem>.dtb`.
fn dtb_path(config: &Config) -> PathBuf {
    let stem = config
        .path
        .file_stem()
        .map_or_else(|| "guests".into(), |s| s.to_string_lossy().into_owned());
    target_dir().join("xtask").join(format!("{stem}.dtb"))
}

/// `cargo xtask run`. The file and options are refused ([`Stop::Refused`])
/// before QEMU starts: as read ([`RunArgs::config`]), with a command for
/// every guest or none ([`RunArgs::checked_config`]), then as placed
/// ([`guests::plan`]) and checked as the hypervisor will
/// ([`guests::Plan::validate`]).
fn run(a: RunArgs) -> std::result::Result<i32, Stop> {
    let config = a.checked_config().refused()?;
    let mode = if a.direct {
        Mode::Direct
    } else if a.uboot {
        let hypervisor = build_hypervisor()?;
        Mode::UBoot {
            bios: image::ensure_uboot()?,
            hypervisor,
        }
    } else {
        Mode::Hypervisor(build_hypervisor()?)
    };
    install::ensure_qemu()?;
    let files = guest_files(&config)?;
    let disk = default_disk(config.uses_default_disk() && a.host_disk.is_none())?;
    let exec = config.guests.iter().find_map(|g| g.exec.clone());
    let interactive = exec.is_none();
    let timeout = a.timeout.map(Duration::from_secs).or(if interactive {
        None
    } else {
        Some(EXEC_TIMEOUT)
    });
    let outcome = if a.direct || config.single_style() {
        let mut cfg = config.run_config(0, mode, &files[0], &disk).refused()?;
        if let Some(img) = a.host_disk.clone() {
            cfg.disk = qemu::Disk::None;
            cfg.host_disk = Some(img);
            cfg.hypervisor_args = format!("host-disk-selftest {}", cfg.hypervisor_args)
                .trim()
                .to_string();
        }
        cfg.interactive = interactive;
        cfg.timeout = timeout;
        if cfg.interactive && matches!(cfg.mode, Mode::UBoot { .. }) {
            print_to_type(&qemu::uboot_lines_for(&cfg)?);
        }
        qemu::run(&cfg)?
    } else {
        let plan = guests::plan(&config, &files, &disk, &mode).refused()?;
        plan.validate().refused()?;
        // What launching needs: the mode (for the verdict), the timeout,
        // the console, whether a command runs.
        let mut cfg = RunConfig::new(mode.clone(), files[0].kernel.clone(), PathBuf::new());
        cfg.interactive = interactive;
        cfg.timeout = timeout;
        cfg.exec = exec;
        cfg.exec_guests = config.command_guests();
        if interactive && matches!(mode, Mode::UBoot { .. }) {
            print_to_type(&plan.uboot_lines()?);
        }
        let (args, input) = guests::launch_args(&plan, &dtb_path(&config), !interactive)?;
        qemu::launch(&cfg, &args, input, None)?
    };
    match outcome.init_start {
        Some(t) => eprintln!(
            "xtask: {} after {:.2} s",
            qemu::INIT_MARKER,
            t.as_secs_f64()
        ),
        None => eprintln!("xtask: {} never seen", qemu::INIT_MARKER),
    }
    match outcome.verdict {
        Verdict::PoweredOff => {}
        Verdict::GuestPanic => {
            match qemu::panicked_guests(&outcome.console).as_slice() {
                [] => eprintln!("xtask: the guest kernel panicked:"),
                names => eprintln!("xtask: guest {} panicked:", names.join(", guest ")),
            }
            eprint!("{}", outcome.panic_lines().unwrap_or_default());
        }
        Verdict::InitramfsFailed => {
            eprintln!(
                "xtask: the guest's initramfs did not unpack (too little guest RAM? see --mem):"
            );
            eprintln!("  {}", outcome.initramfs_failure().unwrap_or_default());
        }
        _ => {
            eprintln!("xtask: last console lines:");
            eprint!("{}", outcome.tail(40));
        }
    }
    eprintln!("xtask: {}", outcome.summary());
    Ok(outcome.exit_code())
}

/// The console is the user's: the boot script to paste at U-Boot's prompt.
fn print_to_type(lines: &[String]) {
    eprintln!("xtask: at U-Boot's prompt, type:");
    for l in lines.iter().filter(|l| !l.is_empty()) {
        eprintln!("  {l}");
    }
}

/// `cargo xtask uboot-script FILE`; a bad file is refused as by `run`.
fn uboot_script(file: &std::path::Path) -> std::result::Result<i32, Stop> {
    let config = Config::load(file).refused()?;
    let hypervisor = build_hypervisor()?;
    // U-Boot itself is not read: the script is for whatever firmware runs it.
    let mode = Mode::UBoot {
        bios: PathBuf::from("u-boot.bin"),
        hypervisor,
    };
    let files = guest_files(&config)?;
    let disk = default_disk(config.uses_default_disk())?;
    let listing = if config.single_style() {
        let cfg = config.run_config(0, mode, &files[0], &disk).refused()?;
        let (loads, lines) = (qemu::uboot_loads_for(&cfg)?, qemu::uboot_lines_for(&cfg)?);
        qemu::uboot_listing(file, &loads, &lines)
    } else {
        let plan = guests::plan(&config, &files, &disk, &mode).refused()?;
        plan.validate().refused()?;
        plan.uboot_listing()?
    };
    print!("{listing}");
    Ok(0)
}

fn bench(a: BenchArgs) -> Result<i32> {
    if a.icount {
        let hv = build_hypervisor()?;
        let probe = build_probe()?;
        install::ensure_qemu()?;
        return Ok(if xtask::icount::bench(&hv, &probe)? {
            0
        } else {
            1
        });
    }
    let hv = build_hypervisor()?;
    let probe = build_probe()?;
    install::ensure_qemu()?;
    install::ensure_iperf3()?;
    let (kernel, initrd) = a.guest.guest_files()?;
    let mut cfg = RunConfig::new(Mode::Direct, kernel, PathBuf::new());
    a.guest.apply_guest(&mut cfg, initrd);
    a.guest.apply_network(&mut cfg, Nic::E1000e);
    cfg.disk = qemu::Disk::Host;
    cfg.host_disk = Some(xtask::bench::disk_image()?);
    let b = xtask::bench::Bench {
        linux: cfg,
        hypervisor: hv,
        probe: Some(probe),
        runs: a.runs.max(1),
    };
    if a.scaling {
        xtask::bench::scaling(&b)?;
        return Ok(0);
    }
    Ok(if xtask::bench::bench(&b)? { 0 } else { 1 })
}

fn test() -> Result<i32> {
    cargo(&["test"])?;
    let bin = build_hypervisor()?;
    let probe = build_probe()?;
    install::ensure_qemu()?;
    let img = image::ensure_guest_image()?;
    let uboot = image::ensure_uboot()?;
    let direct = std::env::var(qemu::env::E2E_DIRECT).is_ok_and(|v| v == "1");
    eprintln!(
        "xtask: end-to-end tests {}",
        if direct {
            "WITHOUT the hypervisor (XTASK_E2E_DIRECT=1)"
        } else {
            "under the hypervisor"
        }
    );
    eprintln!("xtask: cargo test -p tests --test e2e -- --ignored --test-threads=1");
    let status = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args([
            "test",
            "-p",
            "tests",
            "--test",
            "e2e",
            "--",
            "--ignored",
            "--test-threads=1",
        ])
        .env(qemu::env::KERNEL, &img.kernel)
        .env(qemu::env::NEW_KERNEL, &img.new_kernel)
        .env(qemu::env::INITRD, &img.initrd)
        .env(qemu::env::HYPERVISOR_BIN, &bin)
        .env(qemu::env::PROBE_BIN, &probe)
        .env(qemu::env::UBOOT, &uboot)
        .env(qemu::env::E2E_DIRECT, if direct { "1" } else { "0" })
        .status()?;
    Ok(if status.success() { 0 } else { 1 })
}
#[cfg(test)]
mod tests {
    use super::*;

    fn cli(a: &[&str]) -> std::result::Result<Cli, clap::Error> {
        parse(std::iter::once("xtask").chain(a.iter().copied()))
    }

    fn run_args(a: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        match cli(&[&["run"], a].concat())?.command {
            Cmd::Run(r) => Ok(r),
            other => panic!("run parsed as {other:?}"),
        }
    }

    fn bench_args(a: &[&str]) -> std::result::Result<BenchArgs, clap::Error> {
        match cli(&[&["bench"], a].concat())?.command {
            Cmd::Bench(b) => Ok(b),
            other => panic!("bench parsed as {other:?}"),
        }
    }

    /// The rendered error (or help) of a command line clap refuses.
    fn refusal(a: &[&str]) -> clap::Error {
        cli(a).expect_err("refused")
    }

    #[test]
    fn a_machine_option_after_a_guest_is_refused_saying_it_is_the_machines() {
        let two = crate::paths::workspace_root()
            .join("configs/two-guests.toml")
            .display()
            .to_string();
        let e = refusal(&["run", "--config", &two, "--guest", "net", "--mem", "1G"]);
        assert!(
            e.to_string()
                .contains("--mem after --guest net: --mem is the machine's, not a guest's"),
            "{e}"
        );
        let r = run_args(&[
            "--config", &two, "--mem", "3G", "--guest", "net", "--exec", "true",
        ]);
        assert_eq!(
            r.expect("--mem before any --guest").guest.mem,
            Some(3 << 30)
        );
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_options_accept_inline_values() {
        let r = run_args(&["--exec=exit 7", "--smp=4"]).expect("valid");
        assert_eq!((r.exec.as_deref(), r.guest.smp), (Some("exit 7"), Some(4)));
    }

    #[test]
    fn a_repeated_option_takes_its_last_value() {
        let r = run_args(&["--smp", "2", "--smp", "3"]).expect("valid");
        assert_eq!(r.guest.smp, Some(3));
    }

    #[test]
    fn commands_without_options_refuse_one() {
        for command in ["build", "image", "test"] {
            let e = refusal(&[command, "--bogus"]);
            assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{command}");
            let msg = e.to_string();
            assert!(msg.contains("unexpected argument '--bogus'"), "{msg}");
            assert!(
                msg.contains(&format!("Usage: cargo xtask {command}\n")),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_stray_word_after_image_is_refused() {
        let e = refusal(&["image", "x"]);
        assert!(e.to_string().contains("unexpected argument 'x'"), "{e}");
    }

    #[test]
    fn a_zero_smp_names_what_is_expected() {
        let e = refusal(&["run", "--smp", "0"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("1 or more"), "{e}");
    }

    #[test]
    fn a_zero_ram_disk_names_what_is_expected() {
        let e = refusal(&["run", "--disk", "ram:0"]);
        assert!(
            e.to_string().contains("a size above 0, e.g. ram:64M"),
            "{e}"
        );
    }

    #[test]
    fn too_little_memory_names_the_minimum() {
        let e = refusal(&["run", "--mem", "1M"]);
        assert!(e.to_string().contains("at least 64M"), "{e}");
    }

    #[test]
    fn disk_options_select_ram_none_or_an_image() {
        let disk = |v: &str| run_args(&["--disk", v]).expect("valid").disk;
        assert_eq!(
            disk("ram:64M"),
            Some(DiskArg(Some(DiskSpec::Ram(64 << 20))))
        );
        assert_eq!(disk("none"), Some(DiskArg(None)));
        assert_eq!(
            disk("d.img"),
            Some(DiskArg(Some(DiskSpec::Image("d.img".into()))))
        );
    }

    #[test]
    fn host_disk_excludes_disk() {
        let e = refusal(&["run", "--host-disk", "h.img", "--disk", "none"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn smmu_flag_asks_for_an_iommu() {
        assert!(run_args(&["--smmu"]).expect("valid").smmu);
        assert!(!run_args(&[]).expect("valid").smmu);
    }

    #[test]
    fn qemu_arg_is_repeatable_and_takes_dashed_values() {
        let r = run_args(&["--qemu-arg", "-s", "--qemu-arg", "-S"]).expect("valid");
        assert_eq!(r.guest.qemu_args, ["-s", "-S"]);
    }

    #[test]
    fn run_defaults_to_an_e1000e_behind_a_root_port_on_user_networking() {
        let r = run_args(&[]).expect("valid");
        let mut cfg = RunConfig::new(Mode::Direct, "Image".into(), "initrd".into());
        r.guest.apply_network(&mut cfg, Nic::E1000e);
        assert_eq!((cfg.nic, cfg.nic_slot), (Nic::E1000e, NicSlot::RootPort));
        assert_eq!(cfg.net, NetBackend::User { forwards: vec![] });
    }

    #[test]
    fn nic_options_select_model_slot_and_forwards() {
        let r = run_args(&[
            "--nic=igb",
            "--nic-slot",
            "switch",
            "--hostfwd",
            "5201:5201",
        ])
        .expect("valid");
        assert_eq!(
            (r.guest.nic, r.guest.nic_slot),
            (Some(Nic::Igb), Some(NicSlot::Switch))
        );
        assert_eq!(
            r.guest.forwards,
            [PortForward {
                host: 5201,
                guest: 5201
            }]
        );
    }

    #[test]
    fn every_listed_nic_model_and_slot_parses() {
        for nic in ["e1000e", "igb", "none"] {
            run_args(&["--nic", nic]).expect(nic);
        }
        for slot in ["bus", "root-port", "switch"] {
            run_args(&["--nic-slot", slot]).expect(slot);
        }
    }

    #[test]
    fn unknown_nic_model_is_an_error_listing_the_models() {
        let e = refusal(&["run", "--nic", "rtl8139"]);
        assert!(
            e.to_string()
                .contains("[possible values: e1000e, igb, none]"),
            "{e}"
        );
    }

    #[test]
    fn initrd_none_means_no_initrd() {
        let r = run_args(&["--kernel", "bare.bin", "--initrd", "none"]).expect("valid");
        assert_eq!(r.guest.initrd, Some(Initrd::None));
        let (k, i) = r.guest.guest_files().expect("no guest image needed");
        assert_eq!((k, i), (PathBuf::from("bare.bin"), None));
    }

    #[test]
    fn kernel_and_initrd_given_need_no_guest_image() {
        let r = run_args(&["--kernel", "k", "--initrd", "i"]).expect("valid");
        let files = r.guest.guest_files().expect("no guest image needed");
        assert_eq!(files, (PathBuf::from("k"), Some(PathBuf::from("i"))));
    }

    #[test]
    fn cmdline_alone_is_taken() {
        let r = run_args(&["--cmdline", "probe=1"]).expect("valid");
        assert_eq!(r.cmdline.as_deref(), Some("probe=1"));
    }

    #[test]
    fn cmdline_with_append_is_refused_saying_why() {
        let e = refusal(&["run", "--cmdline", "a", "--append", "b"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        let msg = e.to_string();
        assert!(msg.contains("--append adds to the default one"), "{msg}");
        assert!(msg.contains("Usage: cargo xtask run"), "{msg}");
    }

    #[test]
    fn cmdline_with_exec_is_refused_saying_why() {
        let e = refusal(&["run", "--cmdline", "a", "--exec", "true"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        assert!(e.to_string().contains("--exec needs our /init"), "{e}");
    }

    #[test]
    fn unknown_run_option_is_an_error() {
        assert_eq!(
            refusal(&["run", "--bogus"]).kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn option_without_value_is_an_error() {
        let e = refusal(&["run", "--timeout"]);
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        assert!(e.to_string().contains("--timeout <SECS>"), "{e}");
    }

    #[test]
    fn bench_defaults_to_three_runs() {
        let b = bench_args(&[]).expect("valid");
        assert_eq!((b.runs, b.icount), (3, false));
    }

    #[test]
    fn bench_takes_the_guest_options() {
        let b = bench_args(&["--runs=5", "--smp", "1", "--nic", "igb", "--append", "x"])
            .expect("valid");
        assert_eq!(b.runs, 5);
        assert_eq!(
            (b.guest.smp, b.guest.nic, b.guest.append),
            (Some(1), Some(Nic::Igb), vec!["x".to_string()])
        );
    }

    #[test]
    fn bench_refuses_options_only_run_takes() {
        for opt in ["--exec", "--disk", "--hv-arg", "--cmdline"] {
            let e = refusal(&["bench", opt, "x"]);
            assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{opt}");
        }
        assert_eq!(
            refusal(&["bench", "--direct"]).kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn bench_scaling_is_a_flag_icount_refuses() {
        assert!(
            bench_args(&["--scaling", "--runs", "1"])
                .expect("valid")
                .scaling
        );
        let e = refusal(&["bench", "--icount", "--scaling"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn bench_icount_refuses_the_timing_options() {
        for extra in [["--runs", "2"], ["--smp", "2"]] {
            let e = refusal(&[&["bench", "--icount"][..], &extra].concat());
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{extra:?}");
        }
    }

    /// The long help of `cargo xtask <command>`.
    fn help(command: &str) -> String {
        let e = refusal(&[command, "--help"]);
        assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{command}");
        e.to_string()
    }

    #[test]
    fn every_command_has_help_saying_what_it_does() {
        for (command, says) in [
            ("build", "Build the hypervisor and the probe guest"),
            ("image", "kernel-new:"),
            (
                "run",
                "Boot the guests a TOML file describes under the hypervisor",
            ),
            ("test", "XTASK_E2E_DIRECT=1"),
            ("bench", "ratio hypervisor / direct"),
            (
                "uboot-script",
                "the commands `cargo xtask run --uboot --config FILE` types",
            ),
        ] {
            let h = help(command);
            assert!(h.contains(says), "{command}: {h}");
            assert!(h.contains(&format!("Usage: cargo xtask {command}")), "{h}");
        }
    }

    #[test]
    fn top_level_help_lists_every_command() {
        let e = refusal(&["--help"]);
        let h = e.to_string();
        for command in ["build", "image", "run", "test", "bench", "uboot-script"] {
            assert!(h.contains(&format!("\n  {command} ")), "{command}: {h}");
        }
    }

    /// A checked-in file's path.
    fn checked_in(name: &str) -> String {
        paths::workspace_root()
            .join("configs")
            .join(name)
            .display()
            .to_string()
    }

    #[test]
    fn run_reads_the_main_job_without_config() {
        let c = run_args(&[]).expect("valid").config().expect("main.toml");
        assert!(
            c.path.ends_with(config::MAIN_CONFIG),
            "{}",
            c.path.display()
        );
        assert!(c.single_style());
    }

    #[test]
    fn run_options_change_the_files_one_guest() {
        let r = run_args(&["--nic", "igb", "--disk", "ram:64M", "--mem", "1G"]).expect("valid");
        let c = r.config().expect("valid");
        assert_eq!(c.guests[0].nic, Nic::Igb);
        assert_eq!(c.guests[0].disks, [DiskSpec::Ram(64 << 20)]);
        assert_eq!(c.machine.memory, 1 << 30);
    }

    #[test]
    fn a_guest_option_for_two_guests_without_guest_is_refused() {
        let two = checked_in("two-guests.toml");
        let r = run_args(&["--config", &two, "--nic", "igb"]).expect("valid");
        let e = r.config().expect_err("which guest?");
        assert!(e.0.ends_with("--nic apply to one guest and the file has 2 (net, blk): say which with --guest NAME before them"), "{e}");
    }

    #[test]
    fn a_guest_option_before_guest_is_not_that_guests() {
        let two = checked_in("two-guests.toml");
        let r = run_args(&["--config", &two, "--nic", "igb", "--guest", "blk"]).expect("valid");
        let e = r.config().expect_err("--nic is before --guest");
        assert!(e.0.contains("--nic apply to one guest"), "{e}");
    }

    /// `cargo xtask run ARGS` on the two-guest file: each guest's command.
    fn commands_of_two_guests(args: &[&str]) -> [Option<String>; 2] {
        let two = checked_in("two-guests.toml");
        let c = run_args(&[&["--config", two.as_str()], args].concat())
            .expect("valid")
            .checked_config()
            .unwrap_or_else(|e| panic!("{e}"));
        [c.guests[0].exec.clone(), c.guests[1].exec.clone()]
    }

    #[test]
    fn guest_names_the_guest_run_options_change() {
        let [net, blk] = commands_of_two_guests(&[
            "--guest", "blk", "--exec", "lspci", "--guest", "net", "--exec", "true",
        ]);
        assert_eq!(
            (net.as_deref(), blk.as_deref()),
            (Some("true"), Some("lspci"))
        );
    }

    #[test]
    fn exec_without_guest_is_every_guests_command() {
        let [net, blk] = commands_of_two_guests(&["--exec", "lspci"]);
        assert_eq!(
            (net.as_deref(), blk.as_deref()),
            (Some("lspci"), Some("lspci"))
        );
    }

    #[test]
    fn exec_before_any_guest_is_the_command_of_the_guests_without_one() {
        let [net, blk] =
            commands_of_two_guests(&["--exec", "true", "--guest", "net", "--exec", "lspci"]);
        assert_eq!(
            (net.as_deref(), blk.as_deref()),
            (Some("lspci"), Some("true"))
        );
    }

    #[test]
    fn with_one_guest_its_guest_section_overrides_the_options_before() {
        let r = run_args(&[
            "--exec", "true", "--guest", "guest", "--exec", "lspci", "--nic", "igb",
        ])
        .expect("valid");
        let c = r.checked_config().expect("valid");
        assert_eq!(
            (c.guests[0].exec.as_deref(), c.guests[0].nic),
            (Some("lspci"), Nic::Igb)
        );
    }

    #[test]
    fn a_command_for_some_guests_only_is_refused_naming_those_without_and_how_to_give_one() {
        let two = checked_in("two-guests.toml");
        let r = run_args(&["--config", &two, "--guest", "net", "--exec", "lspci"]).expect("valid");
        let e = r.checked_config().expect_err("blk has no command").0;
        for says in [
            "guest blk has no command and guest net has one",
            "--guest blk --exec CMD",
            "exec = \"...\" in its [[guest]] table",
            "--exec CMD before any --guest",
        ] {
            assert!(e.contains(says), "{says}: {e}");
        }
    }

    #[test]
    fn no_command_for_any_guest_is_an_interactive_run() {
        assert_eq!(commands_of_two_guests(&[]), [None, None]);
    }

    #[test]
    fn each_guest_takes_the_options_after_its_guest() {
        let two = checked_in("two-guests.toml");
        let r = run_args(&[
            "--config",
            &two,
            "--mem",
            "1G",
            "--exec",
            "true",
            "--guest",
            "net",
            "--nic",
            "igb",
            "--append",
            "a=1",
            "--guest=blk",
            "--disk",
            "ram:64M",
        ])
        .expect("valid");
        let c = r.checked_config().expect("valid");
        let (net, blk) = (&c.guests[0], &c.guests[1]);
        assert_eq!((net.nic, net.append.as_str()), (Nic::Igb, "a=1"));
        assert_eq!((blk.nic, blk.append.as_str()), (Nic::None, ""));
        assert_eq!(blk.disks, [DiskSpec::Ram(64 << 20)]);
        assert_eq!(net.disks, []);
        assert_eq!(
            c.machine.memory,
            1 << 30,
            "--mem before any --guest is the machine's"
        );
    }

    #[test]
    fn a_value_that_reads_as_guest_is_the_options_value() {
        let two = checked_in("two-guests.toml");
        let r = run_args(&[
            "--config",
            &two,
            "--exec",
            "true",
            "--guest",
            "blk",
            "--append",
            "--guest",
            "--exec=--guest",
        ])
        .expect("valid");
        let c = r.checked_config().expect("valid");
        assert_eq!(c.guests[1].append, "--guest");
        assert_eq!(c.guests[1].exec.as_deref(), Some("--guest"));
        assert_eq!(c.guests[0].exec.as_deref(), Some("true"));
    }

    #[test]
    fn cmdline_with_exec_is_refused_within_one_guests_options_only() {
        let two = checked_in("two-guests.toml");
        run_args(&[
            "--config",
            &two,
            "--exec",
            "true",
            "--guest",
            "net",
            "--cmdline",
            "x",
        ])
        .expect("--exec is for the other guests");
        let e = refusal(&[
            "run",
            "--config",
            &two,
            "--guest",
            "net",
            "--cmdline",
            "x",
            "--exec",
            "true",
        ]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn an_unknown_guest_name_is_refused_listing_the_guests() {
        let two = checked_in("two-guests.toml");
        let e = run_args(&["--config", &two, "--guest", "web", "--exec", "true"])
            .expect("valid")
            .checked_config()
            .expect_err("no guest web");
        assert!(
            e.0.ends_with("--guest web: no such guest (its guests: net, blk)"),
            "{e}"
        );
    }

    #[test]
    fn direct_with_two_guests_is_refused() {
        let two = checked_in("two-guests.toml");
        let e = run_args(&["--config", &two, "--direct"])
            .expect("valid")
            .config()
            .expect_err("two guests");
        assert!(
            e.0.contains("--direct boots one guest without the hypervisor, and the file has 2"),
            "{e}"
        );
    }

    #[test]
    fn host_disk_with_guest_nodes_is_refused() {
        let two = checked_in("two-guests.toml");
        let e = run_args(&["--config", &two, "--host-disk", "h.img"])
            .expect("valid")
            .config()
            .expect_err("guest nodes");
        assert!(
            e.0.contains("--host-disk tests the host-disk driver beside a single guest"),
            "{e}"
        );
    }

    #[test]
    fn uboot_script_takes_a_file() {
        match cli(&["uboot-script", "configs/two-guests.toml"])
            .expect("valid")
            .command
        {
            Cmd::UbootScript { file } => assert_eq!(file, PathBuf::from("configs/two-guests.toml")),
            other => panic!("parsed as {other:?}"),
        }
        assert_eq!(
            refusal(&["uboot-script"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    /// The `--options` named in the first column of the README table under `heading`.
    fn readme_options(heading: &str) -> Vec<String> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split(heading)
            .nth(1)
            .expect("README section")
            .split("\n#")
            .next()
            .unwrap_or_default();
        let mut opts: Vec<String> = section
            .lines()
            .filter(|l| l.starts_with("| `--"))
            .filter_map(|l| l.split(" | ").next())
            .flat_map(|cell| cell.split('`'))
            .filter_map(|w| w.strip_prefix("--"))
            .map(|w| w.split([' ', '=']).next().unwrap_or(w).to_string())
            .collect();
        opts.sort();
        opts.dedup();
        opts
    }

    #[test]
    fn run_help_lists_exactly_the_options_of_the_readme_table() {
        let h = help("run");
        let mut in_help: Vec<String> = h
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .map(|w| w.split([' ', '=']).next().unwrap_or(w).to_string())
            .filter(|w| w != "help")
            .collect();
        in_help.sort();
        assert_eq!(in_help, readme_options("### `cargo xtask run`"));
    }
}
