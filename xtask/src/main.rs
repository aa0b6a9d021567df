//! `cargo xtask`: build, assemble the guest image, run under QEMU, test.
//!
//! ```text
//! cargo xtask build            the hypervisor, as ELF and flat binary
//! cargo xtask image            the guest kernel and initramfs (cached)
//! cargo xtask run [OPTIONS]    boot the guest under the hypervisor (or --direct)
//! cargo xtask test             every test, then the end-to-end boots
//! ```

use std::path::PathBuf;
use std::process::{exit, Command};
use std::time::Duration;

use xtask::error::Context;
use xtask::net::{NetBackend, Nic, NicSlot, PortForward};
use xtask::qemu::{self, Mode, RunConfig, Verdict};
use xtask::{flat, image, install, paths, Error, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build   build the hypervisor and the probe guest (aarch64-unknown-none-softfloat, release)
          and their flat binaries
  image   assemble (or reuse the cached) guest kernel and initramfs
  run     boot the guest under the hypervisor under QEMU
  test    cargo test, build the hypervisor, then the end-to-end boots
  bench   time guest workloads directly on QEMU and under the hypervisor, same
          guest, one run; prints medians and the ratio hypervisor/direct
          (--runs N, default 3; --smp/--mem/--kernel/--initrd/--append/--qemu-arg;
          --nic/--nic-slot/--hostfwd, default --nic none: no workload uses the network)
          --icount: instead, instructions per trapped operation (hvc, GICD, PL011,
          ECAM read/write, virtio) under QEMU -icount shift=0, with 2 and 31 root
          ports, checked against bench/icount-thresholds.toml (exit 1 above a limit)

run options:
  --exec CMD        run CMD in the guest (sh -c), print its output, exit with its status
  --direct          boot the guest directly on QEMU, without the hypervisor
  --uboot           as on a board: U-Boot (the distribution's qemu_arm64 build)
                    booti's the hypervisor with the modules described in the DT
  --kernel PATH     guest kernel: an arm64 Image, or a raw image without its
                    header, loaded at RAM + 0x80000 as QEMU's -kernel does
                    (default: the Image from the guest image)
  --initrd PATH     guest initramfs (default: from the guest image); `none`: no initrd
  --append ARGS     added to the guest kernel command line (after
                    `console=ttyAMA0 panic=-1`)
  --cmdline ARGS    the whole guest command line instead (for guests other than
                    our Linux image); excludes --append and --exec
  --smp N           CPUs (default 2)
  --mem SIZE        RAM, e.g. 2G (default 2G). Under the hypervisor the guest gets
                    what its image, heap, the DTB and the kernel module leave
                    (the initrd is mapped into the guest); too little is refused
  --qemu-arg ARG    extra QEMU argument (repeatable)
  --hv-arg ARG      added to the hypervisor's own command line, e.g. root-ports=31
                    or loglevel=debug (repeatable)
  --smmu            give the machine an SMMUv3 (virt iommu=smmuv3, stages 1 and 2)
  --nic MODEL       host NIC: e1000e (default), igb or none; the guest's /init gives
                    it 10.0.2.15/24 via 10.0.2.2 (QEMU user networking, restrict=on:
                    only 10.0.2.2, which is QEMU, answers). Under the hypervisor it
                    is passed through (pci-passthrough=, QEMU iommu=smmuv3)
  --nic-slot WHERE  where the NIC sits on the host's PCIe: bus (pcie.0, 00:02.0),
                    root-port (default; 01:00.0), switch (root port, upstream and
                    downstream switch ports; 03:00.0)
  --hostfwd H:G     forward TCP 127.0.0.1:H on the host to guest port G (repeatable)
  --disk DISK       the guest's virtio-blk (/dev/vda), emulated by the hypervisor
                    behind its own root port: IMG (a raw image file, driven
                    zero-copy through a host virtio-blk; default: disk.img in the
                    cache directory, 256 MiB, created once and kept), ram:SIZE
                    (in host RAM, lost at power-off) or none. With --direct an
                    image is the guest's own virtio-blk-pci, ram: gives none
  --host-disk IMG   a raw image as a host virtio-blk at 0000:00:05.0 that the
                    hypervisor drives itself (host-disk=, host-disk-selftest; the
                    guest does not see it; QEMU iommu=smmuv3); with --direct,
                    the guest's Linux drives it
  --timeout SECS    kill QEMU after SECS (default: none interactive, 600 with --exec)

environment:
  XTASK_E2E_DIRECT=1  `test` boots the end-to-end guests without the hypervisor";

/// Size of the disk image `cargo xtask run` creates when it has none.
const DEFAULT_DISK_BYTES: u64 = 256 << 20;

/// The guest's disk from `--disk` (`IMG`, `ram:SIZE`, `none`); without it, the
/// image `disk.img` in the cache directory, created (sparse, zeroed) the first
/// time and kept between runs.
fn choose_disk(arg: Option<&str>, cfg: &mut RunConfig) -> Result<()> {
    let img = match arg {
        Some("none") => {
            cfg.disk = qemu::Disk::None;
            return Ok(());
        }
        Some(a) if a.starts_with("ram:") => {
            cfg.disk = qemu::Disk::parse(a)?;
            return Ok(());
        }
        Some(path) => {
            let p = PathBuf::from(path);
            if !p.is_file() {
                return Err(Error(format!("--disk {path}: no such image file")));
            }
            p
        }
        None => {
            let p = paths::cache_dir().join("disk.img");
            if !p.exists() {
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
            p
        }
    };
    cfg.host_disk = Some(img);
    cfg.disk = qemu::Disk::Host;
    Ok(())
}

/// Default timeout of a `--exec` run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(600);
/// Hypervisor target triple.
/// Soft-float: the hypervisor must never touch the FP/SIMD/SVE registers, which hold
/// the guest's state across every exit.
const TARGET: &str = "aarch64-unknown-none-softfloat";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            1
        }
    };
    exit(code);
}

fn dispatch(args: &[String]) -> Result<i32> {
    if args
        .iter()
        .skip(1)
        .any(|a| matches!(a.as_str(), "-h" | "--help"))
    {
        println!("{USAGE}");
        return Ok(0);
    }
    if let (Some("build" | "image" | "test"), Some(extra)) =
        (args.first().map(String::as_str), args.get(1))
    {
        return Err(Error(format!(
            "`cargo xtask {}` takes no options, not {extra:?} (see --help)",
            args[0]
        )));
    }
    match args.first().map(String::as_str) {
        Some("build") => build_hypervisor().and_then(|_| build_probe()).map(|_| 0),
        Some("image") => image::ensure_guest_image().map(|img| {
            println!("kernel: {}", img.kernel.display());
            println!("initrd: {}", img.initrd.display());
            println!("kernel-new: {}", img.new_kernel.display());
            0
        }),
        Some("run") => run(&args[1..]),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(0)
        }
        Some(other) => {
            eprintln!("xtask: unknown command {other:?}\n{USAGE}");
            Ok(2)
        }
        None => {
            eprintln!("{USAGE}");
            Ok(2)
        }
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

#[derive(Default)]
struct RunArgs {
    exec: Option<String>,
    direct: bool,
    uboot: bool,
    smmu: bool,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    no_initrd: bool,
    append: Vec<String>,
    cmdline: Option<String>,
    smp: Option<u32>,
    mem: Option<u64>,
    qemu_args: Vec<String>,
    timeout: Option<Duration>,
    nic: Option<Nic>,
    nic_slot: Option<NicSlot>,
    forwards: Vec<PortForward>,
    disk: Option<String>,
    host_disk: Option<PathBuf>,
    hv_args: Vec<String>,
}

impl RunArgs {
    /// Sets `cfg`'s NIC, its slot and user networking with the forwards;
    /// `default_nic` when `--nic` was not given.
    fn apply_network(&self, cfg: &mut RunConfig, default_nic: Nic) {
        cfg.nic = self.nic.unwrap_or(default_nic);
        cfg.nic_slot = self.nic_slot.unwrap_or(cfg.nic_slot);
        cfg.net = NetBackend::User {
            forwards: self.forwards.clone(),
        };
    }
}

fn parse_run_args(args: &[String]) -> Result<RunArgs> {
    let mut r = RunArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if name == "--direct" {
            r.direct = true;
            continue;
        }
        if name == "--uboot" {
            r.uboot = true;
            continue;
        }
        if name == "--smmu" {
            r.smmu = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| Error(format!("{name} needs a value")))
        };
        match name {
            "--exec" => r.exec = Some(value()?),
            "--kernel" => r.kernel = Some(value()?.into()),
            "--initrd" => match value()?.as_str() {
                "none" => (r.initrd, r.no_initrd) = (None, true),
                path => (r.initrd, r.no_initrd) = (Some(path.into()), false),
            },
            "--append" => r.append.push(value()?),
            "--cmdline" => r.cmdline = Some(value()?),
            "--smp" => {
                let v = value()?;
                r.smp = Some(v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    Error(format!("bad --smp {v:?} (a number of CPUs, 1 or more)"))
                })?);
            }
            "--mem" => r.mem = Some(qemu::parse_mem(&value()?)?),
            "--qemu-arg" => r.qemu_args.push(value()?),
            "--hv-arg" => r.hv_args.push(value()?),
            "--nic" => r.nic = Some(Nic::parse(&value()?)?),
            "--nic-slot" => r.nic_slot = Some(NicSlot::parse(&value()?)?),
            "--hostfwd" => r.forwards.push(PortForward::parse(&value()?)?),
            "--disk" => r.disk = Some(value()?),
            "--host-disk" => r.host_disk = Some(value()?.into()),
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v.parse().map_err(|_| Error(format!("bad --timeout {v}")))?;
                r.timeout = Some(Duration::from_secs(secs));
            }
            _ => return Err(Error(format!("unknown option {arg}\n{USAGE}"))),
        }
    }
    if r.cmdline.is_some() && !r.append.is_empty() {
        return Err(Error::msg(
            "--cmdline replaces the whole guest command line and --append adds to the default one: give one of them",
        ));
    }
    if r.cmdline.is_some() && r.exec.is_some() {
        return Err(Error::msg(
            "--exec needs our /init and the default command line; --cmdline replaces that line: give one of them",
        ));
    }
    Ok(r)
}

impl RunArgs {
    /// The guest kernel and initrd: the options', else the guest image's
    /// (built only when one of them is needed).
    fn guest_files(&self) -> Result<(PathBuf, Option<PathBuf>)> {
        let initrd_needed = !self.no_initrd && self.initrd.is_none();
        if self.kernel.is_some() && !initrd_needed {
            return Ok((self.kernel.clone().unwrap_or_default(), self.initrd.clone()));
        }
        let img = image::ensure_guest_image()?;
        let initrd = if self.no_initrd {
            None
        } else {
            Some(self.initrd.clone().unwrap_or(img.initrd))
        };
        Ok((self.kernel.clone().unwrap_or(img.kernel), initrd))
    }

    /// Sets `cfg`'s initrd and command line from the options.
    fn apply_guest(&self, cfg: &mut RunConfig, initrd: Option<PathBuf>) {
        cfg.initrd = initrd;
        cfg.append = self.append.join(" ");
        cfg.cmdline = self.cmdline.clone();
    }
}

fn run(args: &[String]) -> Result<i32> {
    let a = parse_run_args(args)?;
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
    let (kernel, initrd) = a.guest_files()?;
    let mut cfg = RunConfig::new(mode, kernel, PathBuf::new());
    a.apply_guest(&mut cfg, initrd);
    cfg.smp = a.smp.unwrap_or(cfg.smp);
    cfg.mem_bytes = a.mem.unwrap_or(cfg.mem_bytes);
    a.apply_network(&mut cfg, Nic::E1000e);
    cfg.qemu_args = a.qemu_args;
    cfg.iommu = a.smmu;
    if let Some(img) = a.host_disk.clone() {
        if a.disk.is_some() {
            return Err(Error::msg("--host-disk and --disk exclude each other"));
        }
        cfg.hypervisor_args = "host-disk-selftest".into();
        cfg.host_disk = Some(img);
    } else {
        choose_disk(a.disk.as_deref(), &mut cfg)?;
    }
    for h in &a.hv_args {
        cfg.hypervisor_args = format!("{} {h}", cfg.hypervisor_args).trim().to_string();
    }
    cfg.interactive = a.exec.is_none();
    cfg.timeout = a.timeout.or(if a.exec.is_some() {
        Some(EXEC_TIMEOUT)
    } else {
        None
    });
    cfg.exec = a.exec;
    if cfg.interactive && matches!(cfg.mode, Mode::UBoot { .. }) {
        // The console is the user's: print the boot script to paste at U-Boot's prompt.
        eprintln!("xtask: at U-Boot's prompt, type:");
        for l in qemu::uboot_script_for(&cfg)?.split('\r') {
            if !l.is_empty() {
                eprintln!("  {l}");
            }
        }
    }
    let outcome = qemu::run(&cfg)?;
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
            eprintln!("xtask: the guest kernel panicked:");
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

fn bench(args: &[String]) -> Result<i32> {
    let mut runs = 3usize;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--icount" {
            let hv = build_hypervisor()?;
            let probe = build_probe()?;
            install::ensure_qemu()?;
            return Ok(if xtask::icount::bench(&hv, &probe)? {
                0
            } else {
                1
            });
        }
        if let Some(v) = a.strip_prefix("--runs=") {
            runs = v.parse().map_err(|_| Error(format!("bad --runs {v}")))?;
        } else if a == "--runs" {
            let v = it
                .next()
                .ok_or_else(|| Error::msg("--runs needs a value"))?;
            runs = v.parse().map_err(|_| Error(format!("bad --runs {v}")))?;
        } else {
            rest.push(a.clone());
        }
    }
    let a = parse_run_args(&rest)?;
    let hv = build_hypervisor()?;
    install::ensure_qemu()?;
    let (kernel, initrd) = a.guest_files()?;
    let mut cfg = RunConfig::new(Mode::Direct, kernel, PathBuf::new());
    a.apply_guest(&mut cfg, initrd);
    cfg.smp = a.smp.unwrap_or(cfg.smp);
    cfg.mem_bytes = a.mem.unwrap_or(cfg.mem_bytes);
    a.apply_network(&mut cfg, Nic::None);
    cfg.qemu_args = a.qemu_args;
    xtask::bench::bench(&cfg, hv, runs.max(1))?;
    Ok(0)
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

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn run_options_accept_inline_values() {
        let r = parse_run_args(&args(&["--exec=exit 7", "--smp=4"])).expect("valid");
        assert_eq!((r.exec.as_deref(), r.smp), (Some("exit 7"), Some(4)));
    }

    #[test]
    fn commands_without_options_refuse_one() {
        let e = dispatch(&args(&["build", "--bogus"])).expect_err("refused");
        assert!(e.0.contains("takes no options, not \"--bogus\""), "{e}");
        let e = dispatch(&args(&["image", "x"])).expect_err("refused");
        assert!(e.0.contains("`cargo xtask image` takes no options"), "{e}");
    }

    #[test]
    fn a_zero_smp_names_what_is_expected() {
        let e = parse_run_args(&args(&["--smp", "0"]))
            .err()
            .expect("refused");
        assert!(e.0.contains("1 or more"), "{e}");
    }

    #[test]
    fn smmu_flag_asks_for_an_iommu() {
        assert!(parse_run_args(&args(&["--smmu"])).expect("valid").smmu);
        assert!(!parse_run_args(&args(&[])).expect("valid").smmu);
    }

    #[test]
    fn qemu_arg_is_repeatable() {
        let r = parse_run_args(&args(&["--qemu-arg", "-s", "--qemu-arg", "-S"])).expect("valid");
        assert_eq!(r.qemu_args, args(&["-s", "-S"]));
    }

    #[test]
    fn run_defaults_to_an_e1000e_behind_a_root_port_on_user_networking() {
        let r = parse_run_args(&[]).expect("valid");
        let mut cfg = RunConfig::new(Mode::Direct, "Image".into(), "initrd".into());
        r.apply_network(&mut cfg, Nic::E1000e);
        assert_eq!((cfg.nic, cfg.nic_slot), (Nic::E1000e, NicSlot::RootPort));
        assert_eq!(cfg.net, NetBackend::User { forwards: vec![] });
    }

    #[test]
    fn nic_options_select_model_slot_and_forwards() {
        let r = parse_run_args(&args(&[
            "--nic=igb",
            "--nic-slot",
            "switch",
            "--hostfwd",
            "5201:5201",
        ]))
        .expect("valid");
        assert_eq!((r.nic, r.nic_slot), (Some(Nic::Igb), Some(NicSlot::Switch)));
        assert_eq!(
            r.forwards,
            [PortForward {
                host: 5201,
                guest: 5201
            }]
        );
    }

    #[test]
    fn unknown_nic_model_is_an_error() {
        assert!(parse_run_args(&args(&["--nic", "rtl8139"])).is_err());
    }

    #[test]
    fn initrd_none_means_no_initrd() {
        let r =
            parse_run_args(&args(&["--kernel", "bare.bin", "--initrd", "none"])).expect("valid");
        assert!(r.no_initrd && r.initrd.is_none());
        let (k, i) = r.guest_files().expect("no guest image needed");
        assert_eq!((k, i), (PathBuf::from("bare.bin"), None));
    }

    #[test]
    fn cmdline_excludes_append_and_exec() {
        let r = parse_run_args(&args(&["--cmdline", "probe=1"])).expect("valid");
        assert_eq!(r.cmdline.as_deref(), Some("probe=1"));
        assert!(parse_run_args(&args(&["--cmdline", "a", "--append", "b"])).is_err());
        assert!(parse_run_args(&args(&["--cmdline", "a", "--exec", "true"])).is_err());
    }

    #[test]
    fn unknown_run_option_is_an_error() {
        assert!(parse_run_args(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn option_without_value_is_an_error() {
        assert!(parse_run_args(&args(&["--timeout"])).is_err());
    }
}
