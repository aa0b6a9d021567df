//! The config-access fuzz harness, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/config_access.rs`) and the corpus replay test.
//!
//! Input: a sequence of 9-byte records `[bus, dev<<3|fn, reg lo, reg hi, op, value(4, LE)]`,
//! where `op` bit 7 selects a write and bits 3:0 select the size from
//! [`SIZES`] (including illegal ones). Each access goes through
//! `Segment::ecam_read/ecam_write` of the programmed reference topology.
//! Properties: no panic; a function that is not reachable reads all ones; an
//! illegal size reads all ones; no write changes a read-only bit of any function;
//! the effects, applied in order, never map over a live mapping, never unmap
//! what is not mapped, and leave mapped exactly what the segment decodes.

use crate::reference::programmed_reference;
use crate::scenario::{check_read_only, snapshot};
use vbus::decode::MappedSet;
use vbus::Bdf;

/// Access sizes the op nibble selects, legal and illegal.
pub const SIZES: [u8; 8] = [1, 2, 4, 8, 3, 0, 16, 4];

/// Runs one fuzz input; `Err` describes a violated property.
pub fn run_accesses(data: &[u8]) -> Result<(), String> {
    let mut seg = programmed_reference().map_err(|e| e.to_string())?;
    let mut mapped = MappedSet::default();
    let mut boot = vbus::Effects::new();
    for d in seg.decoded() {
        boot.push(vbus::Effect::Map {
            function: d.function,
            bar: d.bar,
            guest: d.guest,
            backing: d.backing,
            prefetchable: d.prefetchable,
        });
    }
    mapped
        .apply(&boot)
        .map_err(|e| format!("programmed reference: {e}"))?;
    for (n, r) in data.chunks_exact(9).enumerate() {
        let bus = r[0];
        let devfn = r[1];
        let reg = u16::from_le_bytes([r[2], r[3] & 0x0f]);
        let write = r[4] & 0x80 != 0;
        let size = SIZES[usize::from(r[4] & 7)];
        let value = u32::from_le_bytes([r[5], r[6], r[7], r[8]]);
        let offset = (u64::from(bus) << 20) | (u64::from(devfn) << 12) | u64::from(reg);
        let bdf = Bdf::from_routing_id(u16::from(bus) << 8 | u16::from(devfn));
        let reachable = seg.enumerate().iter().any(|(b, _)| *b == bdf);
        if write {
            let before = snapshot(&seg);
            let fx = seg.ecam_write(offset, size, u64::from(value) | u64::from(value) << 32);
            let mut fx2 = vbus::Effects::new();
            for e in fx.iter() {
                if let vbus::Effect::Reset { function } = *e {
                    fx2.extend(seg.reset_function(function));
                }
            }
            mapped.apply(&fx).map_err(|e| format!("access {n}: {e}"))?;
            mapped
                .apply(&fx2)
                .map_err(|e| format!("access {n}: reset: {e}"))?;
            if !mapped.matches(seg.decoded()) {
                return Err(format!("access {n}: effects and decoding disagree"));
            }
            check_read_only(&before, &seg).map_err(|e| format!("access {n}: {e}"))?;
        } else {
            let got = seg.ecam_read(offset, size);
            let single = matches!(size, 1 | 2 | 4) && u64::from(reg & 3) + u64::from(size) <= 4;
            let ones = match size {
                1 => 0xff,
                2 => 0xffff,
                _ => 0xffff_ffff,
            };
            if single && !reachable && got != ones {
                return Err(format!(
                    "access {n}: absent {bdf} +{reg:#x}/{size} read {got:#x}"
                ));
            }
            if !matches!(size, 1 | 2 | 4 | 8) && got != u64::MAX {
                return Err(format!("access {n}: illegal size {size} read {got:#x}"));
            }
        }
    }
    Ok(())
}

/// The vGIC fuzz harness (`fuzz/fuzz_targets/vgic_mmio.rs` and its corpus replay).
///
/// Input: 12-byte records `[op, size, offset (3, LE), value (7, LE)]` against a
/// two-vCPU vGIC with 64 SPIs. `op` low 3 bits: GICD read/write, GICR read/write,
/// ICC_SGI1R_EL1 write, line change, or a list-register round in which the
/// "guest" completes the entries the value's bits select. Properties: no panic;
/// an access of an illegal size reads 0; list registers the vGIC fills hold a
/// pending, implemented INTID; no INTID sits in two list registers of a vCPU;
/// a GICD_SETSPI_NSR write never pends an SPI outside the MBI range (64..96).
pub fn run_vgic(data: &[u8]) -> Result<(), String> {
    use arch_emu::vgic::{lr, MbiRange, Vgic, GICD_SETSPI_NSR, GICD_SIZE, GICR_FRAME_SIZE};
    const SPIS: u32 = 64;
    let mut g = Vgic::new(&[0, 1], SPIS);
    if !g.set_mbi_range(MbiRange {
        first: 64,
        count: 32,
    }) {
        return Err("MBI range 64..96 refused".into());
    }
    // GICD_ISPENDR1 (SPIs 32..63) and GICD_ISPENDR2 (64..95, all MBI).
    let spi_pending = |g: &mut Vgic| g.gicd_read(0x204, 4);
    let mut lrs = [[0u64; 4]; 2];
    for (n, r) in data.chunks_exact(12).enumerate() {
        let vcpu = usize::from(r[0] >> 7);
        let size = [1u8, 2, 4, 8, 3, 0, 16, 4][usize::from(r[1] & 7)];
        let offset = u64::from(r[2]) | u64::from(r[3]) << 8 | u64::from(r[4]) << 16;
        let mut v = [0u8; 8];
        v[..7].copy_from_slice(&r[5..12]);
        let value = u64::from_le_bytes(v);
        match r[0] & 7 {
            0 => {
                let got = g.gicd_read(offset % GICD_SIZE, size);
                if !matches!(size, 1 | 2 | 4 | 8) && got != 0 {
                    return Err(format!(
                        "record {n}: GICD read of size {size} gave {got:#x}"
                    ));
                }
            }
            1 => {
                let before = spi_pending(&mut g);
                g.gicd_write(offset % GICD_SIZE, size, value);
                if offset % GICD_SIZE == GICD_SETSPI_NSR && spi_pending(&mut g) & !before != 0 {
                    return Err(format!(
                        "record {n}: SETSPI_NSR {value:#x} pended an SPI below the MBI range"
                    ));
                }
            }
            2 => {
                let got = g.gicr_read(offset % (3 * GICR_FRAME_SIZE), size);
                if !matches!(size, 1 | 2 | 4 | 8) && got != 0 {
                    return Err(format!(
                        "record {n}: GICR read of size {size} gave {got:#x}"
                    ));
                }
            }
            3 => {
                g.gicr_write(offset % (3 * GICR_FRAME_SIZE), size, value);
            }
            4 => {
                g.write_sgi1r(vcpu, value);
            }
            5 => {
                g.set_line(vcpu, (offset % 1100) as u32, value & 1 != 0);
            }
            _ => {
                let l = &mut lrs[vcpu];
                // What the hardware's virtual CPU interface can do to an entry:
                // acknowledge a pending one, or complete (deactivate) one.
                for (i, e) in l.iter_mut().enumerate() {
                    match ((value >> (2 * i)) & 3, lr::state(*e)) {
                        (1, s) if s != lr::INVALID => *e &= !(3 << lr::STATE_SHIFT),
                        (2, lr::PENDING) => {
                            *e = (*e & !(3 << lr::STATE_SHIFT)) | (lr::ACTIVE << lr::STATE_SHIFT)
                        }
                        _ => {}
                    }
                }
                let before = *l;
                g.fold(vcpu, l);
                g.flush(vcpu, l);
                for (i, e) in l.iter().enumerate() {
                    if *e != before[i] && lr::state(*e) != lr::INVALID {
                        let id = *e & lr::VINTID_MASK;
                        if id >= u64::from(32 + SPIS) {
                            return Err(format!("record {n}: LR{i} holds INTID {id}"));
                        }
                    }
                }
            }
        }
        for (v, l) in lrs.iter().enumerate() {
            let mut ids: Vec<u64> = l
                .iter()
                .filter(|e| lr::state(**e) != lr::INVALID)
                .map(|e| e & lr::VINTID_MASK)
                .collect();
            let total = ids.len();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() != total {
                return Err(format!(
                    "record {n}: vCPU {v} has an INTID in two LRs: {l:x?}"
                ));
            }
        }
    }
    Ok(())
}

/// The assigned-function fuzz harness (`fuzz/fuzz_targets/assigned_config.rs`
/// and its corpus replay).
///
/// Input: 8-byte records `[op, size, offset (2, LE), value (4, LE)]` against
/// the e1000e of `passthrough::testing::assigned_e1000e` (host 01:00.0 behind
/// a root port). `op` low 2 bits: config read, config write, reset (as the
/// owner would on a `FunctionLevelReset` request), or a read of the whole
/// standard capability chain. Properties: no panic; an access of an illegal
/// size or crossing a dword reads all ones; no host write ever reaches a BAR,
/// the Expansion ROM or a bridge's bus numbers or windows; the host BARs hold
/// the assigned addresses after every record; the chain from 34h stays
/// within 40h..FFh and ends.
pub fn run_assigned(data: &[u8]) -> Result<(), String> {
    use passthrough::testing::{assigned_e1000e, forbidden_writes};
    use vbus::PciFunction;
    let mut f = assigned_e1000e();
    let bars: Vec<(u16, u32)> = [0x10u16, 0x14, 0x1c]
        .iter()
        .map(|o| {
            (
                *o,
                f.host()
                    .function("e1000e")
                    .map_or(0, |h| h.config().raw(*o, 4)),
            )
        })
        .collect();
    for (n, r) in data.chunks_exact(8).enumerate() {
        let size = [1u8, 2, 4, 8, 3, 0, 4, 2][usize::from(r[1] & 7)];
        let offset = u16::from_le_bytes([r[2], r[3]]) & 0x1fff;
        let value = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let mut requests = Vec::new();
        match r[0] & 3 {
            0 => {
                let got = f.config_read(offset, size);
                let legal = matches!(size, 1 | 2 | 4)
                    && (offset & 3) + u16::from(size) <= 4
                    && usize::from(offset) + usize::from(size) <= 4096;
                let ones = match size {
                    1 => 0xff,
                    2 => 0xffff,
                    _ => 0xffff_ffff,
                };
                if !legal && got != ones {
                    return Err(format!(
                        "record {n}: illegal read {offset:#x}/{size} gave {got:#x}"
                    ));
                }
            }
            1 => f.config_write(offset, size, value, &mut requests),
            2 => f.reset(),
            _ => {
                let mut at = f.config_read(0x34, 1) as u16;
                let mut hops = 0;
                while at != 0 {
                    if !(0x40..0x100).contains(&at) || hops > 48 {
                        return Err(format!("record {n}: capability chain reaches {at:#x}"));
                    }
                    at = f.config_read(at + 1, 1) as u16;
                    hops += 1;
                }
            }
        }
        if requests.contains(&vbus::Request::FunctionLevelReset) {
            f.reset();
        }
        let bad = forbidden_writes(f.host());
        if !bad.is_empty() {
            // Reset restores the host BARs to their assigned values: allowed.
            let moved: Vec<_> = bad
                .iter()
                .filter(|(name, off, v)| {
                    *name != "e1000e" || !bars.iter().any(|(o, b)| o == off && b == v)
                })
                .collect();
            if !moved.is_empty() {
                return Err(format!("record {n}: host writes {moved:x?}"));
            }
        }
        for (o, b) in &bars {
            let now = f
                .host()
                .function("e1000e")
                .map_or(0, |h| h.config().raw(*o, 4));
            if now != *b {
                return Err(format!(
                    "record {n}: host BAR at {o:#x} is {now:#x}, assigned {b:#x}"
                ));
            }
        }
    }
    Ok(())
}

/// Guest RAM of the virtio harnesses and where the queue sits in it.
const VIRTIO_RAM: arch_emu::addr::Ipa = arch_emu::addr::Ipa(0x4000_0000);
const VIRTIO_RAM_LEN: usize = 0x4000;

fn virtio_blk(
    deferred: bool,
) -> (
    virtio_devs::pci::VirtioPci<
        virtio_devs::blk::VirtioBlk<virtio_devs::blk::RamDisk>,
        virtio_devs::testing::VecMemory,
    >,
    virtio_devs::testing::VecMemory,
    virtio_devs::testing::MockQueue,
) {
    use virtio_devs::testing::{MockQueue, VecMemory};
    let mem = VecMemory::new(
        VIRTIO_RAM,
        VIRTIO_RAM_LEN,
        arch_emu::addr::Pa(0x9_0000_0000),
    );
    let mock = MockQueue::new(&mem, VIRTIO_RAM, 16);
    let disk = virtio_devs::blk::RamDisk::new(1 << 16);
    let disk = if deferred { disk.deferred() } else { disk };
    let dev = virtio_devs::pci::VirtioPci::new(virtio_devs::blk::VirtioBlk::new(disk), mem.clone());
    (dev, mem, mock)
}

/// The virtio-pci transport harness (`fuzz/fuzz_targets/virtio_pci.rs`).
///
/// Input: 11-byte records `[op, off lo, off hi, value(8, LE)]`; `op` bit 7
/// selects a write, bit 6 config space instead of BAR 0, bits 2:0 the size
/// from [`SIZES`]. The device starts initialised with a live queue.
/// Properties: no panic; an access of an illegal size to BAR 0 reads 0;
/// INTx is asserted only while ISR status is non-zero (a 1-byte ISR read that
/// returns 0 leaves INTx low); the in-flight count never exceeds the queue size.
pub fn run_virtio_pci(data: &[u8]) -> Result<(), String> {
    use vbus::{Intx, PciFunction};
    let (mut dev, _mem, mock) = virtio_blk(data.first().is_some_and(|b| b & 1 != 0));
    let features = virtio_devs::device::feature::VERSION_1
        | virtio_devs::device::feature::EVENT_IDX
        | virtio_devs::device::feature::INDIRECT_DESC
        | virtio_devs::device::feature::RING_RESET;
    virtio_devs::testing::driver_init(&mut dev, &mock, features);
    let mut rq = Vec::new();
    for (n, r) in data.chunks_exact(11).enumerate() {
        let op = r[0];
        let off = u64::from(u16::from_le_bytes([r[1], r[2]]));
        let value = u64::from_le_bytes([r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]]);
        let size = SIZES[usize::from(op & 7)];
        let write = op & 0x80 != 0;
        if op & 0x40 != 0 {
            let off = (off & 0xfff) as u16;
            if write {
                dev.config_write(off, size, value as u32, &mut rq);
            } else {
                dev.config_read(off, size);
            }
        } else {
            let off = off % 0x4010;
            if write {
                dev.bar_write(0, off, size, value, &mut rq);
            } else {
                let v = dev.bar_read(0, off, size, &mut rq);
                if !matches!(size, 1 | 2 | 4 | 8) && v != 0 {
                    return Err(format!("access {n}: size {size} read {v:#x}"));
                }
                if off == virtio_devs::pci::ISR_OFFSET
                    && size == 1
                    && v == 0
                    && dev.intx() == Intx::Level(true)
                {
                    return Err(format!("access {n}: ISR read 0 with INTx high"));
                }
            }
        }
        if dev.device().in_flight() > 256 {
            return Err(format!(
                "access {n}: {} in flight",
                dev.device().in_flight()
            ));
        }
        if n % 8 == 7 {
            dev.poll();
        }
    }
    Ok(())
}

/// The descriptor-chain and virtio-blk request harness
/// (`fuzz/fuzz_targets/virtio_blk.rs`).
///
/// Input: records `[op, at lo, at hi, len, bytes(len)]`: `len` bytes are
/// written into guest RAM at `at % RAM` (descriptor table, rings, headers,
/// data — everything the guest controls), then `op` bit 0 notifies the
/// queue and bit 1 polls the backend. The device starts initialised with a
/// live queue of 16 (EVENT_IDX, INDIRECT_DESC, DISCARD, WRITE_ZEROES).
/// Properties: no panic; in-flight requests never exceed the queue size.
pub fn run_virtio_blk(data: &[u8]) -> Result<(), String> {
    use virtio_devs::memory::GuestMemory;
    let (mut dev, mem, mock) = virtio_blk(data.first().is_some_and(|b| b & 0x80 != 0));
    let features = virtio_devs::device::feature::VERSION_1
        | virtio_devs::device::feature::EVENT_IDX
        | virtio_devs::device::feature::INDIRECT_DESC
        | virtio_devs::blk::feature::DISCARD
        | virtio_devs::blk::feature::WRITE_ZEROES
        | virtio_devs::blk::feature::FLUSH;
    virtio_devs::testing::driver_init(&mut dev, &mock, features);
    let mut rest = data;
    let mut n = 0;
    while let [op, lo, hi, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        let at = u64::from(u16::from_le_bytes([*lo, *hi])) % VIRTIO_RAM_LEN as u64;
        let at = arch_emu::addr::Ipa(VIRTIO_RAM.0 + at);
        // Writes that run off the end of RAM fail: the guest cannot do them either.
        let _ = mem.write(at, bytes);
        if op & 1 != 0 {
            virtio_devs::testing::notify(&mut dev, 0);
        }
        if op & 2 != 0 {
            dev.poll();
        }
        if dev.device().in_flight() > usize::from(mock.size()) {
            return Err(format!(
                "record {n}: {} in flight",
                dev.device().in_flight()
            ));
        }
        rest = next;
        n += 1;
    }
    Ok(())
}

/// The MSI-X table harness (`fuzz/fuzz_targets/msix_table.rs`): a
/// virtio-blk below a root port of a [`vbus::Segment`] whose MSI target is
/// the doorbell `0x0800_0040` with the MBI range 64..128, initialised with
/// a live queue, driven through ECAM and BAR 0 as a guest would.
///
/// Input: 11-byte records `[op, off lo, off hi, value(8, LE)]`; `op` bits
/// 7:6 pick the target: 0 the MSI-X table (`off % 0x1000` in its page), 1
/// the PBA, 2 Message Control (bit 3 clear) or `config_msix_vector` /
/// `queue_msix_vector` (bit 3 set, bit 4 which), 3 one request on the
/// queue; bit 3 selects a write, bits 2:0 the size from [`SIZES`].
/// Properties: no panic; every [`vbus::Effect::Msi`] names an SPI of the
/// MBI range; no INTx is raised while MSI-X is enabled; a table or PBA read
/// of a width or alignment PCI 6.8.2 leaves undefined, or past the last
/// entry, reads all ones; the segment accounts for every message the table
/// sent (delivered + forged = sent).
pub fn run_msix_table(data: &[u8]) -> Result<(), String> {
    use arch_emu::addr::{Ipa, MemRange};
    use arch_emu::vgic::MbiRange;
    use vbus::{Effect, MsiTarget, Segment};
    use virtio_devs::pci::{common, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, NOTIFY_OFFSET};
    const BAR: u64 = 0x80_0000_0000;
    const RANGE: MbiRange = MbiRange {
        first: 64,
        count: 64,
    };
    let ecam = |bus: u64, reg: u64| (bus << 20) | (u64::from(bus == 0) << 15) | reg;
    let (mut dev, _mem, mut mock) = virtio_blk(false);
    // No EVENT_IDX: every request the input makes notifies.
    let features =
        virtio_devs::device::feature::VERSION_1 | virtio_devs::device::feature::INDIRECT_DESC;
    virtio_devs::testing::driver_init(&mut dev, &mock, features);
    let mut s = Segment::new(0, 4);
    s.set_apertures(&[MemRange::new(Ipa(BAR), 0x40_0000_0000)]);
    s.set_intx_spis([35, 36, 37, 38]);
    s.set_msi_target(Some(MsiTarget {
        doorbell: Ipa(0x0800_0040),
        spis: RANGE,
    }));
    s.add_bus0(1, 0, Box::new(vbus::testing::TestBridge::new()))
        .map_err(|e| format!("{e:?}"))?;
    let id = s
        .attach_below(1, 0, Box::new(dev))
        .map_err(|e| format!("{e:?}"))?;
    let mut fx = vec![
        s.ecam_write(ecam(0, 0x18), 4, 0x0001_0100),
        s.ecam_write(ecam(0, 0x24), 4, 0x0001_0001),
        s.ecam_write(ecam(0, 0x28), 4, 0x80),
        s.ecam_write(ecam(0, 0x2c), 4, 0x80),
        s.ecam_write(ecam(0, 0x04), 2, 0x0006),
        s.ecam_write(ecam(1, 0x10), 4, BAR & 0xffff_ffff),
        s.ecam_write(ecam(1, 0x14), 4, BAR >> 32),
        s.ecam_write(ecam(1, 0x04), 2, 0x0006),
    ];
    // The MSI-X capability: walk the list from 0x34 on bus 1.
    let mut cap = s.ecam_read(ecam(1, 0x34), 1);
    while cap != 0 && s.ecam_read(ecam(1, cap), 1) != 0x11 {
        cap = s.ecam_read(ecam(1, cap + 1), 1);
    }
    if cap == 0 {
        return Err("no MSI-X capability in the list".into());
    }
    let vectors = (s.ecam_read(ecam(1, cap + 2), 2) & 0x7ff) + 1;
    for (n, r) in data.chunks_exact(11).enumerate() {
        let op = r[0];
        let off = u64::from(u16::from_le_bytes([r[1], r[2]])) % 0x1000;
        let value = u64::from_le_bytes([r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]]);
        let size = SIZES[usize::from(op & 7)];
        let write = op & 0x08 != 0;
        let mut effects = vbus::Effects::new();
        match op >> 6 {
            0 | 1 => {
                let (base, len) = if op >> 6 == 0 {
                    (MSIX_TABLE_OFFSET, vectors * 16)
                } else {
                    (MSIX_PBA_OFFSET, vectors.div_ceil(64) * 8)
                };
                let at = Ipa(BAR + base + off);
                if write {
                    effects = s.mmio_write(at, size, value).unwrap_or_default();
                } else if let Some((v, e)) = s.mmio_read(at, size) {
                    effects = e;
                    let defined = matches!(size, 4 | 8)
                        && off % u64::from(size) == 0
                        && off + u64::from(size) <= len;
                    let ones = if size >= 8 {
                        u64::MAX
                    } else {
                        (1u64 << (8 * u32::from(size))) - 1
                    };
                    if matches!(size, 1 | 2 | 4 | 8) && !defined && v != ones {
                        return Err(format!(
                            "access {n}: {size}-byte read at {base:#x}+{off:#x} gave {v:#x}"
                        ));
                    }
                }
            }
            2 if !write => effects = s.ecam_write(ecam(1, cap + 2), 2, value & 0xffff),
            2 => {
                let reg = if op & 0x10 != 0 {
                    common::QUEUE_MSIX_VECTOR
                } else {
                    common::CONFIG_MSIX_VECTOR
                };
                effects = s
                    .mmio_write(Ipa(BAR + reg), 2, value & 0xffff)
                    .unwrap_or_default();
            }
            _ => {
                mock.push(&[
                    (Ipa(VIRTIO_RAM.0 + 0x2000), 16, false),
                    (Ipa(VIRTIO_RAM.0 + 0x3000), 1, true),
                ]);
                effects = s
                    .mmio_write(Ipa(BAR + NOTIFY_OFFSET), 2, 0)
                    .unwrap_or_default();
            }
        }
        fx.push(effects);
        let enabled = s.ecam_read(ecam(1, cap + 2), 2) & 0x8000 != 0;
        for e in fx.drain(..).flat_map(|e| e.into_iter()) {
            match e {
                Effect::Msi { spi, .. } if !RANGE.contains(spi) => {
                    return Err(format!("access {n}: MSI to SPI {spi}"));
                }
                Effect::Intx { level: true, .. } if enabled => {
                    return Err(format!("access {n}: INTx raised with MSI-X enabled"));
                }
                _ => {}
            }
        }
        let msi = s.msi_stats(id).unwrap_or_default();
        let sent = s
            .function(id)
            .and_then(|f| f.msix_stats())
            .map_or(0, |t| t.sent);
        if msi.delivered + msi.forged != sent {
            return Err(format!(
                "access {n}: {sent} sent but {} delivered + {} forged",
                msi.delivered, msi.forged
            ));
        }
    }
    Ok(())
}

/// The assigned function's MSI-X harness (`fuzz/fuzz_targets/assigned_msix.rs`):
/// the e1000e assigned with its MSI-X shown (5 vectors, table at BAR3 + 0,
/// PBA at BAR3 + 2000h), Memory Space on.
///
/// Input: 8-byte records `[op, off lo, off hi, size, value(4, LE)]`; `op`
/// low 2 bits: a guest read of BAR3, a guest write of BAR3 (offset below
/// 4000h, size from `[1, 2, 4, 8, 3, 0, 16, 4]`), a config write of Message
/// Control (MSI-X Enable, Function Mask) or Command (BAR accesses are
/// skipped while its Memory Space Enable is clear), or an interrupt of the
/// device on event `value % 8`. Properties: no panic; an access of a size
/// other than 1, 2, 4, 8 reads all ones; the device's table holds only the
/// host doorbell and each vector's own EventID (the guest's pairs are never
/// written); a vector is unmasked on the device only while the guest's entry
/// is unmasked and names its doorbell and an MBI SPI; every message sent is
/// a guest entry's (an event on a vector the device masks, as one in flight
/// when the guest forged its entry, may send a forged message: the segment
/// drops and counts it, see `vbus::Segment::host_msi`).
pub fn run_assigned_msix(data: &[u8]) -> Result<(), String> {
    use passthrough::testing::{assigned_e1000e_msi, TEST_DOORBELL, TEST_GUEST_DOORBELL, TEST_MBI};
    use vbus::PciFunction;
    let mut f = assigned_e1000e_msi();
    let mut rq = Vec::new();
    f.config_write(0x04, 2, 0x6, &mut rq);
    let bar3 = f
        .layout()
        .bars
        .iter()
        .find(|b| b.index == 3)
        .map(|b| b.cpu.0)
        .ok_or("no BAR3")?;
    for (n, r) in data.chunks_exact(8).enumerate() {
        let off = u64::from(u16::from_le_bytes([r[1], r[2]]) & 0x3fff);
        let size = [1u8, 2, 4, 8, 3, 0, 16, 4][usize::from(r[3] & 7)];
        let value = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let mut rq = Vec::new();
        // The segment routes BAR accesses only while the guest's Memory
        // Space Enable is set (the BAR decodes).
        let decodes = f.config_read(0x04, 2) & 0x2 != 0;
        match r[0] & 3 {
            0 | 1 if !decodes => {}
            0 => {
                let got = f.bar_read(3, off, size, &mut rq);
                if !matches!(size, 1 | 2 | 4 | 8) && got != u64::MAX {
                    return Err(format!("record {n}: read {off:#x}/{size} gave {got:#x}"));
                }
            }
            1 => f.bar_write(3, off, size, u64::from(value) * 0x1_0000_0001, &mut rq),
            2 => {
                let at = if r[0] & 4 != 0 { 0x04 } else { 0xa2 };
                f.config_write(at, 2, value & 0xffff, &mut rq);
            }
            _ => f.host_msi(value % 8),
        }
        let mut sent = Vec::new();
        f.take_msi(&mut sent);
        let entries: Vec<_> = (0..5).filter_map(|v| f.host_msi_message(v)).collect();
        for m in sent {
            if !entries.contains(&m) {
                return Err(format!("record {n}: sent {m:x?}, no guest entry holds it"));
            }
        }
        for v in 0..5u64 {
            let e = bar3 + 16 * v;
            let h = f.host();
            let (lo, hi, data, ctl) = (
                h.mmio32(e),
                h.mmio32(e + 4),
                h.mmio32(e + 8),
                h.mmio32(e + 12),
            );
            if lo != TEST_DOORBELL as u32 || hi != 0 || u64::from(data) != v {
                return Err(format!(
                    "record {n}: device entry {v} holds {hi:#x}:{lo:#x} data {data:#x}"
                ));
            }
            if ctl & 1 == 0 {
                let guest_masked = f.bar_read(3, 16 * v + 12, 4, &mut rq) & 1 != 0;
                let valid = f
                    .host_msi_message(v as u32)
                    .is_some_and(|m| m.address == TEST_GUEST_DOORBELL && TEST_MBI.contains(m.data));
                if guest_masked || !valid {
                    return Err(format!(
                        "record {n}: device vector {v} unmasked (guest masked {guest_masked}, valid {valid})"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The assigned function's MSI harness (`fuzz/fuzz_targets/assigned_msi.rs`):
/// an e1000e on a fake host whose MSI capability (50h) asks for 4 vectors
/// with 64-bit addresses and per-vector masking, assigned with MSI-X (5
/// vectors, EventIDs 0..5) and MSI (EventIDs 8..12) routed, Memory Space on.
///
/// Input: 8-byte records `[op, off, size, unused, value(4, LE)]`; `op` low 2
/// bits: a guest config read (0) or write (1) at `50h + off % 1Ch` (past
/// the capability too) of a size from `[1, 2, 4, 3, 0, 8, 2, 4]`; a write of
/// Command (`op` bit 2) or MSI-X's Message Control (2); the device
/// signalling EventID `value % 16` (3), or with `op` bit 2 its Pending Bits
/// set to `value` as the device would. Properties: no panic; a read of a
/// size other than 1, 2, 4 reads all ones; the device's MSI capability
/// holds only the host doorbell and the first MSI EventID (the guest's
/// message is never written); MSI and MSI-X are never enabled together at
/// the device, read after every record and replayed over every config
/// write the device got; the device's MSI is enabled only while the guest
/// has MSI on, MSI-X off and every allocated vector's message naming its
/// doorbell and an MBI SPI, with the guest's Multiple Message Enable and
/// Mask Bits; while the guest has MSI on the device's Interrupt Disable is
/// set; the guest never reads a Multiple Message Enable above its Capable
/// or Extended Message Data; every message sent is one the guest
/// programmed for that event (`host_msi_message`).
pub fn run_assigned_msi(data: &[u8]) -> Result<(), String> {
    use passthrough::testing::{assigned_msi_of, FakeFunction, TEST_DOORBELL, TEST_MBI};
    use passthrough::ConfigAccess;
    use vbus::PciFunction;
    const CAP: u16 = 0x50;
    const MSIX_CONTROL: u16 = 0xa2;
    let mut f = assigned_msi_of(FakeFunction::e1000e_with_msi(CAP, 2, true, true));
    let events = f.events();
    if (events.msix, events.msi_base, events.msi) != (5, 8, 4) {
        return Err(format!("unexpected EventIDs {events:?}"));
    }
    let mut rq = Vec::new();
    f.config_write(0x04, 2, 0x6, &mut rq);
    let bdf = f.layout().bdf;
    let guest_doorbell = passthrough::testing::TEST_GUEST_DOORBELL;
    for (n, r) in data.chunks_exact(8).enumerate() {
        let off = CAP + u16::from(r[1]) % 0x1c;
        let size = [1u8, 2, 4, 3, 0, 8, 2, 4][usize::from(r[2] & 7)];
        let value = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let mut rq = Vec::new();
        match r[0] & 3 {
            0 => {
                let got = f.config_read(off, size);
                let ones = match size {
                    1 => 0xff,
                    2 => 0xffff,
                    _ => u32::MAX,
                };
                if !matches!(size, 1 | 2 | 4) && got != ones {
                    return Err(format!("record {n}: read {off:#x}/{size} gave {got:#x}"));
                }
            }
            1 => f.config_write(off, size, value, &mut rq),
            2 => {
                let at = if r[0] & 4 != 0 { 0x04 } else { MSIX_CONTROL };
                f.config_write(at, 2, value & 0xffff, &mut rq);
            }
            _ if r[0] & 4 != 0 => {
                f.host_mut().set_register("e1000e", CAP + 0x14, 4, value);
            }
            _ => f.host_msi(value % 16),
        }
        // What the guest reads.
        let control = f.config_read(CAP + 2, 2);
        let mme = (control >> 4) & 7;
        if (control >> 1) & 7 != 2 || mme > 2 || control & 0x0600 != 0 {
            return Err(format!("record {n}: guest Message Control {control:#x}"));
        }
        if f.config_read(CAP + 0x0e, 2) != 0 {
            return Err(format!("record {n}: Extended Message Data shown"));
        }
        let guest_on = control & 1 != 0;
        let guest_msix = f.config_read(MSIX_CONTROL, 2) & 0x8000 != 0;
        let guest_mask = f.config_read(CAP + 0x10, 4);
        let messages: Vec<_> = (0..4).map(|v| f.host_msi_message(8 + v)).collect();
        let valid = (0..1u32 << mme).all(|v| {
            messages
                .get(v as usize)
                .copied()
                .flatten()
                .is_some_and(|m| m.address == guest_doorbell && TEST_MBI.contains(m.data))
        });
        // What the device holds.
        let h = f.host_mut();
        let dev_control = h.read32(bdf, CAP) >> 16;
        let dev_msix = h.read32(bdf, MSIX_CONTROL & !3) >> 16;
        let (lo, hi, dev_data) = (
            h.read32(bdf, CAP + 4),
            h.read32(bdf, CAP + 8),
            h.read32(bdf, CAP + 12),
        );
        let dev_mask = h.read32(bdf, CAP + 0x10);
        let dev_cmd = h.read32(bdf, 0x04);
        if lo != TEST_DOORBELL as u32 || hi != 0 || dev_data != 8 {
            return Err(format!(
                "record {n}: device MSI holds {hi:#x}:{lo:#x} data {dev_data:#x}"
            ));
        }
        let dev_on = dev_control & 1 != 0;
        if dev_on && dev_msix & 0x8000 != 0 {
            return Err(format!(
                "record {n}: MSI and MSI-X both enabled at the device"
            ));
        }
        if dev_on && !(guest_on && !guest_msix && valid) {
            return Err(format!(
                "record {n}: device MSI on (guest on {guest_on}, MSI-X {guest_msix}, valid {valid})"
            ));
        }
        if dev_on && ((dev_control >> 4) & 7 != mme || dev_mask & 0xf != guest_mask & 0xf) {
            return Err(format!(
                "record {n}: device control {dev_control:#x} mask {dev_mask:#x}, guest {control:#x} {guest_mask:#x}"
            ));
        }
        if guest_on && dev_cmd & 0x0400 == 0 {
            return Err(format!(
                "record {n}: INTx enabled at the device with MSI on"
            ));
        }
        let mut sent = Vec::new();
        f.take_msi(&mut sent);
        let programmed: Vec<_> = (0..16).filter_map(|e| f.host_msi_message(e)).collect();
        if let Some(m) = sent.iter().find(|m| !programmed.contains(m)) {
            return Err(format!(
                "record {n}: sent {m:x?}, no guest message holds it"
            ));
        }
    }
    // Every state the device went through: never both enables.
    let (mut msi, mut msix) = (false, false);
    for (name, off, v) in f.host().writes() {
        if name != "e1000e" {
            continue;
        }
        if off == CAP {
            msi = v & 1 << 16 != 0;
        }
        if off == MSIX_CONTROL & !3 {
            msix = v & 1 << 31 != 0;
        }
        if msi && msix {
            return Err(format!("device write {off:#x} <- {v:#x} left both enabled"));
        }
    }
    Ok(())
}
