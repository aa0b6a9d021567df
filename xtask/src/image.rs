//! The guest image: two Linux kernel `Image`s (the stable suite's and the
//! backports suite's newest) and one `newc` initramfs assembled from the
//! distribution's arm64 packages (busybox, pciutils, fio, iperf3, ethtool, the
//! kernel modules our guests need, for both kernels), cached outside the work
//! tree and keyed by the package versions and the `/init` script.
//!
//! Packages are fetched with `apt-get` using a private state directory
//! (lists, archives, an empty dpkg status) so the host's own apt state is
//! neither read nor changed, then extracted with `dpkg-deb -x`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use object::elf::{FileHeader64, DT_NEEDED};
use object::read::elf::{Dyn, FileHeader, SectionHeader};
use object::Endianness;

use crate::cpio::{FileData, Node, Tree};
use crate::error::Context;
use crate::progress::{run_lines, run_polling, Progress};
use crate::{paths, Error, Result};

/// The `/init` script (busybox sh).
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Bumped whenever the way the image is assembled changes, to invalidate caches.
const FORMAT_VERSION: &str = "image-format-4";

/// Kernel modules loaded at boot, with their dependencies.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    // The virtio console (`--virtio-console`: console=hvc0).
    "virtio_console",
    "virtio_net",
    "e1000e",
    "igb",
    "ext4",
    // ext4 asks the crypto API for crc32c at mount time; nothing loads it on demand here.
    "crc32c_generic",
];

/// The meta-package whose `Depends` names the versioned kernel package.
pub const KERNEL_METAPACKAGE: &str = "linux-image-arm64";

/// Packages whose programs go in the image (their dependencies are fetched too).
pub const TOOL_PACKAGES: &[&str] = &[
    "busybox-static",
    "pciutils",
    "pci.ids",
    "fio",
    "iperf3",
    "ethtool",
];

/// Dynamically linked programs copied into `/usr/bin`, with their libraries.
pub const TOOL_PROGRAMS: &[&str] = &["lspci", "setpci", "fio", "iperf3", "ethtool"];

/// Library directories searched for `DT_NEEDED` entries, relative to a package root.
const LIB_DIRS: &[&str] = &[
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib",
    "usr/lib",
];

/// Program directories searched for [`TOOL_PROGRAMS`], relative to a package root.
const BIN_DIRS: &[&str] = &["usr/bin", "usr/sbin", "bin", "sbin"];

/// The dynamic loader named in arm64 programs' `PT_INTERP`.
const LOADER: &str = "ld-linux-aarch64.so.1";

/// A built guest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The raw arm64 kernel `Image`.
    pub kernel: PathBuf,
    /// The uncompressed `newc` initramfs.
    pub initrd: PathBuf,
    /// The kernel release (`6.1.0-56-arm64`).
    pub kernel_release: String,
    /// The newer kernel `Image`, from the backports suite; the initramfs has
    /// its modules too.
    pub new_kernel: PathBuf,
    /// Its release (`6.12.95+deb12-arm64`).
    pub new_kernel_release: String,
}

/// Apt with a private state under the cache directory.
struct Apt {
    root: PathBuf,
}

impl Apt {
    fn new(root: PathBuf) -> Result<Self> {
        for d in ["lists/partial", "archives/partial", "debs"] {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(Self { root })
    }

    fn options(&self) -> Vec<String> {
        vec![
            "-o".into(),
            "APT::Architecture=arm64".into(),
            "-o".into(),
            "APT::Architectures::=arm64".into(),
            "-o".into(),
            format!("Dir::State::Lists={}", self.root.join("lists").display()),
            "-o".into(),
            format!(
                "Dir::Cache::Archives={}",
                self.root.join("archives").display()
            ),
            "-o".into(),
            "Dir::State::Status=/dev/null".into(),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
            "-q".into(),
        ]
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options());
        c
    }

    fn output(&self, mut cmd: Command) -> Result<String> {
        let out = cmd.output().context(|| format!("{cmd:?}"))?;
        if !out.status.success() {
            return Err(Error(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn has_lists(&self) -> bool {
        self.has_lists_of("")
    }

    /// Whether the lists of `suite` (any suite when empty) were fetched.
    fn has_lists_of(&self, suite: &str) -> bool {
        let want = format!("_{suite}_");
        fs::read_dir(self.root.join("lists")).is_ok_and(|d| {
            d.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.contains("_Packages") && (suite.is_empty() || n.contains(&want))
            })
        })
    }

    fn update(&self) -> Result<()> {
        let progress = Progress::spinner("apt-get update (arm64, private state)");
        let mut c = self.command("apt-get");
        c.arg("update");
        run_lines(&mut c, |l| progress.set_message(l))?;
        progress.finish();
        Ok(())
    }

    fn depends(&self, packages: &[&str], recurse: bool) -> Result<String> {
        let mut c = self.command("apt-cache");
        c.arg("depends");
        if recurse {
            c.arg("--recurse");
        }
        c.args([
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ]);
        c.args(packages);
        self.output(c)
    }

    /// The `.deb` of each package's candidate version.
    fn uris(&self, packages: &[String]) -> Result<Vec<Deb>> {
        let mut c = self.command("apt-get");
        c.args(["--print-uris", "download"]).args(packages);
        Ok(parse_print_uris(&self.output(c)?))
    }

    /// Downloads `debs` into `debs/`, showing the bytes that arrived (apt
    /// writes each file in place as it comes).
    fn download(&self, debs: &[Deb]) -> Result<()> {
        if debs.is_empty() {
            return Ok(());
        }
        let dir = self.root.join("debs");
        let total: u64 = debs.iter().map(|d| d.size).sum();
        let mut progress =
            Progress::bytes(format!("downloading {} arm64 packages", debs.len()), total);
        let mut c = self.command("apt-get");
        c.current_dir(&dir);
        c.arg("download").args(debs.iter().map(|d| &d.package));
        run_polling(&mut c, Duration::from_millis(250), || {
            progress.set_position(arrived_bytes(&dir, debs));
        })?;
        progress.finish();
        Ok(())
    }
}

/// A package's `.deb` as `apt-get --print-uris download` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deb {
    /// The package name.
    pub package: String,
    /// The file name (`name_version_arch.deb`).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Deb {
    /// Whether `dir` holds this file whole (by size: apt writes a download
    /// in place, so an interrupted one leaves a shorter file).
    fn is_in(&self, dir: &Path) -> bool {
        fs::metadata(dir.join(&self.file)).is_ok_and(|m| m.len() == self.size)
    }
}

/// The bytes of `debs` present in `dir` (whole or partly downloaded).
fn arrived_bytes(dir: &Path, debs: &[Deb]) -> u64 {
    debs.iter()
        .map(|d| fs::metadata(dir.join(&d.file)).map_or(0, |m| m.len().min(d.size)))
        .sum()
}

/// The `.deb`s in `apt-get --print-uris download` output
/// (`'uri' name_version_arch.deb size hash` lines).
pub fn parse_print_uris(out: &str) -> Vec<Deb> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip(1);
            let file = words.next().filter(|f| f.ends_with(".deb"))?;
            let size = words.next()?.parse().ok()?;
            Some(Deb {
                package: file.split('_').next()?.to_string(),
                file: file.to_string(),
                size,
            })
        })
        .collect()
}

/// Package names listed at the top level of `apt-cache depends --recurse`
/// output (virtual packages, shown in angle brackets, are skipped).
pub fn parse_recursive_depends(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// The first `Depends:` target starting with `prefix` in `apt-cache depends` output.
pub fn parse_first_depends(out: &str, prefix: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        dep.starts_with(prefix).then(|| dep.to_string())
    })
}

/// 64-bit FNV-1a, for cache keys (stable across Rust releases, unlike `DefaultHasher`).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Builds the guest image, or returns the cached one whose inputs match.
pub fn ensure_guest_image() -> Result<GuestImage> {
    crate::install::check_debian_tools()?;
    let backports = crate::install::ensure_backports_suite()?;
    let cache = paths::cache_dir();
    let apt = Apt::new(cache.join("apt"))?;
    if !apt.has_lists() || !apt.has_lists_of(&backports) {
        apt.update()?;
    }
    build_image(&cache, &apt, &backports, false)
}

/// The distribution package with U-Boot builds for QEMU (architecture `all`).
pub const UBOOT_PACKAGE: &str = "u-boot-qemu";
/// The `qemu_arm64` U-Boot inside it.
pub const UBOOT_QEMU_ARM64: &str = "usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// U-Boot for QEMU's arm64 virt machine, from the distribution's package,
/// cached under the cache directory by package version.
pub fn ensure_uboot() -> Result<PathBuf> {
    crate::install::check_debian_tools()?;
    let cache = paths::cache_dir();
    let apt = Apt::new(cache.join("apt"))?;
    if !apt.has_lists() {
        apt.update()?;
    }
    let pkg = [UBOOT_PACKAGE.to_string()];
    let deb = match apt.uris(&pkg)?.into_iter().next() {
        Some(deb) => deb,
        None => {
            apt.update()?;
            apt.uris(&pkg)?
                .into_iter()
                .next()
                .ok_or_else(|| Error(format!("no {UBOOT_PACKAGE} package in the apt sources")))?
        }
    };
    let file = deb.file.clone();
    let stem = file.trim_end_matches(".deb").to_string();
    let out = cache.join("u-boot").join(&stem).join("u-boot.bin");
    if out.exists() {
        return Ok(out);
    }
    if !deb.is_in(&apt.root.join("debs")) {
        let debs = [deb];
        if let Err(e) = apt.download(&debs) {
            eprintln!("xtask: download failed, refreshing the package lists: {e}");
            apt.update()?;
            apt.download(&debs)?;
        }
    }
    let root = extract(&apt.root.join("debs").join(&file), &cache.join("extracted"))?;
    let dir = cache.join("u-boot").join(&stem);
    fs::create_dir_all(&dir)?;
    fs::copy(root.join(UBOOT_QEMU_ARM64), &out)
        .context(|| format!("{UBOOT_QEMU_ARM64} in {file}"))?;
    eprintln!("xtask: U-Boot for QEMU: {}", out.display());
    Ok(out)
}

/// Resolves, downloads and assembles; on a failed download (versions gone
/// from the mirror since the lists were fetched) refreshes the lists once.
fn build_image(cache: &Path, apt: &Apt, backports: &str, refreshed: bool) -> Result<GuestImage> {
    let kernel_pkg =
        parse_first_depends(&apt.depends(&[KERNEL_METAPACKAGE], false)?, "linux-image-")
            .ok_or_else(|| Error(format!("{KERNEL_METAPACKAGE} names no linux-image package")))?;
    // The backports suite's meta-package names the newer kernel (a package
    // only that suite has, so its candidate is the backports version).
    let new_meta = format!("{KERNEL_METAPACKAGE}/{backports}");
    let new_kernel_pkg = parse_first_depends(&apt.depends(&[&new_meta], false)?, "linux-image-")
        .ok_or_else(|| Error(format!("{new_meta} names no linux-image package")))?;
    let mut packages = parse_recursive_depends(&apt.depends(TOOL_PACKAGES, true)?);
    packages.insert(kernel_pkg.clone());
    packages.insert(new_kernel_pkg.clone());
    let packages: Vec<String> = packages.into_iter().collect();
    let debs = apt.uris(&packages)?;
    let mut key_parts: Vec<&[u8]> = vec![FORMAT_VERSION.as_bytes(), INIT_SCRIPT.as_bytes()];
    key_parts.extend(GUEST_MODULES.iter().map(|m| m.as_bytes()));
    key_parts.extend(TOOL_PROGRAMS.iter().map(|m| m.as_bytes()));
    key_parts.extend(debs.iter().map(|d| d.file.as_bytes()));
    let key = format!("{:016x}", fnv1a64(&key_parts));
    let out_dir = cache.join("images").join(&key);
    let image = GuestImage {
        kernel: out_dir.join("Image"),
        initrd: out_dir.join("initramfs.cpio"),
        kernel_release: fs::read_to_string(out_dir.join("kernel-release")).unwrap_or_default(),
        new_kernel: out_dir.join("Image-new"),
        new_kernel_release: fs::read_to_string(out_dir.join("new-kernel-release"))
            .unwrap_or_default(),
    };
    if out_dir.join("complete").exists() {
        eprintln!(
            "xtask: guest image {key} is cached in {}",
            out_dir.display()
        );
        return Ok(image);
    }

    let deb_dir = apt.root.join("debs");
    let missing: Vec<Deb> = debs
        .iter()
        .filter(|d| !d.is_in(&deb_dir))
        .cloned()
        .collect();
    if let Err(e) = apt.download(&missing) {
        if refreshed {
            return Err(e);
        }
        eprintln!("xtask: download failed, refreshing the package lists: {e}");
        apt.update()?;
        return build_image(cache, apt, backports, true);
    }

    let x_dir = cache.join("extracted");
    let mut roots: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut progress = Progress::new(
        format!("extracting {} packages", debs.len()),
        debs.len() as u64,
    );
    for deb in &debs {
        progress.set_message(&deb.package);
        roots.insert(
            deb.package.clone(),
            extract(&deb_dir.join(&deb.file), &x_dir)?,
        );
        progress.inc(&deb.package);
    }
    progress.finish();
    let kernel_root = roots
        .get(&kernel_pkg)
        .ok_or_else(|| Error(format!("{kernel_pkg} was not downloaded")))?;
    let new_kernel_root = roots
        .get(&new_kernel_pkg)
        .ok_or_else(|| Error(format!("{new_kernel_pkg} was not downloaded")))?;
    let assembled = assemble(&[kernel_root, new_kernel_root], &roots)?;

    let tmp = cache.join("images").join(format!("{key}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let [(kernel, kernel_release), (new_kernel, new_kernel_release)] = &assembled.kernels;
    fs::copy(kernel, tmp.join("Image"))?;
    fs::copy(new_kernel, tmp.join("Image-new"))?;
    let file = std::io::BufWriter::new(fs::File::create(tmp.join("initramfs.cpio"))?);
    let mut progress = Progress::new(
        format!("writing the initramfs ({} entries)", assembled.tree.len()),
        assembled.tree.len() as u64,
    );
    let size = assembled
        .tree
        .write_newc_with(file, |path| progress.inc(path))?;
    progress.finish();
    fs::write(tmp.join("kernel-release"), kernel_release)?;
    fs::write(tmp.join("new-kernel-release"), new_kernel_release)?;
    fs::write(
        tmp.join("packages"),
        debs.iter()
            .map(|d| format!("{}\n", d.file))
            .collect::<String>(),
    )?;
    fs::write(tmp.join("complete"), "")?;
    let _ = fs::remove_dir_all(&out_dir);
    fs::rename(&tmp, &out_dir)?;
    // Older images and packages are superseded by this one.
    let current_debs: BTreeSet<String> = debs.iter().map(|d| d.file.clone()).collect();
    prune(&cache.join("images"), |name| name == key);
    // The extracted packages (~700 MiB, mostly kernel modules) are only
    // needed to assemble; the .debs stay for the next rebuild.
    let _ = fs::remove_dir_all(&x_dir);
    prune(&deb_dir, |name| current_debs.contains(name));
    eprintln!(
        "xtask: guest image {key}: kernels {kernel_release} and {new_kernel_release}, initramfs {} MiB, {} entries, in {}",
        size >> 20,
        assembled.tree.len(),
        out_dir.display()
    );
    Ok(GuestImage {
        kernel_release: kernel_release.clone(),
        new_kernel_release: new_kernel_release.clone(),
        ..image
    })
}

/// Removes the entries of `dir` whose name `keep` rejects (best effort).
fn prune(dir: &Path, keep: impl Fn(&str) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if keep(&name) || name == "partial" {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
}

/// Extracts `deb` under `x_dir` once; returns the package root.
fn extract(deb: &Path, x_dir: &Path) -> Result<PathBuf> {
    let stem = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = x_dir.join(&stem);
    if root.exists() {
        return Ok(root);
    }
    let tmp = x_dir.join(format!("{stem}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&tmp)
        .status()
        .context(|| "dpkg-deb".to_string())?;
    if !status.success() {
        return Err(Error(format!("dpkg-deb -x {} failed", deb.display())));
    }
    fs::rename(&tmp, &root)?;
    Ok(root)
}

struct Assembled {
    tree: Tree,
    /// Each kernel's `vmlinuz` and release, in the order given to [`assemble`].
    kernels: [(PathBuf, String); 2],
}

fn host_file(perm: u32, path: PathBuf) -> Node {
    Node::File {
        perm,
        data: FileData::Host(path),
    }
}

fn assemble(kernel_roots: &[&PathBuf; 2], roots: &BTreeMap<String, PathBuf>) -> Result<Assembled> {
    let mut tree = Tree::new();
    for d in [
        "dev", "proc", "sys", "tmp", "run", "root", "mnt", "etc", "usr/sbin", "sbin",
    ] {
        tree.insert(d, Node::Dir { perm: 0o755 });
    }
    tree.insert("tmp", Node::Dir { perm: 0o1777 });
    tree.insert(
        "dev/console",
        Node::CharDev {
            perm: 0o600,
            major: 5,
            minor: 1,
        },
    );
    tree.insert(
        "dev/null",
        Node::CharDev {
            perm: 0o666,
            major: 1,
            minor: 3,
        },
    );
    tree.insert(
        "lib",
        Node::Symlink {
            target: "usr/lib".into(),
        },
    );
    tree.insert(
        "init",
        Node::File {
            perm: 0o755,
            data: FileData::Bytes(INIT_SCRIPT.as_bytes().to_vec()),
        },
    );
    tree.insert("etc/passwd", bytes(b"root:x:0:0:root:/root:/bin/sh\n"));
    tree.insert("etc/group", bytes(b"root:x:0:\n"));
    let mut modules_list = GUEST_MODULES.join("\n");
    modules_list.push('\n');
    tree.insert("etc/xtask-modules", bytes(modules_list.as_bytes()));

    // busybox (static); applet links are made by /init.
    let busybox = roots
        .get("busybox-static")
        .map(|r| r.join("bin/busybox"))
        .filter(|p| p.exists())
        .ok_or_else(|| Error::msg("busybox-static has no bin/busybox"))?;
    tree.insert("bin/busybox", host_file(0o755, busybox));

    // pci.ids for lspci.
    if let Some(ids) = roots
        .values()
        .map(|r| r.join("usr/share/misc/pci.ids"))
        .find(|p| p.exists())
    {
        tree.insert("usr/share/misc/pci.ids", host_file(0o644, ids));
    }

    // Programs and their shared libraries.
    let libs = LibIndex::new(roots.values());
    let mut needed = BTreeSet::new();
    needed.insert(LOADER.to_string());
    for prog in TOOL_PROGRAMS {
        let path = roots
            .values()
            .flat_map(|r| BIN_DIRS.iter().map(move |d| r.join(d).join(prog)))
            .find(|p| p.is_file())
            .ok_or_else(|| Error(format!("no package provides the program {prog}")))?;
        needed.extend(elf_needed(&fs::read(&path)?).context(|| path.display().to_string())?);
        tree.insert(&format!("usr/bin/{prog}"), host_file(0o755, path));
    }
    let mut done = BTreeSet::new();
    while let Some(lib) = needed.pop_first() {
        if !done.insert(lib.clone()) {
            continue;
        }
        let (install_path, path) = libs
            .resolve(&lib)
            .ok_or_else(|| Error(format!("no downloaded package provides {lib}")))?;
        let data = fs::read(&path)?;
        needed.extend(
            elf_needed(&data)
                .context(|| path.display().to_string())?
                .into_iter()
                .filter(|n| !done.contains(n)),
        );
        tree.insert(&install_path, host_file(0o755, path));
    }
    // The loader is found through its PT_INTERP path, /lib/ld-linux-aarch64.so.1.
    if !tree.contains(&format!("usr/lib/{LOADER}")) {
        tree.insert(
            &format!("usr/lib/{LOADER}"),
            Node::Symlink {
                target: format!("aarch64-linux-gnu/{LOADER}"),
            },
        );
    }

    // Kernels and their modules (one initramfs serves both: /init's modprobe
    // looks in /lib/modules/$(uname -r)).
    let [first, second] = kernel_roots;
    let kernels = [
        kernel_and_modules(&mut tree, first)?,
        kernel_and_modules(&mut tree, second)?,
    ];
    Ok(Assembled { tree, kernels })
}

/// Adds the modules of the kernel package extracted at `kernel_root` to `tree`;
/// returns its `vmlinuz` and release.
fn kernel_and_modules(tree: &mut Tree, kernel_root: &Path) -> Result<(PathBuf, String)> {
    let mod_root = kernel_root.join("lib/modules");
    let kernel_release = fs::read_dir(&mod_root)
        .context(|| mod_root.display().to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| Error::msg("kernel package has no lib/modules/<release>"))?;
    let kernel = kernel_root.join(format!("boot/vmlinuz-{kernel_release}"));
    if !kernel.exists() {
        return Err(Error(format!("{} missing", kernel.display())));
    }
    add_modules(tree, &mod_root.join(&kernel_release), &kernel_release)?;
    Ok((kernel, kernel_release))
}

fn bytes(b: &[u8]) -> Node {
    Node::File {
        perm: 0o644,
        data: FileData::Bytes(b.to_vec()),
    }
}

/// Shared libraries found in extracted packages, by file name: where the
/// package installs them (relative, `/lib` folded into `/usr/lib`) and the
/// extracted file. Library directories and their direct subdirectories (e.g.
/// `ceph/`, reached through `DT_RUNPATH`) are searched.
struct LibIndex {
    by_name: HashMap<String, (String, PathBuf)>,
}

impl LibIndex {
    fn new<'a>(roots: impl Iterator<Item = &'a PathBuf>) -> Self {
        let mut by_name = HashMap::new();
        for root in roots {
            let mut dirs: Vec<String> = LIB_DIRS.iter().map(|d| d.to_string()).collect();
            for d in LIB_DIRS {
                if let Ok(entries) = fs::read_dir(root.join(d)) {
                    for e in entries.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            dirs.push(format!("{d}/{}", e.file_name().to_string_lossy()));
                        }
                    }
                }
            }
            for dir in dirs {
                let Ok(entries) = fs::read_dir(root.join(&dir)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.contains(".so") || by_name.contains_key(&name) {
                        continue;
                    }
                    if let Some(p) = resolve_in_root(root, &e.path()) {
                        let install_dir = merged_usr(&dir);
                        by_name.insert(name.clone(), (format!("{install_dir}/{name}"), p));
                    }
                }
            }
        }
        Self { by_name }
    }

    fn resolve(&self, soname: &str) -> Option<(String, PathBuf)> {
        self.by_name.get(soname).cloned()
    }
}

/// The directory `dir` (relative) becomes in the image, whose `/lib` is a
/// link to `usr/lib` (the merged-/usr layout).
pub fn merged_usr(dir: &str) -> String {
    match dir.strip_prefix("lib") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("usr/lib{rest}"),
        _ => dir.to_string(),
    }
}

/// Follows symbolic links inside one extracted package, treating absolute
/// targets as relative to the package root; `None` when the chain leaves
/// the package or does not end in a regular file.
fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        let meta = fs::symlink_metadata(&p).ok()?;
        if meta.is_file() {
            return Some(p);
        }
        if !meta.file_type().is_symlink() {
            return None;
        }
        let target = fs::read_link(&p).ok()?;
        p = if target.is_absolute() {
            root.join(target.strip_prefix("/").ok()?)
        } else {
            p.parent()?.join(target)
        };
    }
    None
}

/// The `DT_NEEDED` entries of an ELF64 file (empty for a static one).
pub fn elf_needed(data: &[u8]) -> Result<Vec<String>> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let mut needed = Vec::new();
    if let Some((dyns, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for d in dyns {
            if d.d_tag(endian) == u64::from(DT_NEEDED) {
                let name = d.string(endian, strings)?;
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(needed)
}

/// The `key=value` strings of a kernel module's `.modinfo` section.
pub fn modinfo(data: &[u8]) -> Result<Vec<String>> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let Some((_, section)) = sections.section_by_name(endian, b".modinfo") else {
        return Ok(Vec::new());
    };
    let bytes = section
        .data(endian, data)
        .map_err(|_| Error::msg(".modinfo outside the file"))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// A module's name from its file name (`virtio-foo.ko` → `virtio_foo`).
pub fn module_name(file_name: &str) -> String {
    file_name
        .split(".ko")
        .next()
        .unwrap_or(file_name)
        .replace('-', "_")
}

/// Modules in dependency order (each after everything it depends on) for
/// `wanted`, given each module's direct dependencies; names missing from
/// `deps` are skipped (built into the kernel).
pub fn load_order(wanted: &[&str], deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    fn visit(
        m: &str,
        deps: &BTreeMap<String, Vec<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !deps.contains_key(m) || !seen.insert(m.to_string()) {
            return;
        }
        for d in &deps[m] {
            visit(d, deps, seen, out);
        }
        out.push(m.to_string());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in wanted {
        visit(m, deps, &mut seen, &mut out);
    }
    out
}

/// A module file's ELF bytes: read as is, or through `xz -dc` for `.ko.xz`.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context(|| format!("xz -dc {}", path.display()))?;
        if !out.status.success() {
            return Err(Error(format!(
                "xz -dc {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        return Ok(out.stdout);
    }
    Ok(fs::read(path)?)
}

/// Copies the wanted modules and their dependencies and writes `modules.dep`
/// and `modules.alias` for them (the package ships neither: `depmod` makes
/// them at install time).
fn add_modules(tree: &mut Tree, dir: &Path, release: &str) -> Result<()> {
    let mut files: BTreeMap<String, String> = BTreeMap::new(); // name -> relative path
    let mut stack = vec![PathBuf::from("kernel")];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = rel.join(&name);
            if e.file_type()?.is_dir() {
                stack.push(r);
            } else if name.contains(".ko") {
                files.insert(module_name(&name), r.to_string_lossy().into_owned());
            }
        }
    }
    // Only modules reachable from GUEST_MODULES need their .modinfo read.
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo: Vec<String> = GUEST_MODULES.iter().map(|s| s.to_string()).collect();
    while let Some(m) = todo.pop() {
        if deps.contains_key(&m) {
            continue;
        }
        let Some(rel) = files.get(&m) else {
            continue; // built in
        };
        let info = modinfo(&module_bytes(&dir.join(rel))?)
            .context(|| dir.join(rel).display().to_string())?;
        let d: Vec<String> = info
            .iter()
            .filter_map(|kv| kv.strip_prefix("depends="))
            .flat_map(|v| v.split(','))
            .filter(|s| !s.is_empty())
            .map(module_name)
            .collect();
        aliases.insert(
            m.clone(),
            info.iter()
                .filter_map(|kv| kv.strip_prefix("alias="))
                .map(str::to_string)
                .collect(),
        );
        todo.extend(d.iter().cloned());
        deps.insert(m, d);
    }
    let order = load_order(GUEST_MODULES, &deps);
    let base = format!("usr/lib/modules/{release}");
    let mut dep_file = String::new();
    let mut alias_file = String::new();
    for m in &order {
        let rel = &files[m];
        let path = dir.join(rel);
        // Compressed modules go in decompressed (busybox's modprobe loads them
        // as they are); modules.dep names them so.
        let rel_out = rel.strip_suffix(".xz").unwrap_or(rel);
        let node = if rel_out.len() == rel.len() {
            host_file(0o644, path)
        } else {
            Node::File {
                perm: 0o644,
                data: FileData::Bytes(module_bytes(&path)?),
            }
        };
        tree.insert(&format!("{base}/{rel_out}"), node);
        // modules.dep lists every (transitive) dependency, loaded last-first.
        let closure = load_order(&[m.as_str()], &deps);
        let line_deps: Vec<&str> = closure
            .iter()
            .rev()
            .filter(|d| *d != m)
            .map(|d| files[d].strip_suffix(".xz").unwrap_or(&files[d]))
            .collect();
        dep_file.push_str(&format!("{rel_out}: {}\n", line_deps.join(" ")));
        for a in &aliases[m] {
            alias_file.push_str(&format!("alias {a} {m}\n"));
        }
    }
    tree.insert(&format!("{base}/modules.dep"), bytes(dep_file.as_bytes()));
    tree.insert(
        &format!("{base}/modules.alias"),
        bytes(alias_file.as_bytes()),
    );
    for f in ["modules.builtin", "modules.order"] {
        if dir.join(f).exists() {
            tree.insert(&format!("{base}/{f}"), host_file(0o644, dir.join(f)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_uris_lines_give_package_file_name_and_size() {
        let out = "'http://mirror.invalid/pool/f/fio/fio_3.33-3_arm64.deb' fio_3.33-3_arm64.deb 123 SHA256:ab\n";
        assert_eq!(
            parse_print_uris(out),
            vec![Deb {
                package: "fio".to_string(),
                file: "fio_3.33-3_arm64.deb".to_string(),
                size: 123,
            }]
        );
    }

    #[test]
    fn a_partly_downloaded_deb_is_not_there_and_counts_its_bytes() {
        let dir = scratch("partial");
        let deb = |file: &str, size| Deb {
            package: file.split('_').next().unwrap_or(file).to_string(),
            file: file.to_string(),
            size,
        };
        fs::write(dir.join("a_1_arm64.deb"), [0u8; 10]).expect("write");
        fs::write(dir.join("b_1_arm64.deb"), [0u8; 4]).expect("write");
        let debs = [
            deb("a_1_arm64.deb", 10),
            deb("b_1_arm64.deb", 8),
            deb("c_1_arm64.deb", 5),
        ];
        let there: Vec<bool> = debs.iter().map(|d| d.is_in(&dir)).collect();
        assert_eq!(there, [true, false, false]);
        assert_eq!(arrived_bytes(&dir, &debs), 14);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn recursive_depends_keeps_real_packages_and_skips_virtual_ones() {
        let out = "fio\n  Depends: libc6\n  Depends: <libfoo-virtual>\nlibc6\n<libfoo-virtual>\n";
        let got: Vec<String> = parse_recursive_depends(out).into_iter().collect();
        assert_eq!(got, vec!["fio".to_string(), "libc6".to_string()]);
    }

    #[test]
    fn kernel_metapackage_depends_names_versioned_image() {
        let out = "linux-image-arm64\n  Depends: linux-image-6.1.0-56-arm64\n";
        assert_eq!(
            parse_first_depends(out, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
    }

    #[test]
    fn lib_directories_move_under_usr() {
        assert_eq!(
            merged_usr("lib/aarch64-linux-gnu"),
            "usr/lib/aarch64-linux-gnu"
        );
    }

    #[test]
    fn usr_and_lib_lookalike_directories_stay() {
        assert_eq!(merged_usr("usr/lib/x"), "usr/lib/x");
        assert_eq!(merged_usr("lib64"), "lib64");
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("lib/aarch64-linux-gnu")).expect("scratch dir");
        d
    }

    #[test]
    fn absolute_symlink_resolves_inside_package_root() {
        let root = scratch("abs");
        let real = root.join("lib/aarch64-linux-gnu/libx.so.1.2");
        fs::write(&real, b"x").expect("write");
        let link = root.join("lib/libx.so.1");
        std::os::unix::fs::symlink("/lib/aarch64-linux-gnu/libx.so.1.2", &link).expect("symlink");
        assert_eq!(resolve_in_root(&root, &link), Some(real));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn dangling_symlink_resolves_to_none() {
        let root = scratch("dangling");
        let link = root.join("lib/liby.so.1");
        std::os::unix::fs::symlink("liby.so.1.0", &link).expect("symlink");
        assert_eq!(resolve_in_root(&root, &link), None);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn module_name_replaces_dashes_and_drops_extension() {
        assert_eq!(module_name("virtio-foo.ko.xz"), "virtio_foo");
    }

    #[test]
    fn load_order_puts_dependencies_first_and_skips_builtins() {
        let mut deps = BTreeMap::new();
        deps.insert(
            "virtio_net".to_string(),
            vec!["net_failover".to_string(), "virtio".to_string()],
        );
        deps.insert("net_failover".to_string(), vec!["failover".to_string()]);
        deps.insert("failover".to_string(), vec![]);
        assert_eq!(
            load_order(&["virtio_net"], &deps),
            vec!["failover", "net_failover", "virtio_net"]
        );
    }

    #[test]
    fn cache_key_changes_with_any_input() {
        assert_ne!(fnv1a64(&[b"a", b"bc"]), fnv1a64(&[b"ab", b"c"]));
    }

    #[test]
    fn init_script_configures_ethernet_after_loading_the_nic_drivers() {
        let modprobe = INIT_SCRIPT.find("modprobe").expect("modprobe");
        let addr = INIT_SCRIPT
            .find("ip addr add 10.0.2.15/24")
            .expect("guest address");
        let route = INIT_SCRIPT
            .find("ip route add default via 10.0.2.2")
            .expect("default route");
        assert!(modprobe < addr && addr < route);
    }

    #[test]
    fn init_script_prints_marker_before_loading_modules() {
        // Only a virtio console's driver (console=hvc0) comes before: the
        // marker has nowhere to go without it.
        let marker = INIT_SCRIPT.find("echo XTASK-INIT-START").expect("marker");
        let modprobe = INIT_SCRIPT.find("modprobe \"$m\"").expect("modprobe");
        assert!(marker < modprobe);
    }

    #[test]
    fn init_script_opens_hvc0_as_its_console_before_the_marker_when_asked() {
        let marker = INIT_SCRIPT.find("echo XTASK-INIT-START").expect("marker");
        let hvc = INIT_SCRIPT.find("console=hvc0").expect("hvc0 case");
        let reopen = INIT_SCRIPT
            .find("exec </dev/console >/dev/console 2>&1")
            .expect("reopen");
        assert!(hvc < reopen && reopen < marker);
    }
}
