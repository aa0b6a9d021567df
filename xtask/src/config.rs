//! The TOML file that describes a machine and its guests, what a user edits
//! (docs/guests.md, "The TOML file"): its schema, how it is read and
//! checked, how `cargo xtask run`'s options override it, and the single
//! guest it describes as the [`RunConfig`] of today's boot.
//!
//! Every error names the file, and where it can the line and column, the
//! guest and the key (`configs/x.toml:7:1: guest b: memory: ...`); a value
//! an option replaced is named by the option instead of a line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use platform::guests::ResetAction;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::net::{NetBackend, Nic, NicSlot, PortForward};
use crate::qemu::{self, Disk, Mode, RunConfig};
use crate::{Error, Result};

/// The main job's file, relative to the workspace root: what `cargo xtask
/// run` boots without `--config`.
pub const MAIN_CONFIG: &str = "configs/main.toml";

/// The CPUs a machine gets when a guest takes them all and the file does not
/// say how many (`[machine] cpus`): what `cargo xtask run` always gave.
pub const DEFAULT_CPUS: u32 = 2;

/// The RAM a machine gets when the file does not say (`[machine] memory`).
pub const DEFAULT_MEMORY: u64 = 2 << 30;

/// Guest memory is placed and sized in 2 MiB blocks, so that both stage 2s
/// map it with block descriptors (Arm ARM D8.3).
pub const MEMORY_GRANULE: u64 = 2 << 20;

/// A machine and its guests, read from a TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file, as named.
    pub path: PathBuf,
    /// The QEMU machine.
    pub machine: Machine,
    /// The guests, in the file's order.
    pub guests: Vec<Guest>,
    /// Where each key's value came from, for errors.
    origins: BTreeMap<(Option<usize>, &'static str), Origin>,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The file, at this line and column (1-based).
    File(usize, usize),
    /// This `cargo xtask run` option.
    Option(&'static str),
}

/// `[machine]`: the QEMU machine the guests share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// RAM in bytes (`memory`, default 2G).
    pub memory: u64,
    /// CPUs (`cpus`); default: the sum of the guests' CPUs, or
    /// [`DEFAULT_CPUS`] when a guest takes them all.
    pub cpus: Option<u32>,
    /// Extra QEMU arguments (`qemu-args`).
    pub qemu_args: Vec<String>,
    /// Added to the hypervisor's command line (`hv-args`), e.g. `loglevel=debug`.
    pub hv_args: Vec<String>,
    /// An SMMUv3 even when nothing is passed through (`smmu`).
    pub smmu: bool,
}

/// A guest's CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cpus {
    /// Every CPU of the machine (`"all"`): the guest is the only one.
    All,
    /// This many; xtask assigns host CPUs in order.
    Count(u32),
    /// These host CPUs, by MPIDR affinity (a `/cpus` node's `reg`; on QEMU's
    /// `virt` CPU *n* below 16 has MPIDR *n*).
    Mpidrs(Vec<u64>),
}

impl Cpus {
    /// How many CPUs it names (`None`: all of them).
    pub fn count(&self) -> Option<u32> {
        match self {
            Cpus::All => None,
            Cpus::Count(n) => Some(*n),
            Cpus::Mpidrs(m) => Some(u32::try_from(m.len()).unwrap_or(u32::MAX)),
        }
    }
}

/// A guest's RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// What the hypervisor, the modules, the other guests and the RAM disks
    /// leave (`"rest"`).
    Rest,
    /// This many bytes, a multiple of [`MEMORY_GRANULE`].
    Size(u64),
}

/// A guest kernel or initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSpec {
    /// The project's guest image (`cargo xtask image`).
    Default,
    /// This file.
    Path(PathBuf),
}

/// One of a guest's virtio-blk disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSpec {
    /// `disk.img` in the cache directory, 256 MiB, kept between runs
    /// (`"default"`): an image as [`DiskSpec::Image`].
    Default,
    /// A RAM disk of this many bytes carved from host RAM (`"ram:SIZE"`).
    Ram(u64),
    /// A raw image file: QEMU gives the host a `virtio-blk-pci` over it,
    /// which the hypervisor drives for the guest.
    Image(PathBuf),
}

/// `[[guest]]`: one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// Its name (`name`): a DT node name, its console prefix.
    pub name: String,
    /// Its CPUs (`cpus`, default 1).
    pub cpus: Cpus,
    /// Its RAM (`memory`, required).
    pub memory: Memory,
    /// Its kernel (`kernel`, default the project's).
    pub kernel: FileSpec,
    /// Its initrd (`initrd`, default the project's; `None`: `"none"`).
    pub initrd: Option<FileSpec>,
    /// Added to the default command line (`append`).
    pub append: String,
    /// The whole command line instead of the default one (`bootargs`).
    pub bootargs: Option<String>,
    /// What its `/init` runs before powering off (`exec`).
    pub exec: Option<String>,
    /// The host NIC passed through to it (`nic`, default none).
    pub nic: Nic,
    /// Where that NIC sits on the host's PCIe (`nic-slot`, default `root-port`).
    pub nic_slot: NicSlot,
    /// TCP forwards to its NIC's user network (`hostfwd`, `"H:G"`).
    pub hostfwd: Vec<PortForward>,
    /// Its virtio-blk disks, in order (`disks`).
    pub disks: Vec<DiskSpec>,
    /// A virtio console from the hypervisor as its console
    /// (`virtio-console`, default false): `console=hvc0` on the default
    /// command line instead of the PL011's `console=ttyAMA0`.
    pub virtio_console: bool,
    /// Its synthetic PCI segment number (`segment`; default: the lowest
    /// number from 1 that no other guest of the file has).
    pub segment: u16,
    /// At least this many root ports on its segment (`root-ports`, 2 to 31).
    pub root_ports: Option<u8>,
    /// What its PSCI SYSTEM_RESET does (`on-reset`, default stop).
    pub on_reset: ResetAction,
}

/// A guest's kernel and initrd once [`Config::files`] resolved the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFiles {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initrd, if it has one.
    pub initrd: Option<PathBuf>,
}

/// `cargo xtask run`'s options that change the file's values (see
/// [`Config::apply`]). Guest options apply to the one guest, or to `guest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--guest NAME`: the guest the guest options apply to.
    pub guest: Option<String>,
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--initrd` (`Some(None)`: `--initrd none`).
    pub initrd: Option<Option<PathBuf>>,
    /// `--append` (added after the file's `append`).
    pub append: Vec<String>,
    /// `--cmdline` (the guest's `bootargs`).
    pub cmdline: Option<String>,
    /// `--exec`.
    pub exec: Option<String>,
    /// `--smp`: the guest's CPU count, or the machine's when the guest takes all.
    pub smp: Option<u32>,
    /// `--nic`.
    pub nic: Option<Nic>,
    /// `--nic-slot`.
    pub nic_slot: Option<NicSlot>,
    /// `--hostfwd` (added to the file's).
    pub hostfwd: Vec<PortForward>,
    /// `--disk` (`Some(None)`: `--disk none`): the guest's only disk.
    pub disk: Option<Option<DiskSpec>>,
    /// `--virtio-console`.
    pub virtio_console: bool,
    /// `--mem`: the machine's RAM.
    pub mem: Option<u64>,
    /// `--qemu-arg` (added to the file's).
    pub qemu_args: Vec<String>,
    /// `--hv-arg` (added to the file's).
    pub hv_args: Vec<String>,
    /// `--smmu`.
    pub smmu: bool,
}

impl Overrides {
    /// The guest options given, as the command line spells them.
    fn guest_options(&self) -> Vec<&'static str> {
        [
            ("--kernel", self.kernel.is_some()),
            ("--initrd", self.initrd.is_some()),
            ("--append", !self.append.is_empty()),
            ("--cmdline", self.cmdline.is_some()),
            ("--exec", self.exec.is_some()),
            ("--smp", self.smp.is_some()),
            ("--nic", self.nic.is_some()),
            ("--nic-slot", self.nic_slot.is_some()),
            ("--hostfwd", !self.hostfwd.is_empty()),
            ("--disk", self.disk.is_some()),
            ("--virtio-console", self.virtio_console),
        ]
        .into_iter()
        .filter_map(|(o, given)| given.then_some(o))
        .collect()
    }
}

// ---------------------------------------------------------------- the file

/// The file as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    machine: Option<RawMachine>,
    #[serde(default)]
    guest: Vec<Spanned<RawGuest>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMachine {
    memory: Option<Spanned<Size>>,
    cpus: Option<Spanned<u32>>,
    #[serde(default)]
    qemu_args: Vec<String>,
    #[serde(default)]
    hv_args: Vec<String>,
    #[serde(default)]
    smmu: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGuest {
    name: Spanned<String>,
    cpus: Option<Spanned<Cpus>>,
    memory: Spanned<Memory>,
    kernel: Option<Spanned<String>>,
    initrd: Option<Spanned<String>>,
    append: Option<Spanned<String>>,
    bootargs: Option<Spanned<String>>,
    exec: Option<Spanned<String>>,
    nic: Option<Spanned<RawNic>>,
    nic_slot: Option<Spanned<RawNicSlot>>,
    hostfwd: Option<Spanned<Vec<String>>>,
    disks: Option<Spanned<Vec<String>>>,
    virtio_console: Option<Spanned<bool>>,
    segment: Option<Spanned<u16>>,
    root_ports: Option<Spanned<u8>>,
    on_reset: Option<Spanned<RawReset>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawNic {
    E1000e,
    Igb,
    None,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawNicSlot {
    Bus,
    RootPort,
    Switch,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawReset {
    Restart,
    Stop,
}

/// A size string (`"512M"`), in bytes.
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Size, D::Error> {
        let s = String::deserialize(d)?;
        qemu::parse_size(&s)
            .map(Size)
            .map_err(|_| de::Error::custom(format!("{s:?}: want a size like \"512M\" or \"2G\"")))
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Memory, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"512M\", or \"rest\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Memory, E> {
                if s == "rest" {
                    return Ok(Memory::Rest);
                }
                let n = qemu::parse_size(s).map_err(|_| {
                    E::custom(format!("{s:?}: want a size like \"512M\", or \"rest\""))
                })?;
                if n % MEMORY_GRANULE != 0 {
                    return Err(E::custom(format!(
                        "{s:?}: want a multiple of 2M (guest memory is mapped in 2 MiB blocks)"
                    )));
                }
                Ok(Memory::Size(n))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Cpus, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cpus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of CPUs, \"all\", or a list of MPIDRs")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Cpus, E> {
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(Cpus::Count)
                    .ok_or_else(|| E::custom(format!("{n}: want 1 or more CPUs")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Cpus, E> {
                match s {
                    "all" => Ok(Cpus::All),
                    _ => Err(E::custom(format!(
                        "{s:?}: want a number of CPUs, \"all\", or a list of MPIDRs"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<Cpus, A::Error> {
                let mut m = Vec::new();
                while let Some(mpidr) = a.next_element::<u64>()? {
                    if mpidr & !platform::guests::MPIDR_AFFINITY != 0 {
                        return Err(de::Error::custom(format!(
                            "{mpidr:#x} has bits outside MPIDR Aff3..Aff0"
                        )));
                    }
                    if m.contains(&mpidr) {
                        return Err(de::Error::custom(format!("CPU {mpidr:#x} is listed twice")));
                    }
                    m.push(mpidr);
                }
                if m.is_empty() {
                    return Err(de::Error::custom("an empty list: want at least one CPU"));
                }
                Ok(Cpus::Mpidrs(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// Line and column (1-based) of byte `offset` of `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// For a serde error at byte `at`: the guest whose table holds it (by a
/// second, lenient read), and the key on its line when `at` is in a value.
fn locate(src: &str, at: usize) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Lenient {
        #[serde(default)]
        guest: Vec<Spanned<LenientGuest>>,
    }
    #[derive(Deserialize)]
    struct LenientGuest {
        name: Option<toml::Value>,
    }
    let guest = toml::from_str::<Lenient>(src).ok().and_then(|l| {
        l.guest
            .iter()
            .find(|g| g.span().contains(&at))
            .map(|g| match &g.get_ref().name {
                Some(toml::Value::String(s)) => s.clone(),
                _ => format!(
                    "#{}",
                    1 + l
                        .guest
                        .iter()
                        .take_while(|x| !x.span().contains(&at))
                        .count()
                ),
            })
    });
    let line_start = src[..at.min(src.len())].rfind('\n').map_or(0, |i| i + 1);
    let key = src[line_start..at.min(src.len())]
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    (guest, key)
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error(format!("{}: {e}", path.display())))?;
        Config::parse(path, &text)
    }

    /// Reads and checks `text`, the contents of `path` (relative file names
    /// in it are relative to `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let Some(span) = e.span() else {
                return Error(format!("{}: {}", path.display(), e.message()));
            };
            let (line, col) = line_col(text, span.start);
            let (guest, key) = locate(text, span.start);
            let mut msg = format!("{}:{line}:{col}: ", path.display());
            if let Some(g) = guest {
                msg.push_str(&format!("guest {g}: "));
            }
            if let Some(k) = key.filter(|k| !e.message().contains(&format!("`{k}`"))) {
                msg.push_str(&format!("{k}: "));
            }
            msg.push_str(e.message().trim_end());
            // toml's excerpt of the file, under its own first line.
            let shown = e.to_string();
            let excerpt: Vec<&str> = shown.lines().skip(1).take(3).collect();
            if !excerpt.is_empty() {
                msg.push('\n');
                msg.push_str(&excerpt.join("\n"));
            }
            Error(msg)
        })?;
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut origins = BTreeMap::new();
        let mut at = |g: Option<usize>, key: &'static str, span: std::ops::Range<usize>| {
            let (l, c) = line_col(text, span.start);
            origins.insert((g, key), Origin::File(l, c));
        };
        let m = raw.machine.unwrap_or_default();
        if let Some(s) = &m.memory {
            at(None, "memory", s.span());
        }
        if let Some(s) = &m.cpus {
            at(None, "cpus", s.span());
        }
        let machine = Machine {
            memory: m.memory.map_or(DEFAULT_MEMORY, |s| s.into_inner().0),
            cpus: m.cpus.map(Spanned::into_inner),
            qemu_args: m.qemu_args,
            hv_args: m.hv_args,
            smmu: m.smmu,
        };
        let in_dir = |s: String| -> PathBuf {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                p
            } else {
                dir.join(p)
            }
        };
        let file = |s: String| FileSpec::Path(in_dir(s));
        let mut guests = Vec::new();
        let mut hostfwd_problems = Vec::new();
        let mut disk_problems = Vec::new();
        for (i, g) in raw.guest.into_iter().enumerate() {
            let g = g.into_inner();
            let g_at = Some(i);
            at(g_at, "name", g.name.span());
            at(g_at, "memory", g.memory.span());
            macro_rules! spanned {
                ($field:expr, $key:literal) => {
                    $field.map(|s| {
                        at(g_at, $key, s.span());
                        s.into_inner()
                    })
                };
            }
            let cpus = spanned!(g.cpus, "cpus").unwrap_or(Cpus::Count(1));
            let kernel = spanned!(g.kernel, "kernel");
            let initrd = spanned!(g.initrd, "initrd");
            let hostfwd = spanned!(g.hostfwd, "hostfwd").unwrap_or_default();
            let disks = spanned!(g.disks, "disks").unwrap_or_default();
            let mut forwards = Vec::new();
            for f in hostfwd {
                match PortForward::parse(&f) {
                    Ok(f) => forwards.push(f),
                    Err(_) => {
                        hostfwd_problems.push((i, format!("{f:?}: want \"HOSTPORT:GUESTPORT\"")))
                    }
                }
            }
            let mut disk_specs = Vec::new();
            for d in disks {
                match parse_disk(&d) {
                    Ok(d) => disk_specs.push(d.unwrap_or_else(|p| DiskSpec::Image(in_dir(p)))),
                    Err(e) => disk_problems.push((i, e)),
                }
            }
            guests.push(Guest {
                name: g.name.into_inner(),
                cpus,
                memory: g.memory.into_inner(),
                kernel: match kernel {
                    None => FileSpec::Default,
                    Some(k) => file(k),
                },
                initrd: match initrd.as_deref() {
                    None => Some(FileSpec::Default),
                    Some("none") => None,
                    Some(_) => initrd.map(file),
                },
                append: spanned!(g.append, "append").unwrap_or_default(),
                bootargs: spanned!(g.bootargs, "bootargs"),
                exec: spanned!(g.exec, "exec"),
                nic: match spanned!(g.nic, "nic") {
                    None | Some(RawNic::None) => Nic::None,
                    Some(RawNic::E1000e) => Nic::E1000e,
                    Some(RawNic::Igb) => Nic::Igb,
                },
                nic_slot: match spanned!(g.nic_slot, "nic-slot") {
                    None | Some(RawNicSlot::RootPort) => NicSlot::RootPort,
                    Some(RawNicSlot::Bus) => NicSlot::Bus,
                    Some(RawNicSlot::Switch) => NicSlot::Switch,
                },
                hostfwd: forwards,
                disks: disk_specs,
                virtio_console: spanned!(g.virtio_console, "virtio-console").unwrap_or(false),
                segment: spanned!(g.segment, "segment")
                    .unwrap_or(platform::guests::DEFAULT_SEGMENT),
                root_ports: spanned!(g.root_ports, "root-ports"),
                on_reset: match spanned!(g.on_reset, "on-reset") {
                    None | Some(RawReset::Stop) => ResetAction::Stop,
                    Some(RawReset::Restart) => ResetAction::Restart,
                },
            });
        }
        // A guest without a `segment` takes the lowest number from 1 that no
        // other guest has, so that guests side by side need not each name one.
        let given = |i: usize| origins.contains_key(&(Some(i), "segment"));
        let mut taken: std::collections::BTreeSet<u16> = guests
            .iter()
            .enumerate()
            .filter(|(i, _)| given(*i))
            .map(|(_, g)| g.segment)
            .collect();
        for (i, g) in guests.iter_mut().enumerate() {
            if !given(i) {
                let n = (platform::guests::DEFAULT_SEGMENT..=u16::MAX)
                    .find(|n| !taken.contains(n))
                    .unwrap_or(platform::guests::DEFAULT_SEGMENT);
                taken.insert(n);
                g.segment = n;
            }
        }
        let config = Config {
            path: path.to_path_buf(),
            machine,
            guests,
            origins,
        };
        if let Some((g, p)) = hostfwd_problems.into_iter().next() {
            return Err(config.problem(Some(g), "hostfwd", p));
        }
        if let Some((g, p)) = disk_problems.into_iter().next() {
            return Err(config.problem(Some(g), "disks", p));
        }
        config.check()?;
        Ok(config)
    }

    /// An error about `key` of guest `guest` (`None`: of `[machine]`), at
    /// its place in the file or naming the option that set it.
    pub fn problem(
        &self,
        guest: Option<usize>,
        key: &'static str,
        msg: impl fmt::Display,
    ) -> Error {
        let file = self.path.display();
        let owner = match guest.and_then(|g| self.guests.get(g)) {
            Some(g) => format!("guest {}", g.name),
            None => "[machine]".to_string(),
        };
        Error(match self.origins.get(&(guest, key)) {
            Some(Origin::File(l, c)) => format!("{file}:{l}:{c}: {owner}: {key}: {msg}"),
            Some(Origin::Option(o)) => format!("{file}: {owner}: {key} (from {o}): {msg}"),
            None => format!("{file}: {owner}: {key}: {msg}"),
        })
    }

    /// Whether the file describes the boot before guest nodes existed: one
    /// guest with every CPU and the rest of RAM, its modules directly under
    /// `/chosen` and its options on the hypervisor's command line.
    pub fn single_style(&self) -> bool {
        matches!(
            self.guests.as_slice(),
            [Guest {
                cpus: Cpus::All,
                memory: Memory::Rest,
                ..
            }]
        )
    }

    /// The checks between values: at least one guest; distinct names (each a
    /// DT node name), CPUs, segment numbers and disk images; `"all"` CPUs
    /// only for the only guest and `"rest"` memory for one guest at most;
    /// `bootargs` without `append` or `exec`; `root-ports` 2 to 31; the
    /// machine's RAM at least 64M and at least the guests' sizes added up;
    /// at most 3 NICs; and what the single-guest
    /// style cannot say (more than one disk, a segment other than 1,
    /// `on-reset = "restart"`).
    pub fn check(&self) -> Result<()> {
        if self.guests.is_empty() {
            return Err(Error(format!(
                "{}: no [[guest]]: describe at least one guest",
                self.path.display()
            )));
        }
        if self.machine.memory < 64 << 20 {
            return Err(self.problem(
                None,
                "memory",
                format!("{} MiB: want at least 64M", self.machine.memory >> 20),
            ));
        }
        if self.machine.cpus == Some(0) {
            return Err(self.problem(None, "cpus", "0: want 1 or more"));
        }
        let several = self.guests.len() > 1;
        for (i, g) in self.guests.iter().enumerate() {
            let at = Some(i);
            if let Some(p) = platform::guests::node_name_problem(&g.name) {
                return Err(self.problem(at, "name", p));
            }
            if let Some(j) = self.guests[..i].iter().position(|o| o.name == g.name) {
                return Err(self.problem(
                    at,
                    "name",
                    format!("{:?} is also guest #{}'s name", g.name, j + 1),
                ));
            }
            if several && g.cpus == Cpus::All {
                return Err(self.problem(
                    at,
                    "cpus",
                    "\"all\" with other guests: give a number of CPUs or a list of MPIDRs",
                ));
            }
            if g.memory == Memory::Rest {
                if let Some(o) = self.guests[..i].iter().find(|o| o.memory == Memory::Rest) {
                    return Err(self.problem(
                        at,
                        "memory",
                        format!("\"rest\" again (guest {} has it): give a size", o.name),
                    ));
                }
            }
            if let Cpus::Mpidrs(m) = &g.cpus {
                for o in &self.guests[..i] {
                    if let Cpus::Mpidrs(om) = &o.cpus {
                        if let Some(c) = m.iter().find(|c| om.contains(c)) {
                            return Err(self.problem(
                                at,
                                "cpus",
                                format!("CPU {c:#x} is guest {}'s too", o.name),
                            ));
                        }
                    }
                }
            }
            if let Some(o) = self.guests[..i].iter().find(|o| o.segment == g.segment) {
                return Err(self.problem(
                    at,
                    "segment",
                    format!("{} is guest {}'s segment too", g.segment, o.name),
                ));
            }
            if g.bootargs.is_some() && (!g.append.trim().is_empty() || g.exec.is_some()) {
                let other = if g.exec.is_some() { "exec" } else { "append" };
                return Err(self.problem(at, "bootargs", format!("is the whole command line, and {other} needs the default one: give one of them")));
            }
            if let Some(n) = g.root_ports.filter(|n| !(2..=31).contains(n)) {
                return Err(self.problem(at, "root-ports", format!("{n}: want 2 to 31")));
            }
            for d in &g.disks {
                let clash = self.guests[..i].iter().find(|o| o.disks.contains(d));
                if let (Some(o), DiskSpec::Default | DiskSpec::Image(_)) = (clash, d) {
                    return Err(self.problem(
                        at,
                        "disks",
                        format!(
                            "{} is guest {}'s disk too: an image serves one guest",
                            disk_name(d),
                            o.name
                        ),
                    ));
                }
            }
            if let Some(d) = g
                .disks
                .iter()
                .enumerate()
                .find(|(k, d)| !matches!(d, DiskSpec::Ram(_)) && g.disks[..*k].contains(d))
            {
                return Err(self.problem(
                    at,
                    "disks",
                    format!("{} is listed twice", disk_name(d.1)),
                ));
            }
        }
        self.check_memory_sum()?;
        let nics = self.guests.iter().filter(|g| g.nic != Nic::None).count();
        if nics > crate::guests::MAX_NICS {
            let i = self.guests.iter().rposition(|g| g.nic != Nic::None);
            return Err(self.problem(
                i,
                "nic",
                format!(
                    "{nics} NICs: the host has slots for {}",
                    crate::guests::MAX_NICS
                ),
            ));
        }
        if self.single_style() {
            let g = &self.guests[0];
            let why = "in the single-guest style (cpus = \"all\", memory = \"rest\"; docs/guests.md): give the guest a number of CPUs and a memory size for a guest node";
            if g.disks.len() > 1 {
                return Err(self.problem(
                    Some(0),
                    "disks",
                    format!("{} disks: one at most {why}", g.disks.len()),
                ));
            }
            if g.segment != platform::guests::DEFAULT_SEGMENT {
                return Err(self.problem(
                    Some(0),
                    "segment",
                    format!("{}: segment 1 only {why}", g.segment),
                ));
            }
            if g.on_reset == ResetAction::Restart {
                return Err(self.problem(
                    Some(0),
                    "on-reset",
                    format!("\"restart\": a reset stops the guest {why}"),
                ));
            }
        }
        Ok(())
    }

    /// The guests' memory sizes added up, in file order, are at most the
    /// machine's RAM: else the guest whose size goes past it is named, with
    /// every size up to it. (Whether they fit beside the hypervisor and the
    /// modules is [`crate::guests::plan`]'s to say; this is the check a file
    /// fails before anything is built.)
    fn check_memory_sum(&self) -> Result<()> {
        let mut sum = 0u64;
        let mut sized = Vec::new();
        for (i, g) in self.guests.iter().enumerate() {
            let Memory::Size(n) = g.memory else {
                continue;
            };
            sum = sum.saturating_add(n);
            sized.push(format!("{}: {} MiB", g.name, n >> 20));
            if sum > self.machine.memory {
                let msg = if sized.len() == 1 {
                    format!(
                        "{} MiB, more than the machine's {} MiB",
                        n >> 20,
                        self.machine.memory >> 20
                    )
                } else {
                    format!(
                        "the guests' memory adds up to {} MiB ({}), more than the machine's {} MiB",
                        sum >> 20,
                        sized.join(", "),
                        self.machine.memory >> 20
                    )
                };
                return Err(self.problem(Some(i), "memory", msg));
            }
        }
        Ok(())
    }

    /// Applies `cargo xtask run`'s options (see [`Overrides`]): guest
    /// options to the only guest or to `--guest NAME`; with several guests
    /// and no `--guest`, `--exec` becomes the command of every guest without
    /// one and the other guest options are refused, naming them. Machine
    /// options to the machine; then checks again.
    pub fn apply(&mut self, o: &Overrides) -> Result<()> {
        let given = o.guest_options();
        let index = match (&o.guest, self.guests.len()) {
            (Some(name), _) => Some(
                self.guests
                    .iter()
                    .position(|g| &g.name == name)
                    .ok_or_else(|| {
                        Error(format!(
                            "{}: --guest {name}: no such guest (its guests: {})",
                            self.path.display(),
                            self.names()
                        ))
                    })?,
            ),
            (None, 1) => Some(0),
            (None, n) => {
                let one_guest: Vec<&str> = given.into_iter().filter(|o| *o != "--exec").collect();
                if !one_guest.is_empty() {
                    return Err(Error(format!(
                        "{}: {} apply to one guest and the file has {n} ({}): say which with --guest NAME before them",
                        self.path.display(),
                        one_guest.join(", "),
                        self.names()
                    )));
                }
                if let Some(e) = &o.exec {
                    self.exec_for_all(e);
                }
                None
            }
        };
        if let Some(i) = index {
            let mut set = |key: &'static str, opt: &'static str| {
                self.origins.insert((Some(i), key), Origin::Option(opt));
            };
            if o.kernel.is_some() {
                set("kernel", "--kernel");
            }
            if o.initrd.is_some() {
                set("initrd", "--initrd");
            }
            if !o.append.is_empty() {
                set("append", "--append");
            }
            if o.cmdline.is_some() {
                set("bootargs", "--cmdline");
            }
            if o.exec.is_some() {
                set("exec", "--exec");
            }
            if o.nic.is_some() {
                set("nic", "--nic");
            }
            if o.disk.is_some() {
                set("disks", "--disk");
            }
            if o.virtio_console {
                set("virtio-console", "--virtio-console");
            }
            let all = self.guests[i].cpus == Cpus::All;
            if o.smp.is_some() && !all {
                set("cpus", "--smp");
            }
            let g = &mut self.guests[i];
            if let Some(k) = &o.kernel {
                g.kernel = FileSpec::Path(k.clone());
            }
            if let Some(initrd) = &o.initrd {
                g.initrd = initrd.clone().map(FileSpec::Path);
            }
            if !o.append.is_empty() {
                let added = o.append.join(" ");
                g.append = format!("{} {added}", g.append).trim().to_string();
            }
            if let Some(c) = &o.cmdline {
                g.bootargs = Some(c.clone());
            }
            if let Some(e) = &o.exec {
                g.exec = Some(e.clone());
            }
            if let Some(n) = o.nic {
                g.nic = n;
            }
            if let Some(s) = o.nic_slot {
                g.nic_slot = s;
            }
            g.hostfwd.extend(o.hostfwd.iter().copied());
            if let Some(d) = &o.disk {
                g.disks = d.iter().cloned().collect();
            }
            if o.virtio_console {
                g.virtio_console = true;
            }
            match (o.smp, all) {
                (Some(n), true) => {
                    self.machine.cpus = Some(n);
                    self.origins.insert((None, "cpus"), Origin::Option("--smp"));
                }
                (Some(n), false) => g.cpus = Cpus::Count(n),
                (None, _) => {}
            }
        }
        if let Some(m) = o.mem {
            self.machine.memory = m;
            self.origins
                .insert((None, "memory"), Origin::Option("--mem"));
        }
        self.machine.qemu_args.extend(o.qemu_args.iter().cloned());
        self.machine.hv_args.extend(o.hv_args.iter().cloned());
        self.machine.smmu |= o.smmu;
        self.check()
    }

    /// Applies `cargo xtask run`'s options in the order they mean:
    /// `per_guest` are those after each `--guest NAME` (each with its
    /// `guest`), `global` those before any `--guest` and the machine's. With
    /// one guest, `global`'s guest options are its own and `per_guest`
    /// override them; with several, `global`'s `--exec` is the command of
    /// every guest left without one ([`Config::apply`]).
    pub fn apply_all(&mut self, global: &Overrides, per_guest: &[Overrides]) -> Result<()> {
        if self.guests.len() == 1 {
            self.apply(global)?;
        }
        for o in per_guest {
            self.apply(o)?;
        }
        if self.guests.len() != 1 {
            self.apply(global)?;
        }
        Ok(())
    }

    /// Gives `exec` to every guest without a command that can take one
    /// (one without `bootargs`, which runs our `/init`).
    fn exec_for_all(&mut self, exec: &str) {
        for (i, g) in self.guests.iter_mut().enumerate() {
            if g.exec.is_none() && g.bootargs.is_none() {
                g.exec = Some(exec.to_string());
                self.origins
                    .insert((Some(i), "exec"), Origin::Option("--exec"));
            }
        }
    }

    /// Refuses a run where some guests have a command and others none: the
    /// run ends when every guest's command has (each powers its guest
    /// off), and a guest without one runs a shell until someone powers it
    /// off, so such a run would only end at its timeout. Guests with
    /// `bootargs` (not our `/init`) take no command and are left out. The
    /// error names the guests without a command and the ways to give one.
    pub fn check_commands(&self) -> Result<()> {
        if let Some(i) = self
            .guests
            .iter()
            .position(|g| g.exec.as_deref().is_some_and(|e| e.trim().is_empty()))
        {
            return Err(self.problem(
                Some(i),
                "exec",
                "an empty command: give one, or none for an interactive shell",
            ));
        }
        let ours = || self.guests.iter().filter(|g| g.bootargs.is_none());
        let with: Vec<&str> = ours()
            .filter(|g| g.exec.is_some())
            .map(|g| g.name.as_str())
            .collect();
        let without: Vec<&str> = ours()
            .filter(|g| g.exec.is_none())
            .map(|g| g.name.as_str())
            .collect();
        if with.is_empty() || without.is_empty() {
            return Ok(());
        }
        let list = |names: &[&str]| match names {
            [one] => format!("guest {one} has"),
            more => format!("guests {} have", more.join(", ")),
        };
        let (it, name) = match without.as_slice() {
            [one] => ("it", *one),
            _ => ("each", "NAME"),
        };
        Err(Error(format!(
            "{}: {} no command and {} one: a run ends once every guest's command has run, and a guest without one waits in its shell until the timeout. Give {it} a command with --guest {name} --exec CMD, or exec = \"...\" in its [[guest]] table; or give every guest without one the same with --exec CMD before any --guest",
            self.path.display(),
            list(&without),
            list(&with),
        )))
    }

    /// The guests whose `[name] `-prefixed status lines make the run's
    /// status ([`RunConfig::exec_guests`]): those with a command, when the
    /// file has several guests. None for one guest: the hypervisor prefixes
    /// console lines only when there are several, so its status line is
    /// read without a prefix.
    pub fn command_guests(&self) -> Vec<String> {
        if self.guests.len() < 2 {
            return Vec::new();
        }
        self.guests
            .iter()
            .filter(|g| g.exec.is_some())
            .map(|g| g.name.clone())
            .collect()
    }

    /// The guests' names, comma-separated.
    fn names(&self) -> String {
        self.guests
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether a guest takes the project's kernel or initrd.
    pub fn uses_default_image(&self) -> bool {
        self.guests
            .iter()
            .any(|g| g.kernel == FileSpec::Default || g.initrd == Some(FileSpec::Default))
    }

    /// Whether a guest has the default disk image.
    pub fn uses_default_disk(&self) -> bool {
        self.guests
            .iter()
            .any(|g| g.disks.contains(&DiskSpec::Default))
    }

    /// Each guest's kernel and initrd, the defaults from `image` (the
    /// project's kernel and initrd), called only when a guest needs them.
    /// A file that does not exist is an error naming the guest and key.
    pub fn files(
        &self,
        image: impl FnOnce() -> Result<(PathBuf, PathBuf)>,
    ) -> Result<Vec<GuestFiles>> {
        let image = if self.uses_default_image() {
            Some(image()?)
        } else {
            None
        };
        let mut out = Vec::new();
        for (i, g) in self.guests.iter().enumerate() {
            let pick =
                |f: &FileSpec, key: &'static str, default: Option<&PathBuf>| -> Result<PathBuf> {
                    let p = match (f, default) {
                        (FileSpec::Path(p), _) => p.clone(),
                        (FileSpec::Default, Some(d)) => d.clone(),
                        (FileSpec::Default, None) => {
                            return Err(self.problem(
                                Some(i),
                                key,
                                "the project's image was not resolved",
                            ))
                        }
                    };
                    if !p.is_file() {
                        return Err(self.problem(
                            Some(i),
                            key,
                            format!("{}: no such file", p.display()),
                        ));
                    }
                    Ok(p)
                };
            out.push(GuestFiles {
                kernel: pick(&g.kernel, "kernel", image.as_ref().map(|i| &i.0))?,
                initrd: g
                    .initrd
                    .as_ref()
                    .map(|f| pick(f, "initrd", image.as_ref().map(|i| &i.1)))
                    .transpose()?,
            });
        }
        Ok(out)
    }

    /// The guest's command line (the kernel module's `bootargs`): its
    /// `bootargs`, else the default line with `append` and `exec`
    /// ([`qemu::cmdline_for`]); errors name the guest and key.
    pub fn cmdline(&self, guest: usize) -> Result<String> {
        let g = &self.guests[guest];
        qemu::cmdline_for(
            g.bootargs.as_deref(),
            g.virtio_console,
            &g.append,
            g.exec.as_deref(),
        )
        .map_err(|e| {
            let key = if g.bootargs.is_some() {
                "bootargs"
            } else {
                "exec"
            };
            self.problem(Some(guest), key, e.0)
        })
    }

    /// The [`RunConfig`] that boots guest `guest` as `cargo xtask run` always
    /// has: under the hypervisor in the single-guest style, or directly
    /// (`Mode::Direct`). CPUs: the machine's for `"all"`, else the guest's;
    /// RAM: the machine's; `default_disk` is the default disk's image.
    /// Refused for a guest with more than one disk.
    pub fn run_config(
        &self,
        guest: usize,
        mode: Mode,
        files: &GuestFiles,
        default_disk: &Path,
    ) -> Result<RunConfig> {
        let g = &self.guests[guest];
        let mut cfg = RunConfig::new(mode, files.kernel.clone(), PathBuf::new());
        cfg.initrd = files.initrd.clone();
        cfg.smp = match g.cpus.count() {
            None => self.machine.cpus.unwrap_or(DEFAULT_CPUS),
            Some(n) => n,
        };
        cfg.mem_bytes = self.machine.memory;
        cfg.append = g.append.clone();
        cfg.cmdline = g.bootargs.clone();
        cfg.exec = g.exec.clone();
        cfg.nic = g.nic;
        cfg.nic_slot = g.nic_slot;
        cfg.net = NetBackend::User {
            forwards: g.hostfwd.clone(),
        };
        match g.disks.as_slice() {
            [] => cfg.disk = Disk::None,
            [DiskSpec::Ram(n)] => cfg.disk = Disk::Ram(*n),
            [DiskSpec::Default] => {
                cfg.disk = Disk::Host;
                cfg.host_disk = Some(default_disk.to_path_buf());
            }
            [DiskSpec::Image(p)] => {
                cfg.disk = Disk::Host;
                cfg.host_disk = Some(p.clone());
            }
            more => {
                return Err(self.problem(
                    Some(guest),
                    "disks",
                    format!("{} disks: this boot gives a guest one", more.len()),
                ))
            }
        }
        let mut hv: Vec<String> = self.machine.hv_args.clone();
        if let Some(n) = g.root_ports {
            hv.push(format!("root-ports={n}"));
        }
        cfg.virtio_console = g.virtio_console;
        cfg.hypervisor_args = hv.join(" ");
        cfg.iommu = self.machine.smmu;
        cfg.qemu_args = self.machine.qemu_args.clone();
        // The command line's own checks, reported against the file.
        self.cmdline(guest)?;
        Ok(cfg)
    }
}

/// A `disks` entry: `Ok(Ok(spec))`, or `Ok(Err(path))` for an image file.
fn parse_disk(s: &str) -> std::result::Result<std::result::Result<DiskSpec, String>, String> {
    if s == "default" {
        return Ok(Ok(DiskSpec::Default));
    }
    if let Some(size) = s.strip_prefix("ram:") {
        return qemu::parse_size(size)
            .map(|n| Ok(DiskSpec::Ram(n)))
            .map_err(|_| format!("{s:?}: want ram:SIZE with a size like 64M"));
    }
    if s.is_empty() || s == "none" {
        return Err(format!(
            "{s:?}: want \"default\", \"ram:SIZE\" or an image file (no disk: leave it out)"
        ));
    }
    Ok(Err(s.to_string()))
}

/// A disk as the file names it.
fn disk_name(d: &DiskSpec) -> String {
    match d {
        DiskSpec::Default => "\"default\"".to_string(),
        DiskSpec::Ram(n) => format!("ram:{n}"),
        DiskSpec::Image(p) => p.display().to_string(),
    }
}

#[cfg(test)]
mod tests;
