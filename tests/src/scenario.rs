//! Data-driven scenarios: one TOML file per scenario under `tests/scenarios/`.
//!
//! A scenario holds the topology (root ports on bus 0, optionally one endpoint
//! with a BAR profile below each), an access script of ECAM reads and writes,
//! and what must come back: read values and the exact effects of writes. After
//! every step the runner also checks invariants that hold for any access
//! sequence: read-only bits never change, vendor IDs stay put, and everything
//! below a port is reachable exactly when its bus numbers say so. See
//! `tests/scenarios/README.md` for the format.

use crate::endpoint::{BarProfile, Endpoint};
use emulated_bridges::{RootPort, RootPortConfig};
use serde::Deserialize;
use vbus::{Bdf, Ipa, MemRange, PciFunction, Segment, CONFIG_SPACE_SIZE};

/// A scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario checks, in a sentence.
    pub description: String,
    /// Buses the ECAM window covers (default 16).
    #[serde(default = "default_buses")]
    pub buses: u16,
    /// Root ports on bus 0.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortSpec>,
    /// The access script.
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

fn default_buses() -> u16 {
    16
}

/// A root port on bus 0.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Device number on bus 0.
    pub dev: u8,
    /// Physical slot number.
    #[serde(default)]
    pub slot: u16,
    /// Port number in Link Capabilities.
    #[serde(default)]
    pub port_number: u8,
    /// The endpoint below, if any.
    pub device: Option<DeviceSpec>,
}

/// An endpoint below a port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Memory BARs.
    #[serde(default)]
    pub bars: Vec<BarProfile>,
}

/// One access.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `"read"` or `"write"`.
    pub op: String,
    /// Target function, `"bb:dd.f"`.
    pub at: String,
    /// Register offset within the function (any alignment).
    pub offset: u16,
    /// Access size in bytes (1, 2, 4 or 8; others are legal input too).
    pub size: u8,
    /// Value to write.
    #[serde(default)]
    pub value: u64,
    /// Expected read value.
    pub expect: Option<u64>,
    /// Expected effects of a write, as `vbus::Effect`'s `Display` (`"map fn1 bar0 IPA 0x10000000+0x20000 -> trapped"`), in order; omitted = not checked.
    pub effects: Option<Vec<String>>,
}

/// Parses `"bb:dd.f"` (hex).
pub fn parse_bdf(s: &str) -> Result<Bdf, String> {
    let err = || format!("bad address {s:?}: want bb:dd.f");
    let (bus, rest) = s.split_once(':').ok_or_else(err)?;
    let (dev, func) = rest.split_once('.').ok_or_else(err)?;
    let p = |x: &str| u8::from_str_radix(x, 16).map_err(|_| err());
    Bdf::new(p(bus)?, p(dev)?, p(func)?).map_err(|e| format!("{s}: {e:?}"))
}

/// The ECAM offset of `bdf` + `reg`.
pub fn ecam_offset(bdf: Bdf, reg: u16) -> u64 {
    (u64::from(bdf.bus()) << 20)
        | (u64::from(bdf.dev()) << 15)
        | (u64::from(bdf.func()) << 12)
        | u64::from(reg)
}

/// The host bridge's apertures every scenario's segment has: the default
/// guest layout's 32-bit and 64-bit windows.
pub const APERTURES: [MemRange<Ipa>; 2] = [
    MemRange::new(Ipa(0x1000_0000), 0x2000_0000),
    MemRange::new(Ipa(0x80_0000_0000), 0x40_0000_0000),
];

/// Builds the scenario's segment. Functions get ids in placement order: each
/// port, then the device below it (`fn0`, `fn1`, ...).
pub fn build(s: &Scenario) -> Result<Segment, String> {
    let mut seg = Segment::new(0, s.buses);
    seg.set_apertures(&APERTURES);
    seg.set_intx_spis([35, 36, 37, 38]);
    for p in &s.ports {
        let mut port = RootPort::new(RootPortConfig {
            slot_number: p.slot,
            port_number: p.port_number,
            ..Default::default()
        });
        port.set_device_present(p.device.is_some());
        seg.add_bus0(p.dev, 0, Box::new(port))
            .map_err(|e| format!("port {}: {e:?}", p.dev))?;
        if let Some(d) = &p.device {
            seg.attach_below(
                p.dev,
                0,
                Box::new(Endpoint::new(d.vendor, d.device, &d.bars)),
            )
            .map_err(|e| format!("device below {}: {e:?}", p.dev))?;
        }
    }
    Ok(seg)
}

/// A snapshot of every reachable function's config space and read-only masks.
pub fn snapshot(seg: &Segment) -> Snapshot {
    seg.enumerate()
        .into_iter()
        .map(|(bdf, f)| {
            let cs = f.config_space();
            let ro: Vec<u8> = (0..CONFIG_SPACE_SIZE as u16)
                .map(|o| !(cs.writable(o, 1) | cs.w1c(o, 1)) as u8)
                .collect();
            (identity(f), bdf, cs.bytes().to_vec(), ro)
        })
        .collect()
}

/// Checks that no read-only bit of any function in `before` changed.
pub fn check_read_only(before: &Snapshot, seg: &Segment) -> Result<(), String> {
    for (bdf, f) in seg.enumerate() {
        let Some((_, _, old, ro)) = before.iter().find(|(id, ..)| *id == identity(f)) else {
            continue;
        };
        let now = f.config_space().bytes();
        for i in 0..CONFIG_SPACE_SIZE {
            if (old[i] ^ now[i]) & ro[i] != 0 {
                return Err(format!(
                    "{bdf}: read-only bits changed at {i:#x}: {:#04x} -> {:#04x}",
                    old[i], now[i]
                ));
            }
        }
    }
    Ok(())
}

/// What [`snapshot`] records per function: its identity, address, bytes and
/// read-only mask per byte. Functions are told apart by identity, not by address,
/// since a guest may program two bridges with the same bus numbers.
pub type Snapshot = Vec<(usize, Bdf, Vec<u8>, Vec<u8>)>;

fn identity(f: &dyn PciFunction) -> usize {
    (f as *const dyn PciFunction).cast::<()>() as usize
}

/// Runs a scenario; the error says which step failed and why.
pub fn run(s: &Scenario) -> Result<(), String> {
    let mut seg = build(s)?;
    for (n, step) in s.steps.iter().enumerate() {
        let ctx = |m: String| {
            format!(
                "step {} ({} {} +{:#x}/{}): {m}",
                n + 1,
                step.op,
                step.at,
                step.offset,
                step.size
            )
        };
        let bdf = parse_bdf(&step.at).map_err(ctx)?;
        let off = ecam_offset(bdf, step.offset);
        let before = snapshot(&seg);
        match step.op.as_str() {
            "read" => {
                let got = seg.ecam_read(off, step.size);
                if let Some(want) = step.expect {
                    if got != want {
                        return Err(ctx(format!("read {got:#x}, expected {want:#x}")));
                    }
                }
            }
            "write" => {
                let fx = seg.ecam_write(off, step.size, step.value);
                if let Some(want) = &step.effects {
                    let got: Vec<String> = fx.iter().map(|e| format!("{e}")).collect();
                    if &got != want {
                        return Err(ctx(format!("effects {got:?}, expected {want:?}")));
                    }
                }
                if step.expect.is_some() {
                    return Err(ctx("`expect` belongs to reads".into()));
                }
            }
            other => return Err(ctx(format!("unknown op {other:?}"))),
        }
        check_read_only(&before, &seg).map_err(ctx)?;
    }
    Ok(())
}
