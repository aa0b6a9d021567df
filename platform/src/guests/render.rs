//! Guest nodes written back out, in the form [`super::parse_nodes`] reads:
//! as U-Boot `fdt` commands for a board, and (feature `vm-fdt`) into a DTB
//! being built, for QEMU's `-dtb`.
//!
//! Both write the same nodes: no `#address-cells`/`#size-cells` (the 2 + 2
//! default), `host-cpus` in the `/cpus` node's `#address-cells`, every
//! optional property only when it differs from "absent", `pci-segment` and
//! `on-reset` always; modules named `module@ADDR`, kernel first.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;

use arch_emu::addr::{MemRange, Pa};

use super::{
    module_node_name, node_name_problem, GuestConfig, GuestError, GuestMemory, COMPATIBLE,
};

/// A property value, as U-Boot's `fdt set` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    /// `<a b ...>`: big-endian 32-bit cells.
    Cells(Vec<u32>),
    /// `"a" "b" ...`: NUL-terminated strings, one after the other.
    Strings(Vec<String>),
}

impl Value {
    /// The property's bytes in the DTB.
    #[cfg(any(test, feature = "vm-fdt"))]
    pub(super) fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Cells(c) => c.iter().flat_map(|c| c.to_be_bytes()).collect(),
            Value::Strings(s) => s
                .iter()
                .flat_map(|s| s.bytes().chain(core::iter::once(0)))
                .collect(),
        }
    }
}

/// A node to add under `/chosen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// Its name.
    pub(super) name: String,
    /// Its properties, in order.
    pub(super) props: Vec<(String, Value)>,
    /// Its child nodes.
    pub(super) children: Vec<Node>,
}

fn cells64(v: u64) -> [u32; 2] {
    [(v >> 32) as u32, v as u32]
}

fn reg(r: MemRange<Pa>) -> Vec<u32> {
    cells64(r.base.0)
        .into_iter()
        .chain(cells64(r.size))
        .collect()
}

fn strings<I: IntoIterator<Item = S>, S: ToString>(i: I) -> Value {
    Value::Strings(i.into_iter().map(|s| s.to_string()).collect())
}

/// The nodes that describe `guests`, `host-cpus` in `cpu_cells` cells (the
/// host's `/cpus` `#address-cells`, 1 or 2). Refused: a guest whose memory
/// is not static ranges ([`GuestError::NoMemory`]), a name that is not a
/// node name, an MPIDR that does not fit `cpu_cells`.
pub(super) fn nodes(guests: &[GuestConfig], cpu_cells: u32) -> Result<Vec<Node>, GuestError> {
    if !(1..=2).contains(&cpu_cells) {
        return Err(GuestError::DeviceTree(format!(
            "/cpus #address-cells {cpu_cells}: want 1 or 2"
        )));
    }
    guests.iter().map(|g| node(g, cpu_cells)).collect()
}

fn node(g: &GuestConfig, cpu_cells: u32) -> Result<Node, GuestError> {
    let bad = |property: &str, problem: String| GuestError::Malformed {
        guest: g.name.clone(),
        property: property.to_string(),
        problem,
    };
    if let Some(p) = node_name_problem(&g.name) {
        return Err(bad("name", p));
    }
    let GuestMemory::Static(memory) = &g.memory else {
        return Err(GuestError::NoMemory {
            guest: g.name.clone(),
        });
    };
    let mut cpus = Vec::new();
    for c in &g.cpus {
        match cpu_cells {
            1 => cpus.push(u32::try_from(c.mpidr).map_err(|_| {
                bad(
                    "host-cpus",
                    format!(
                        "{:#x} does not fit the one cell of /cpus #address-cells",
                        c.mpidr
                    ),
                )
            })?),
            _ => cpus.extend(cells64(c.mpidr)),
        }
    }
    let mut props = alloc::vec![
        ("compatible".to_string(), strings([COMPATIBLE])),
        ("host-cpus".to_string(), Value::Cells(cpus)),
        (
            "host-memory".to_string(),
            Value::Cells(memory.iter().flat_map(|r| reg(*r)).collect()),
        ),
        (
            "pci-segment".to_string(),
            Value::Cells(alloc::vec![u32::from(g.segment)]),
        ),
    ];
    if let Some(n) = g.root_ports {
        props.push((
            "root-ports".to_string(),
            Value::Cells(alloc::vec![u32::from(n)]),
        ));
    }
    if !g.devices.is_empty() {
        props.push(("pci-passthrough".to_string(), strings(&g.devices)));
    }
    if !g.disks.is_empty() {
        props.push(("virtio-blk".to_string(), strings(&g.disks)));
    }
    if g.console {
        props.push(("virtio-console".to_string(), Value::Cells(Vec::new())));
    }
    props.push(("on-reset".to_string(), strings([g.on_reset])));

    let module = |kind: &str, r: MemRange<Pa>, bootargs: Option<&String>| {
        let mut props = alloc::vec![
            (
                "compatible".to_string(),
                strings([kind, "multiboot,module"]),
            ),
            ("reg".to_string(), Value::Cells(reg(r))),
        ];
        if let Some(b) = bootargs {
            props.push(("bootargs".to_string(), strings([b])));
        }
        Node {
            name: module_node_name(r),
            props,
            children: Vec::new(),
        }
    };
    let mut children = alloc::vec![module("multiboot,kernel", g.kernel, g.bootargs.as_ref())];
    if let Some(rd) = g.ramdisk {
        children.push(module("multiboot,ramdisk", rd, None));
    }
    Ok(Node {
        name: g.name.clone(),
        props,
        children,
    })
}

/// The U-Boot commands that add `guests` as guest nodes under `/chosen` of
/// the DT `fdt addr` selected, one command a line: `fdt mknode` for each
/// node, then `fdt set` for each property (U-Boot's `cmd/fdt.c`: `<...>`
/// cells, `"..."` strings). `host-cpus` is written in `cpu_cells` cells,
/// the board's `/cpus` `#address-cells`. The DT needs room first (`fdt
/// resize`): about 512 bytes a guest plus its command line.
///
/// Refused: a guest whose memory is not static ranges
/// ([`GuestError::NoMemory`]), a name that is not a node name, an MPIDR
/// that does not fit `cpu_cells`, and a string U-Boot's shell would not pass
/// through unchanged inside double quotes (`"`, `\`, `$`, control
/// characters) or that `fdt set` would not take as a string (a leading `<`
/// or `[`), each named by guest and property.
pub fn uboot_commands(guests: &[GuestConfig], cpu_cells: u32) -> Result<String, GuestError> {
    let mut out = String::new();
    for n in nodes(guests, cpu_cells)? {
        emit(&mut out, "/chosen", &n, &n.name)?;
    }
    Ok(out)
}

fn emit(out: &mut String, parent: &str, n: &Node, guest: &str) -> Result<(), GuestError> {
    let path = format!("{parent}/{}", n.name);
    // Writing to a String cannot fail.
    let _ = writeln!(out, "fdt mknode {parent} {}", n.name);
    for (name, v) in &n.props {
        let _ = write!(out, "fdt set {path} {name} ");
        match v {
            // An empty property: `fdt set PATH NAME` with no value.
            Value::Cells(c) if c.is_empty() => {
                let _ = writeln!(out);
            }
            Value::Cells(c) => {
                let c: Vec<String> = c.iter().map(|c| format!("{c:#x}")).collect();
                let _ = writeln!(out, "<{}>", c.join(" "));
            }
            Value::Strings(s) => {
                for (i, s) in s.iter().enumerate() {
                    if let Some(problem) = unquotable(s) {
                        let property = if parent == "/chosen" {
                            name.clone()
                        } else {
                            format!("{}/{name}", n.name)
                        };
                        return Err(GuestError::Malformed {
                            guest: guest.to_string(),
                            property,
                            problem: format!("\"{s}\": {problem}"),
                        });
                    }
                    let _ = write!(out, "{}\"{s}\"", if i > 0 { " " } else { "" });
                }
                out.push('\n');
            }
        }
    }
    for c in &n.children {
        emit(out, &path, c, guest)?;
    }
    Ok(())
}

/// Why `s` cannot go into a U-Boot command as `"s"`, if it cannot.
fn unquotable(s: &str) -> Option<&'static str> {
    if s.contains(['"', '\\', '$']) || s.chars().any(char::is_control) {
        return Some("U-Boot's shell would change a \", \\, $ or control character");
    }
    if s.starts_with(['<', '[']) {
        return Some("`fdt set` would read a leading < or [ as cells or bytes");
    }
    None
}

#[cfg(any(test, feature = "vm-fdt"))]
mod dtb {
    use super::*;
    use fdt::node::FdtNode;
    use fdt::Fdt;
    use vm_fdt::{FdtReserveEntry, FdtWriter};

    fn dt_error(e: vm_fdt::Error) -> GuestError {
        GuestError::DeviceTree(format!("writing: {e}"))
    }

    fn write(w: &mut FdtWriter, n: &Node) -> Result<(), GuestError> {
        let node = w.begin_node(&n.name).map_err(dt_error)?;
        for (name, v) in &n.props {
            w.property(name, &v.bytes()).map_err(dt_error)?;
        }
        for c in &n.children {
            write(w, c)?;
        }
        w.end_node(node).map_err(dt_error)
    }

    /// Writes `guests` as guest nodes into `w`, inside the node it has open
    /// (`/chosen`), `host-cpus` in `cpu_cells` cells (the host's `/cpus`
    /// `#address-cells`). Refused as [`uboot_commands`] refuses, strings
    /// aside.
    pub fn write_nodes(
        w: &mut FdtWriter,
        guests: &[GuestConfig],
        cpu_cells: u32,
    ) -> Result<(), GuestError> {
        for n in nodes(guests, cpu_cells)? {
            write(w, &n)?;
        }
        Ok(())
    }

    /// `base` (a whole DTB, e.g. QEMU's `dumpdtb`) with `guests` added as
    /// guest nodes at the end of `/chosen` (made if missing): every other
    /// node, property and memory reservation copied unchanged, `host-cpus`
    /// in `base`'s `/cpus` `#address-cells`. Refused: `base` unreadable, or
    /// already holding a guest node.
    pub fn with_guests(base: &[u8], guests: &[GuestConfig]) -> Result<Vec<u8>, GuestError> {
        let fdt = Fdt::new(base).map_err(|e| {
            GuestError::DeviceTree(format!("not a valid flattened device tree: {e:?}"))
        })?;
        let cpu_cells = fdt
            .find_node("/cpus")
            .and_then(|c| crate::u32_prop(&c, "#address-cells"))
            .ok_or_else(|| GuestError::DeviceTree("/cpus: #address-cells missing".into()))?;
        if let Some(g) = fdt
            .find_node("/chosen")
            .and_then(|c| c.children().find(|n| crate::has_compat(n, COMPATIBLE)))
        {
            return Err(GuestError::DeviceTree(format!(
                "/chosen already has guest node {}",
                g.name
            )));
        }
        copy_with(base, &nodes(guests, cpu_cells)?)
    }

    /// `dtb` without the root's children named in `drop` (by node name, or
    /// by name without its unit address: `"memory"` drops `memory@40000000`),
    /// everything else copied unchanged. For a DTB QEMU is given with `-dtb`:
    /// it replaces some nodes (hw/arm/boot.c, `arm_load_dtb`: the memory
    /// nodes, `/psci`) by turning the old ones into FDT_NOP tokens in place,
    /// and the `fdt` crate's path lookup (`Fdt::find_node`, 0.1.5) stops at
    /// NOP tokens between sibling nodes, so the nodes after them (`/cpus`,
    /// `/chosen`) would not be found.
    pub fn without_root_nodes(dtb: &[u8], drop: &[&str]) -> Result<Vec<u8>, GuestError> {
        copy_filtered(dtb, &[], &|name| {
            drop.iter()
                .any(|d| name == *d || name.split('@').next() == Some(*d))
        })
    }

    /// `base` with `extra` added at the end of `/chosen`.
    pub(in crate::guests) fn copy_with(base: &[u8], extra: &[Node]) -> Result<Vec<u8>, GuestError> {
        copy_filtered(base, extra, &|_| false)
    }

    /// `base` with `extra` added at the end of `/chosen`, less the root's
    /// children whose names `drop` picks.
    fn copy_filtered(
        base: &[u8],
        extra: &[Node],
        drop: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<u8>, GuestError> {
        let fdt = Fdt::new(base).map_err(|e| {
            GuestError::DeviceTree(format!("not a valid flattened device tree: {e:?}"))
        })?;
        let reservations = fdt
            .memory_reservations()
            .map(|r| FdtReserveEntry::new(r.address() as u64, r.size() as u64))
            .collect::<Result<Vec<_>, _>>()
            .map_err(dt_error)?;
        let mut w = FdtWriter::new_with_mem_reserv(&reservations).map_err(dt_error)?;
        // The header's boot_cpuid_phys (Devicetree Specification v0.4, 5.2):
        // the fdt crate does not expose it.
        if let Some(b) = base.get(28..32) {
            w.set_boot_cpuid_phys(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
        let root = fdt
            .find_node("/")
            .ok_or_else(|| GuestError::DeviceTree("no root node".into()))?;
        let top = w.begin_node("").map_err(dt_error)?;
        for (name, v) in root.properties().map(|p| (p.name, p.value)) {
            w.property(name, v).map_err(dt_error)?;
        }
        let mut chosen = false;
        for c in root.children().filter(|c| !drop(c.name)) {
            let is_chosen = c.name == "chosen";
            chosen |= is_chosen;
            copy(&mut w, c, if is_chosen { extra } else { &[] }, 1)?;
        }
        if !chosen {
            write(
                &mut w,
                &Node {
                    name: "chosen".to_string(),
                    props: Vec::new(),
                    children: extra.to_vec(),
                },
            )?;
        }
        w.end_node(top).map_err(dt_error)?;
        w.finish().map_err(dt_error)
    }

    fn copy(
        w: &mut FdtWriter,
        n: FdtNode<'_, '_>,
        extra: &[Node],
        depth: usize,
    ) -> Result<(), GuestError> {
        if depth > 32 {
            return Err(GuestError::DeviceTree("nodes nested deeper than 32".into()));
        }
        let node = w.begin_node(n.name).map_err(dt_error)?;
        for p in n.properties() {
            w.property(p.name, p.value).map_err(dt_error)?;
        }
        for c in n.children() {
            copy(w, c, &[], depth + 1)?;
        }
        for e in extra {
            write(w, e)?;
        }
        w.end_node(node).map_err(dt_error)
    }
}

#[cfg(test)]
pub(super) use dtb::copy_with;
#[cfg(any(test, feature = "vm-fdt"))]
pub use dtb::{with_guests, without_root_nodes, write_nodes};
