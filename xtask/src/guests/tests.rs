use super::*;
use crate::config::Overrides;
use crate::testutil::{image_head, TempDir};
use platform::guests::ResetAction;

/// The guest image's sizes (Debian 6.1 `Image`, our initramfs).
const KERNEL_LEN: u64 = 32_956_352;
const KERNEL_IMAGE_SIZE: u64 = 0x201_0000;
const INITRD_LEN: u64 = 92_513_332;
/// The hypervisor as `cargo xtask build` makes it: text_offset 0, 12.4 MiB with BSS.
const HV_IMAGE_SIZE: u64 = 0xc5_a000;
const HV_LEN: u64 = 352_912;

/// Files shaped like the boot's: the hypervisor, the project's kernel and
/// initrd, the default disk image.
struct Files {
    dir: TempDir,
    hv: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    disk: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir = TempDir::new(name);
        let hv = dir.file_with("hypervisor.bin", &image_head(0, HV_IMAGE_SIZE), HV_LEN);
        let kernel = dir.file_with("Image", &image_head(0, KERNEL_IMAGE_SIZE), KERNEL_LEN);
        let initrd = dir.file_with("initramfs.cpio", b"070701", INITRD_LEN);
        let disk = dir.file("disk.img", 256 << 20);
        Files {
            dir,
            hv,
            kernel,
            initrd,
            disk,
        }
    }

    /// `config`'s plan in `mode`, the defaults from these files.
    fn plan(&self, config: &Config, mode: &Mode) -> Result<Plan> {
        let files = config.files(|| Ok((self.kernel.clone(), self.initrd.clone())))?;
        plan(config, &files, &self.disk, mode)
    }

    fn under_qemu(&self) -> Mode {
        Mode::Hypervisor(self.hv.clone())
    }

    fn under_uboot(&self) -> Mode {
        Mode::UBoot {
            bios: self.dir.0.join("u-boot.bin"),
            hypervisor: self.hv.clone(),
        }
    }
}

fn checked_in(name: &str) -> Config {
    Config::load(&crate::paths::workspace_root().join("configs").join(name))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn parse(text: &str) -> Config {
    Config::parse(Path::new("cfg/x.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

const M: u64 = 1 << 20;

/// What two-guests.toml says, where xtask puts it: the initrd right after
/// the hypervisor, the kernel after QEMU's DTB at 0x4800_0000, `net`'s
/// 512 MiB after the kernel, `blk`'s after `net`'s.
fn two_guests_expected(f: &Files) -> Vec<GuestConfig> {
    let cmdline = crate::qemu::BASE_BOOTARGS.to_string();
    let kernel = MemRange::new(Pa(0x4820_0000), KERNEL_LEN);
    let initrd = MemRange::new(Pa(0x4100_0000), INITRD_LEN);
    let _ = f;
    vec![
        GuestConfig {
            name: "net".into(),
            cpus: vec![Cpu { mpidr: 0 }],
            memory: GuestMemory::Static(vec![MemRange::new(Pa(0x4a20_0000), 512 * M)]),
            kernel,
            ramdisk: Some(initrd),
            bootargs: Some(cmdline.clone()),
            devices: vec!["0000:01:00.0".parse().expect("sbdf")],
            disks: vec![],
            console: false,
            segment: 1,
            root_ports: None,
            on_reset: ResetAction::Stop,
        },
        GuestConfig {
            name: "blk".into(),
            cpus: vec![Cpu { mpidr: 1 }],
            memory: GuestMemory::Static(vec![MemRange::new(Pa(0x6a20_0000), 512 * M)]),
            kernel,
            ramdisk: Some(initrd),
            bootargs: Some(cmdline),
            devices: vec![],
            disks: vec![DiskBackend::Host("0000:00:05.0".parse().expect("sbdf"))],
            console: false,
            segment: 2,
            root_ports: None,
            on_reset: ResetAction::Stop,
        },
    ]
}

#[test]
fn two_guests_toml_places_each_guest_apart_from_the_modules_and_the_other() {
    let f = Files::new("two-place");
    let p = f
        .plan(&checked_in("two-guests.toml"), &f.under_qemu())
        .expect("plan");
    assert_eq!(p.guests, two_guests_expected(&f));
    // One copy of the kernel and of the initrd, shared.
    assert_eq!(
        p.modules,
        [
            Module {
                file: f.kernel.clone(),
                at: 0x4820_0000,
                len: KERNEL_LEN
            },
            Module {
                file: f.initrd.clone(),
                at: 0x4100_0000,
                len: INITRD_LEN
            },
        ]
    );
}

#[test]
fn two_guests_toml_passes_what_the_hypervisor_checks() {
    let f = Files::new("two-valid");
    let p = f
        .plan(&checked_in("two-guests.toml"), &f.under_qemu())
        .expect("plan");
    p.validate().expect("valid");
}

#[test]
fn two_guests_toml_gives_qemu_a_passed_through_nic_and_a_host_disk() {
    let f = Files::new("two-args");
    let p = f
        .plan(&checked_in("two-guests.toml"), &f.under_qemu())
        .expect("plan");
    let a = p.qemu_args(Some(Path::new("x.dtb")));
    let shown = a.join(" ");
    let want = format!(
        "-M virt,gic-version=3,virtualization=on,iommu=smmuv3 -global arm-smmuv3.stage=nested \
         -cpu max,pauth-impdef=on -smp 2 -m 2048M -nographic -no-reboot \
         -semihosting-config enable=on,target=native -kernel {hv} -append semihosting -dtb x.dtb \
         -device loader,file={k},addr=0x48200000,force-raw=on \
         -device loader,file={i},addr=0x41000000,force-raw=on \
         -netdev user,id=net0,restrict=on \
         -device pcie-root-port,id=nic_rp,bus=pcie.0,addr=0x2,chassis=1,slot=1 \
         -device e1000e,netdev=net0,mac=52:54:00:12:34:56,bus=nic_rp \
         -drive file={d},if=none,id=hostdisk0,format=raw \
         -device virtio-blk-pci,drive=hostdisk0,bus=pcie.0,addr=0x5",
        hv = f.hv.display(),
        k = f.kernel.display(),
        i = f.initrd.display(),
        d = f.disk.display(),
    );
    assert_eq!(shown, want);
}

#[test]
fn main_toml_boots_in_the_single_guest_style_with_guest_loader_modules() {
    let f = Files::new("main-args");
    let c = checked_in("main.toml");
    let files = c
        .files(|| Ok((f.kernel.clone(), f.initrd.clone())))
        .expect("files");
    let cfg = c
        .run_config(0, f.under_qemu(), &files[0], &f.disk)
        .expect("run config");
    let a = crate::qemu::qemu_args(&cfg).expect("args");
    let at = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].as_str());
    assert_eq!(at("-smp"), Some("2"));
    assert_eq!(at("-m"), Some("2048M"));
    assert_eq!(
        at("-append"),
        Some("semihosting virtio-blk=host pci-passthrough=0000:01:00.0 host-disk=0000:00:05.0")
    );
    assert!(!a.iter().any(|x| x == "-dtb"), "{a:?}");
    let loaders: Vec<&String> = a
        .iter()
        .filter(|x| x.starts_with("guest-loader,"))
        .collect();
    assert_eq!(
        loaders,
        [
            &format!(
                "guest-loader,addr=0x48200000,kernel={},bootargs=console=ttyAMA0 panic=-1",
                f.kernel.display()
            ),
            &format!("guest-loader,addr=0x41000000,initrd={}", f.initrd.display()),
        ]
    );
}

#[test]
fn counted_cpus_skip_the_ones_another_guest_lists() {
    let f = Files::new("cpus");
    let c = parse(
        "[[guest]]\nname = \"a\"\ncpus = 2\nmemory = \"512M\"\n[[guest]]\nname = \"b\"\ncpus = [0x1]\nmemory = \"512M\"\nsegment = 2\n",
    );
    let p = f.plan(&c, &f.under_qemu()).expect("plan");
    assert_eq!(p.smp, 3);
    let mpidrs = |g: &GuestConfig| g.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>();
    assert_eq!(
        (mpidrs(&p.guests[0]), mpidrs(&p.guests[1])),
        (vec![0, 2], vec![1])
    );
}

#[test]
fn cpus_past_the_seventeenth_are_in_the_next_cluster() {
    assert_eq!(
        (virt_mpidr(15), virt_mpidr(16), virt_mpidr(17)),
        (0xf, 0x100, 0x101)
    );
    assert_eq!(virt_index(0x101), Some(17));
    assert_eq!(virt_index(0x10), None);
}

#[test]
fn more_cpus_than_the_machine_has_are_refused() {
    let f = Files::new("smp");
    let c = parse("[machine]\ncpus = 1\n[[guest]]\nname = \"a\"\ncpus = 1\nmemory = \"512M\"\n[[guest]]\nname = \"b\"\ncpus = 1\nmemory = \"512M\"\nsegment = 2\n");
    let e = f.plan(&c, &f.under_qemu()).expect_err("2 CPUs on 1").0;
    assert_eq!(
        e,
        "cfg/x.toml:2:8: [machine]: cpus: 1, but the guests need 2 (a: 1, b: 1)"
    );
}

#[test]
fn a_listed_cpu_virt_does_not_have_is_refused() {
    let f = Files::new("mpidr");
    let c = parse("[[guest]]\nname = \"a\"\ncpus = [0x10]\nmemory = \"512M\"\n");
    let e = f.plan(&c, &f.under_qemu()).expect_err("no such CPU").0;
    assert!(
        e.starts_with("cfg/x.toml:3:8: guest a: cpus: 0x10 is no CPU of QEMU's virt"),
        "{e}"
    );
}

#[test]
fn memory_too_small_for_the_kernel_and_initrd_names_the_need() {
    let f = Files::new("small");
    let c = parse("[[guest]]\nname = \"a\"\nmemory = \"256M\"\n");
    let e = f.plan(&c, &f.under_qemu()).expect_err("too small").0;
    assert!(e.starts_with("cfg/x.toml:3:10: guest a: memory: 256 MiB is too small: its kernel, initrd (88 MiB, packed and unpacked), its DTB and 176 MiB to run need 392 MiB"), "{e}");
}

#[test]
fn guests_larger_than_the_machines_ram_are_refused() {
    let f = Files::new("fit");
    let c = parse("[machine]\nmemory = \"1G\"\n[[guest]]\nname = \"a\"\nmemory = \"512M\"\n[[guest]]\nname = \"b\"\nmemory = \"512M\"\nsegment = 2\n");
    let e = f.plan(&c, &f.under_qemu()).expect_err("does not fit").0;
    assert!(
        e.starts_with(
            "cfg/x.toml:8:10: guest b: memory: 512 MiB do not fit in the machine's 1024 MiB"
        ),
        "{e}"
    );
}

#[test]
fn rest_memory_leaves_the_ram_disks_room_at_the_top() {
    let f = Files::new("rest");
    let c = parse("[[guest]]\nname = \"a\"\ncpus = 1\nmemory = \"rest\"\ndisks = [\"ram:64M\"]\n");
    let p = f.plan(&c, &f.under_qemu()).expect("plan");
    let GuestMemory::Static(m) = &p.guests[0].memory else {
        panic!("{:?}", p.guests[0].memory)
    };
    // After the kernel (ends 0x4a20_0000), up to 64 MiB below the end of RAM.
    assert_eq!(
        m.as_slice(),
        [MemRange::new(Pa(0x4a20_0000), 0xbc00_0000 - 0x4a20_0000)]
    );
    assert_eq!(p.guests[0].disks, [DiskBackend::Ram(64 * M)]);
}

#[test]
fn a_second_disk_image_gets_the_next_host_slot() {
    let f = Files::new("disks");
    let other = f.dir.file("other.img", M);
    let c = parse(&format!(
        "[[guest]]\nname = \"a\"\nmemory = \"512M\"\ndisks = [\"default\", \"ram:1M\", \"{}\"]\n",
        other.display()
    ));
    let p = f.plan(&c, &f.under_qemu()).expect("plan");
    let host = |s: &str| DiskBackend::Host(s.parse().expect("sbdf"));
    assert_eq!(
        p.guests[0].disks,
        [
            host("0000:00:05.0"),
            DiskBackend::Ram(M),
            host("0000:00:06.0")
        ]
    );
    assert!(p
        .qemu_args(None)
        .iter()
        .any(|a| a == "virtio-blk-pci,drive=hostdisk1,bus=pcie.0,addr=0x6"));
}

#[test]
fn a_guest_named_by_run_options_gets_them_in_its_node() {
    let f = Files::new("override");
    let mut c = checked_in("two-guests.toml");
    c.apply(&Overrides {
        guest: Some("blk".into()),
        exec: Some("lspci".into()),
        ..Overrides::default()
    })
    .expect("valid");
    let p = f.plan(&c, &f.under_qemu()).expect("plan");
    assert_eq!(
        p.guests[1].bootargs.as_deref(),
        Some("console=ttyAMA0 panic=-1 xtask.exec=bHNwY2k=")
    );
    assert_eq!(
        p.guests[0].bootargs.as_deref(),
        Some("console=ttyAMA0 panic=-1")
    );
}

#[test]
fn two_guests_uboot_script_is_the_golden_one() {
    let f = Files::new("golden");
    let c = checked_in("two-guests.toml");
    let p = f.plan(&c, &f.under_uboot()).expect("plan");
    let listing = crate::qemu::uboot_listing(
        Path::new("configs/two-guests.toml"),
        &p.uboot_loads().expect("loads"),
        &p.uboot_lines().expect("lines"),
    )
    .replace(&f.dir.0.display().to_string(), "DIR");
    let golden = r#"# U-Boot commands that boot configs/two-guests.toml (cargo xtask uboot-script) on QEMU's virt as cargo xtask run --uboot sets it up; on a board, adapt them (docs/guests.md, "The U-Boot script on a board")
# Load each file at its address first (run --uboot has QEMU's loader do it; on a board e.g. load mmc 0:1 ADDR FILE):
#   0x40400000  DIR/hypervisor.bin (352912 bytes)
#   0x48200000  DIR/Image (32956352 bytes)
#   0x41200000  DIR/initramfs.cpio (92513332 bytes)
fdt addr ${fdtcontroladdr}
fdt move ${fdtcontroladdr} 0x48000000 0x100000
fdt addr 0x48000000
fdt resize 4096
setenv fdt_high 0xffffffffffffffff
fdt mknode /chosen net
fdt set /chosen/net compatible "synthetic-pci,guest"
fdt set /chosen/net host-cpus <0x0>
fdt set /chosen/net host-memory <0x0 0x4a200000 0x0 0x20000000>
fdt set /chosen/net pci-segment <0x1>
fdt set /chosen/net pci-passthrough "0000:01:00.0"
fdt set /chosen/net on-reset "stop"
fdt mknode /chosen/net module@48200000
fdt set /chosen/net/module@48200000 compatible "multiboot,kernel" "multiboot,module"
fdt set /chosen/net/module@48200000 reg <0x0 0x48200000 0x0 0x1f6dfc0>
fdt set /chosen/net/module@48200000 bootargs "console=ttyAMA0 panic=-1"
fdt mknode /chosen/net module@41200000
fdt set /chosen/net/module@41200000 compatible "multiboot,ramdisk" "multiboot,module"
fdt set /chosen/net/module@41200000 reg <0x0 0x41200000 0x0 0x583a434>
fdt mknode /chosen blk
fdt set /chosen/blk compatible "synthetic-pci,guest"
fdt set /chosen/blk host-cpus <0x1>
fdt set /chosen/blk host-memory <0x0 0x6a200000 0x0 0x20000000>
fdt set /chosen/blk pci-segment <0x2>
fdt set /chosen/blk virtio-blk "host:0000:00:05.0"
fdt set /chosen/blk on-reset "stop"
fdt mknode /chosen/blk module@48200000
fdt set /chosen/blk/module@48200000 compatible "multiboot,kernel" "multiboot,module"
fdt set /chosen/blk/module@48200000 reg <0x0 0x48200000 0x0 0x1f6dfc0>
fdt set /chosen/blk/module@48200000 bootargs "console=ttyAMA0 panic=-1"
fdt mknode /chosen/blk module@41200000
fdt set /chosen/blk/module@41200000 compatible "multiboot,ramdisk" "multiboot,module"
fdt set /chosen/blk/module@41200000 reg <0x0 0x41200000 0x0 0x583a434>
setenv bootargs "semihosting"
booti 0x40400000 - 0x48000000
"#;
    assert_eq!(listing, golden);
}

#[test]
fn run_uboot_types_after_a_key_press_every_command_uboot_script_prints() {
    let f = Files::new("typed");
    let p = f
        .plan(&checked_in("two-guests.toml"), &f.under_uboot())
        .expect("plan");
    let (marker, typed) = p.uboot_input().expect("input");
    assert_eq!(marker, crate::qemu::UBOOT_PROMPT_MARKER);
    let typed = String::from_utf8(typed).expect("text");
    let typed: Vec<&str> = typed.split_terminator('\r').collect();
    let listing = p.uboot_listing().expect("listing");
    let printed: Vec<&str> = listing.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(typed[0], "", "a key press stops autoboot");
    assert_eq!(typed[1..], printed[..]);
    assert_eq!(printed.last(), Some(&"booti 0x40400000 - 0x48000000"));
}

#[test]
fn the_uboot_flow_validates_against_its_own_reservation() {
    let f = Files::new("uboot-valid");
    let p = f
        .plan(&checked_in("two-guests.toml"), &f.under_uboot())
        .expect("plan");
    p.validate().expect("valid");
}

/// Whether `qemu-system-aarch64` runs here; says so when it does not.
fn have_qemu() -> bool {
    let ok = Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: qemu-system-aarch64 is not installed");
    }
    ok
}

#[test]
fn the_dtb_for_two_guests_parses_back_into_its_guests_and_passes_validate() {
    if !have_qemu() {
        return;
    }
    let f = Files::new("dtb");
    let p = f
        .plan(&checked_in("two-guests.toml"), &f.under_qemu())
        .expect("plan");
    let out = f.dir.0.join("two-guests.dtb");
    let args = qemu_args_with_dtb(&p, &out).expect("args");
    assert!(args
        .windows(2)
        .any(|w| w[0] == "-dtb" && Path::new(&w[1]) == out));
    // The DTB as QEMU gives it to the hypervisor.
    let dtb = dump_dtb(&args, &f.dir.0.join("loaded.dtb")).expect("dump");
    let guests = platform::guests::parse_nodes(&dtb).expect("guest nodes");
    assert_eq!(guests, two_guests_expected(&f));
    let platform = platform::parse(&dtb).expect("host DT");
    let host = HostResources::new(&platform, p.host_resources().reserved, p.host_devices());
    assert_eq!(
        host.cpus,
        p.host_resources().cpus,
        "QEMU's CPUs are virt_mpidr's"
    );
    platform::guests::validate(&guests, &host).expect("valid");
}

/// Every node and property of a DTB, one line each (`/path prop = bytes`).
fn flatten(dtb: &[u8]) -> Vec<String> {
    fn walk(n: fdt::node::FdtNode<'_, '_>, path: &str, out: &mut Vec<String>) {
        for p in n.properties() {
            out.push(format!("{path} {} = {:02x?}", p.name, p.value));
        }
        for c in n.children() {
            let cp = format!("{}/{}", path.trim_end_matches('/'), c.name);
            out.push(format!("{cp} {{"));
            walk(c, &cp, out);
        }
    }
    let f = fdt::Fdt::new(dtb).expect("dtb");
    let mut out: Vec<String> = f
        .memory_reservations()
        .map(|r| format!("/memreserve/ {:?} {:#x}", r.address(), r.size()))
        .collect();
    walk(f.find_node("/").expect("root"), "/", &mut out);
    out
}

#[test]
fn qemu_loads_the_dtb_xtask_gives_it_as_the_hypervisor_needs_it() {
    // QEMU documents (hw/arm/boot.c, arm_load_dtb) that it writes the memory
    // nodes and /psci, and /chosen's bootargs (from -append), initrd and
    // seeds. The test has it dump what it loaded from the -dtb xtask wrote:
    // every node and property of that file is there unchanged, QEMU added
    // only the memory node and /psci, and the hypervisor's reading of it
    // (the platform, the guest nodes, validate) finds the planned guests.
    if !have_qemu() {
        return;
    }
    let f = Files::new("intact");
    let p = f
        .plan(&checked_in("two-guests.toml"), &f.under_qemu())
        .expect("plan");
    let given = f.dir.0.join("given.dtb");
    let args = qemu_args_with_dtb(&p, &given).expect("args");
    let loaded = dump_dtb(&args, &f.dir.0.join("loaded.dtb")).expect("dump");
    p.check_dtb(&loaded)
        .expect("the hypervisor reads the planned guests");
    let (given, loaded) = (
        flatten(&std::fs::read(&given).expect("dtb")),
        flatten(&loaded),
    );
    let missing = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|l| !b.contains(l)).cloned().collect()
    };
    assert_eq!(
        missing(&given, &loaded),
        Vec::<String>::new(),
        "lost or changed"
    );
    let added = missing(&loaded, &given);
    assert!(
        added
            .iter()
            .all(|l| l.starts_with("/memory@40000000") || l.starts_with("/psci")),
        "{added:?}"
    );
}
