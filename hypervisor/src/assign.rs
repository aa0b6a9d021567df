//! Host devices given to the guest: the hypervisor option
//! `pci-passthrough=SSSS:BB:DD.F[,...]`, the host segments they sit on
//! enumerated and assigned as firmware would, each device's layout cached,
//! its INTx line and SMMU stream found, and the device reset before the
//! guest gets it. The host disk (`host-disk=`, driven by the hypervisor:
//! `hostdisk.rs`) has its segment enumerated and assigned in the same pass.
//!
//! Without an SMMU translating a device's DMA, passthrough is refused unless
//! the option `pci-passthrough-unconfined` accepts unconfined DMA (and the
//! boot says so).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use passthrough::{
    assign, enumerate, AssignedFunction, Assignment, HostFunction, HostRange, HostTopology,
    HostWindows,
};
use platform::{PciSpace, PcieHost, Platform};
use vbus::{Pa, Sbdf};

use crate::pci::HostEcam;

/// One host device to give to the guest, ready to be placed.
pub struct Assigned {
    /// Its host address.
    pub sbdf: Sbdf,
    /// The function the guest will see.
    pub function: AssignedFunction<HostEcam>,
    /// The physical SPI of its INTx pin, if it has one.
    pub intid: Option<u32>,
    /// The SMMU (index in the platform's list) and StreamID that translate
    /// its DMA; `None` when unconfined DMA was accepted.
    pub stream: Option<(usize, u32)>,
    /// The ITS (index in `Platform::its`) and DeviceID its MSIs reach, from
    /// the host bridge's `msi-map` or `msi-parent`.
    pub msi: Option<(usize, u32)>,
}

/// What a host segment looked like after assignment, kept to read back
/// (nothing a guest does may change a host BAR, bus number or window).
pub struct HostSegment {
    /// The host bridge's DT node.
    pub node: String,
    /// Its config access.
    pub ecam: HostEcam,
    /// The enumeration.
    pub topology: HostTopology,
    /// The resources assigned.
    pub assignment: Assignment,
}

/// The hypervisor options that name host devices.
pub struct Options {
    /// `pci-passthrough=`.
    pub devices: Vec<Sbdf>,
    /// `pci-passthrough-unconfined`.
    pub unconfined: bool,
    /// `host-disk=`: the host virtio-blk the hypervisor drives itself.
    pub host_disk: Option<Sbdf>,
}

impl Options {
    /// Reads the options from the hypervisor's bootargs; the error names the bad item.
    pub fn parse(bootargs: &str) -> Result<Options, String> {
        let mut devices = Vec::new();
        let mut unconfined = false;
        let mut host_disk = None;
        for arg in bootargs.split_whitespace() {
            if let Some(list) = arg.strip_prefix("pci-passthrough=") {
                for item in list.split(',').filter(|s| !s.is_empty()) {
                    let sbdf: Sbdf = item
                        .parse()
                        .map_err(|e| format!("bootargs: pci-passthrough={item}: {e}"))?;
                    if devices.contains(&sbdf) {
                        return Err(format!("bootargs: pci-passthrough: {sbdf} named twice"));
                    }
                    devices.push(sbdf);
                }
            } else if arg == "pci-passthrough-unconfined" {
                unconfined = true;
            } else if let Some(item) = arg.strip_prefix("host-disk=") {
                let sbdf: Sbdf = item
                    .parse()
                    .map_err(|e| format!("bootargs: host-disk={item}: {e}"))?;
                if host_disk.is_some_and(|d| d != sbdf) {
                    return Err(format!(
                        "bootargs: host-disk: a second disk {sbdf} (one is driven)"
                    ));
                }
                host_disk = Some(sbdf);
            }
        }
        if let Some(d) = host_disk {
            if devices.contains(&d) {
                return Err(format!(
                    "bootargs: host-disk={d} is also in pci-passthrough: a device has one owner"
                ));
            }
        }
        Ok(Options {
            devices,
            unconfined,
            host_disk,
        })
    }
}

/// Where the host disk (`host-disk=`) sits, once its segment is assigned:
/// what `hostdisk::HostDisk::probe` needs.
pub struct DiskSite {
    /// Its host address.
    pub sbdf: Sbdf,
    /// Config access to its segment.
    pub ecam: HostEcam,
    /// Its layout (BARs with their host addresses, INTx route).
    pub layout: HostFunction,
    /// The physical SPI of its INTx pin, if it has one.
    pub intid: Option<u32>,
    /// The SMMU (index) and StreamID its DMA goes through, if any.
    pub stream: Option<(usize, u32)>,
    /// The ITS (index in `Platform::its`) and DeviceID its MSIs reach, from
    /// the host bridge's `msi-map` or `msi-parent`.
    pub msi: Option<(usize, u32)>,
    /// Whether the host bridge says `dma-coherent`.
    pub coherent: bool,
}

/// What [`prepare`] found and assigned.
pub struct Prepared {
    /// The passed-through devices, ready to be placed.
    pub assigned: Vec<Assigned>,
    /// The host segments enumerated and assigned (kept for the read-back).
    pub segments: Vec<HostSegment>,
    /// The host disk, when `host-disk=` names one.
    pub host_disk: Option<DiskSite>,
}

/// Host resources are assigned from the upper half of each host bridge
/// window, so that a guest (which assigns its own from the bottom of its
/// apertures) never gets a device at its host address by accident.
fn upper_half(r: HostRange) -> HostRange {
    let half = (r.size / 2) & !((1 << 20) - 1);
    HostRange {
        cpu: Pa(r.cpu.0 + half),
        pci: r.pci + half,
        size: r.size - half,
    }
}

fn windows(host: &PcieHost) -> Result<HostWindows, String> {
    let range = |space: PciSpace| {
        host.ranges
            .iter()
            .find(|r| r.space == space)
            .map(|r| HostRange {
                cpu: Pa(r.cpu_addr),
                pci: r.pci_addr,
                size: r.size,
            })
    };
    let mem32 = range(PciSpace::Mem32)
        .ok_or_else(|| format!("{}: property `ranges`: no 32-bit memory range", host.node))?;
    Ok(HostWindows {
        mem32: upper_half(mem32),
        // A 64-bit range serves prefetchable BARs whether or not it says
        // prefetchable (QEMU's does not).
        mem64_prefetchable: range(PciSpace::Mem64).map(upper_half),
    })
}

/// Every PCI function on the host segments that hold one of `wanted`
/// (enumerated as [`prepare`] does, bus numbers given where firmware left
/// none): what guests may name. A segment without ECAM is left to
/// [`prepare`] to report.
pub fn host_functions(plat: &Platform, wanted: &[Sbdf]) -> Result<Vec<Sbdf>, String> {
    let mut out = Vec::new();
    for host in &plat.pcie {
        let seg = host.segment.unwrap_or(0);
        let Some(cfg) = host
            .config
            .filter(|_| wanted.iter().any(|s| s.segment == seg))
        else {
            continue;
        };
        // SAFETY: as in `prepare`: the host bridge's ECAM window as the DT
        // names it, identity-mapped as Device memory; the hypervisor owns it.
        let mut ecam = unsafe { HostEcam::new(cfg.base, host.bus_range.0, host.bus_range.1) };
        let topology = enumerate(&mut ecam, host.bus_range.0..=host.bus_range.1)
            .map_err(|e| format!("{}: enumeration: {e:?}", host.node))?;
        out.extend(topology.functions.iter().map(|f| Sbdf {
            segment: seg,
            bdf: f.bdf,
        }));
    }
    Ok(out)
}

/// Enumerates and assigns, once, every host segment that holds a requested
/// device (passed through, or the host disk), and prepares each device. The
/// error names the device or host bridge.
pub fn prepare(plat: &Platform, opts: &Options) -> Result<Prepared, String> {
    let mut out = Vec::new();
    let mut segments = Vec::new();
    let mut host_disk = None;
    for host in &plat.pcie {
        let seg = host.segment.unwrap_or(0);
        let wanted: Vec<Sbdf> = opts
            .devices
            .iter()
            .copied()
            .filter(|s| s.segment == seg)
            .collect();
        let disk = opts.host_disk.filter(|d| d.segment == seg);
        if wanted.is_empty() && disk.is_none() {
            continue;
        }
        let cfg = host
            .config
            .ok_or_else(|| format!("{}: no ECAM window (`reg`) for config access", host.node))?;
        // SAFETY: the window is the host bridge's ECAM as the DT names it, inside
        // the EL2 identity map as Device memory; the hypervisor owns the host bridge.
        let mut ecam = unsafe { HostEcam::new(cfg.base, host.bus_range.0, host.bus_range.1) };
        let topology = enumerate(&mut ecam, host.bus_range.0..=host.bus_range.1)
            .map_err(|e| format!("{}: enumeration: {e:?}", host.node))?;
        let assignment = assign(&topology, &mut ecam, windows(host)?)
            .map_err(|e| format!("{}: resource assignment: {e:?}", host.node))?;
        log::info!(
            "host PCIe {} segment {seg}: {} functions, resources {}",
            host.node,
            topology.functions.len(),
            if assignment.kept_firmware {
                "as firmware assigned them"
            } else {
                "assigned"
            }
        );
        for sbdf in wanted {
            out.push(prepare_one(
                plat,
                host,
                &mut ecam,
                &topology,
                &assignment,
                sbdf,
                opts,
            )?);
        }
        if let Some(sbdf) = disk {
            host_disk = Some(prepare_disk(
                plat,
                host,
                &mut ecam,
                &topology,
                &assignment,
                sbdf,
            )?);
        }
        segments.push(HostSegment {
            node: host.node.clone(),
            ecam,
            topology,
            assignment,
        });
    }
    for s in &opts.devices {
        if !out.iter().any(|a| a.sbdf == *s) {
            return Err(format!(
                "pci-passthrough={s}: no host PCIe bridge of segment {} in the host DT",
                s.segment
            ));
        }
    }
    if let Some(d) = opts.host_disk {
        if host_disk.is_none() {
            return Err(format!(
                "host-disk={d}: no host PCIe bridge of segment {} in the host DT",
                d.segment
            ));
        }
    }
    check_lines(plat, &out, host_disk.as_ref())?;
    Ok(Prepared {
        assigned: out,
        segments,
        host_disk,
    })
}

/// Virtio's PCI vendor and the virtio-blk device IDs (virtio 1.2, 4.1.2.1):
/// modern (0x1040 + 2) and transitional.
const VIRTIO_VENDOR: u16 = 0x1af4;
const VIRTIO_BLK_MODERN: u16 = 0x1042;
const VIRTIO_BLK_TRANSITIONAL: u16 = 0x1001;

/// Checks that `sbdf` is a virtio-blk and reads its layout, INTx and stream.
fn prepare_disk(
    plat: &Platform,
    host: &PcieHost,
    ecam: &mut HostEcam,
    topology: &HostTopology,
    assignment: &Assignment,
    sbdf: Sbdf,
) -> Result<DiskSite, String> {
    let id = passthrough::ConfigAccess::read32(ecam, sbdf.bdf, 0);
    if id == u32::MAX {
        return Err(format!("host-disk={sbdf}: no PCI function there"));
    }
    let (vendor, device) = (id as u16, (id >> 16) as u16);
    if vendor != VIRTIO_VENDOR || !matches!(device, VIRTIO_BLK_MODERN | VIRTIO_BLK_TRANSITIONAL) {
        return Err(format!(
            "host-disk={sbdf}: {vendor:04x}:{device:04x} is not a virtio-blk \
             ({VIRTIO_VENDOR:04x}:{VIRTIO_BLK_MODERN:04x} or {VIRTIO_VENDOR:04x}:{VIRTIO_BLK_TRANSITIONAL:04x})"
        ));
    }
    let layout = HostFunction::capture(ecam, topology, assignment, sbdf.bdf)
        .map_err(|e| format!("host-disk={sbdf}: {e}"))?;
    let intid = host_intid(host, &layout, "host-disk", sbdf)?;
    Ok(DiskSite {
        sbdf,
        ecam: *ecam,
        layout,
        intid,
        stream: plat.smmu_stream(host, sbdf.bdf.routing_id()),
        msi: plat.its_device(host, sbdf.bdf.routing_id()),
        coherent: host.dma_coherent,
    })
}

/// The physical INTID of `layout`'s INTx pin (already swizzled to the host
/// root bus) in `host`'s `interrupt-map`; `None` without a pin; an error
/// naming `option=sbdf` when the map has no entry for it.
fn host_intid(
    host: &PcieHost,
    layout: &HostFunction,
    option: &str,
    sbdf: Sbdf,
) -> Result<Option<u32>, String> {
    let Some(r) = layout.intx else {
        return Ok(None);
    };
    host.intx_intid(r.root.routing_id(), r.pin)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{option}={sbdf}: {}: `interrupt-map` has no entry for {} INT{}",
                host.node,
                r.root,
                char::from(b'A' + r.pin.saturating_sub(1).min(3))
            )
        })
}

fn prepare_one(
    plat: &Platform,
    host: &PcieHost,
    ecam: &mut HostEcam,
    topology: &HostTopology,
    assignment: &Assignment,
    sbdf: Sbdf,
    opts: &Options,
) -> Result<Assigned, String> {
    let layout = HostFunction::capture(ecam, topology, assignment, sbdf.bdf)
        .map_err(|e| format!("pci-passthrough={sbdf}: {e}"))?;
    for b in &layout.bars {
        log::info!(
            "host {sbdf} BAR{}: PA {:#x} size {:#x}{}",
            b.index,
            b.cpu.0,
            b.size,
            if b.prefetchable { " prefetchable" } else { "" }
        );
    }
    let intid = host_intid(host, &layout, "pci-passthrough", sbdf)?;
    let rid = sbdf.bdf.routing_id();
    let stream = plat.smmu_stream(host, rid);
    if stream.is_none() {
        if !opts.unconfined {
            return Err(format!(
                "pci-passthrough={sbdf}: no SMMU translates its DMA ({} has no `iommu-map` entry for it); \
                 add `pci-passthrough-unconfined` to accept DMA to all of host memory",
                host.node
            ));
        }
        log::warn!("pci-passthrough={sbdf}: no SMMU: its DMA reaches all of host memory (pci-passthrough-unconfined)");
    }
    log::info!(
        "host {sbdf} {:04x}:{:04x}: INTx {}, {}",
        layout.vendor_id,
        layout.device_id,
        intid.map_or(String::from("none"), |i| format!("INTID {i}")),
        stream.map_or(String::from("DMA unconfined"), |(i, sid)| format!(
            "DMA through {} StreamID {sid:#x}",
            plat.smmus.get(i).map_or("?", |s| s.node.as_str())
        ))
    );
    let mut function = AssignedFunction::new(*ecam, layout, intid);
    // The device the guest gets starts from reset, whatever the host left in it.
    vbus::PciFunction::reset(&mut function);
    Ok(Assigned {
        sbdf,
        function,
        intid,
        stream,
        msi: plat.its_device(host, rid),
    })
}

/// Routes assigned device `index` of guest `owner`'s MSI-X and MSI (see `passthrough::msix`
/// and `passthrough::msi`): MAPD of its host DeviceID with an ITT for the
/// EventIDs of `passthrough::EventIds` (MSI-X vector v is EventID v, MSI
/// vector v EventID `msi_base + v`), one LPI per EventID (MAPTI, owner
/// `LpiOwner::Assigned`, on physical CPU `cpu` until the guest's SPI routing moves it),
/// and the function shown with MSI-X and MSI, its device's table and MSI
/// capability holding the ITS doorbell. Returns the device and the doorbell
/// to map in its SMMU stage 2 (`None`: the device keeps INTx only, said in
/// one line: no ITS, neither MSI-X nor MSI, no guest MBI, or the ITS
/// refused). `ram` is the guest's RAM: the doorbell is mapped at IPA = PA,
/// so it must lie outside it.
pub fn route_msi(
    a: Assigned,
    owner: u16,
    index: u16,
    cpu: usize,
    guest: Option<vbus::MsiTarget>,
    ram: vbus::MemRange<vbus::Ipa>,
) -> (Assigned, Option<Pa>) {
    use crate::its::{self, LpiOwner};
    let Assigned {
        sbdf,
        function,
        intid,
        stream,
        msi,
    } = a;
    let back = |function| Assigned {
        sbdf,
        function,
        intid,
        stream,
        msi,
    };
    let events = passthrough::EventIds::of(function.layout());
    if events.total() == 0 {
        return (back(function), None);
    }
    let (Some((its_index, device_id)), Some(guest)) = (msi, guest) else {
        log::info!(
            "pci-passthrough={sbdf}: MSI-X and MSI hidden (no host ITS for it or no guest MBI): INTx only"
        );
        return (back(function), None);
    };
    let doorbell = match its::doorbell(its_index) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("pci-passthrough={sbdf}: MSI-X and MSI hidden: ITS #{its_index}: {e}");
            return (back(function), None);
        }
    };
    let page = vbus::MemRange::new(vbus::Ipa(doorbell & !0xfff), 0x1000);
    if page.overlaps(&ram) {
        log::warn!(
            "pci-passthrough={sbdf}: MSI-X and MSI hidden: the ITS doorbell {doorbell:#x} lies in guest RAM"
        );
        return (back(function), None);
    }
    if let Err(e) = its::map_device(its_index, device_id, events.total()) {
        log::warn!("pci-passthrough={sbdf}: MSI-X and MSI hidden: MAPD {device_id:#x}: {e}");
        return (back(function), None);
    }
    let wanted = (0..events.msix).chain(events.msi_base..events.total());
    let mut lpis = Vec::new();
    for e in wanted {
        let lpi_owner = LpiOwner::Assigned {
            guest: owner,
            device: index,
            event: e,
        };
        match its::map_event(its_index, device_id, e, lpi_owner, cpu) {
            Ok(l) => lpis.push((e, l)),
            Err(err) => {
                log::warn!("pci-passthrough={sbdf}: MSI-X and MSI hidden: MAPTI event {e}: {err}");
                for (done, _) in lpis {
                    let _ = its::unmap_event(its_index, device_id, done);
                }
                return (back(function), None);
            }
        }
    }
    let function = function.with_msi(passthrough::MsiRoute {
        doorbell: Pa(doorbell),
        guest,
    });
    // What could not be shown (a table outside the BARs; 32-bit MSI
    // addresses and a doorbell above 4 GiB) gives its EventIDs back.
    let shown = |e: u32| {
        if e < events.msix {
            function.msix_vectors().is_some()
        } else {
            function.msi_vectors().is_some()
        }
    };
    let mut kept = Vec::new();
    for (e, l) in lpis {
        if shown(e) {
            kept.push((e, l));
        } else {
            let _ = its::unmap_event(its_index, device_id, e);
        }
    }
    let lpi_range = |from: u32, to: u32| {
        let of: Vec<u32> = kept
            .iter()
            .filter(|(e, _)| (from..to).contains(e))
            .map(|&(_, l)| l)
            .collect();
        (of.first().copied(), of.last().copied())
    };
    match function.msix_vectors() {
        Some(n) => {
            let (first, last) = lpi_range(0, events.msix);
            log::info!(
                "host {sbdf}: MSI-X {n} vectors through ITS #{its_index} DeviceID {device_id:#x}, doorbell PA {doorbell:#x}, LPIs {}..={}",
                first.unwrap_or(0),
                last.unwrap_or(0)
            );
        }
        None if events.msix > 0 => {
            log::warn!(
                "pci-passthrough={sbdf}: MSI-X hidden: its table or PBA lies outside its BARs"
            )
        }
        None => {}
    }
    match function.msi_vectors() {
        Some(n) => {
            let (first, last) = lpi_range(events.msi_base, events.total());
            log::info!(
                "host {sbdf}: MSI {n} vectors through ITS #{its_index} DeviceID {device_id:#x}, EventIDs {}..{}, LPIs {}..={}",
                events.msi_base,
                events.total(),
                first.unwrap_or(0),
                last.unwrap_or(0)
            );
        }
        None if events.msi > 0 => log::warn!(
            "pci-passthrough={sbdf}: MSI hidden: 32-bit message addresses cannot reach the doorbell {doorbell:#x}"
        ),
        None => {}
    }
    if kept.is_empty() {
        return (back(function), None);
    }
    (back(function), Some(Pa(doorbell)))
}

/// A host line may have one owner: two assigned devices sharing an INTx
/// line, or one shared with the UART, an SMMU or the host disk, are refused.
fn check_lines(plat: &Platform, out: &[Assigned], disk: Option<&DiskSite>) -> Result<(), String> {
    let mut owners: Vec<(u32, String)> = alloc::vec![(plat.uart.intid, plat.uart.node.clone())];
    for s in &plat.smmus {
        for irq in [
            s.irqs.eventq,
            s.irqs.gerror,
            s.irqs.priq,
            s.irqs.cmdq_sync,
            s.irqs.combined,
        ]
        .into_iter()
        .flatten()
        {
            owners.push((irq.intid, s.node.clone()));
        }
    }
    for a in out {
        let Some(intid) = a.intid else { continue };
        if let Some((_, other)) = owners.iter().find(|(i, _)| *i == intid) {
            return Err(format!(
                "pci-passthrough={}: its INTx (INTID {intid}) is shared with {other}; a host line can have one owner",
                a.sbdf
            ));
        }
        owners.push((intid, format!("host device {}", a.sbdf)));
    }
    if let Some(d) = disk {
        if let Some(intid) = d.intid {
            if let Some((_, other)) = owners.iter().find(|(i, _)| *i == intid) {
                return Err(format!(
                    "host-disk={}: its INTx (INTID {intid}) is shared with {other}; a host line can have one owner",
                    d.sbdf
                ));
            }
        }
    }
    Ok(())
}

/// The host segments the hypervisor assigned, for the read-back at shutdown.
pub static HOST_SEGMENTS: spin::Mutex<Vec<HostSegment>> = spin::Mutex::new(Vec::new());

/// At shutdown: reads back every assigned host segment (a difference is an
/// error line naming it; none gives one line saying so), then resets every
/// guest's assigned devices so the next owner gets them clean.
pub fn shutdown(vms: &[crate::vm::Vm]) {
    if !vms
        .iter()
        .all(|vm| vm.devices.try_lock().is_some_and(|d| d.assigned.is_empty()))
    {
        if canary_intact() {
            log::info!("DMA canary intact");
        } else {
            log::error!("DMA canary CHANGED: a device wrote to host memory");
        }
    }
    let mut segments = HOST_SEGMENTS.lock();
    for s in segments.iter_mut() {
        let diffs = read_back(s);
        if diffs.is_empty() {
            log::info!(
                "host read-back {}: BARs, bus numbers and windows as assigned",
                s.node
            );
        }
        for d in diffs {
            log::error!("host read-back {}: {d}", s.node);
        }
    }
    drop(segments);
    for vm in vms {
        let Some(mut dev) = vm.devices.try_lock() else {
            continue;
        };
        let ids = dev.assigned.clone();
        if let Some(seg) = dev.segment.as_mut() {
            for id in ids {
                // The guest is gone: its BARs' stage-2 mappings do not matter any more.
                let _ = seg.reset_function(id);
            }
        }
    }
}

/// Reads back the host BARs, bus numbers and bridge windows of `s` and
/// compares them with what the hypervisor assigned; each difference named.
pub fn read_back(s: &mut HostSegment) -> Vec<String> {
    passthrough::verify(&mut s.ecam, &s.topology, &s.assignment)
}

/// A page of host memory the guest must never reach: tests point an
/// assigned device's DMA at it (its link address, from the ELF symbol
/// `DMA_CANARY`) and check at shutdown that it is unchanged.
#[repr(C, align(4096))]
pub struct Canary([u8; 4096]);

/// The canary page (written at boot, checked at shutdown; nothing else
/// touches it).
#[no_mangle]
pub static mut DMA_CANARY: Canary = Canary([0; 4096]);

fn canary_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(0x5a)
}

/// Fills the canary and cleans it to the point of coherency (a device
/// writing there would be visible to the later check).
pub fn arm_canary() {
    let p = core::ptr::addr_of_mut!(DMA_CANARY).cast::<u8>();
    for i in 0..4096 {
        // SAFETY: `p` points at the 4 KiB static that only this module touches,
        // once at boot on the boot CPU before any guest runs.
        unsafe { p.add(i).write_volatile(canary_byte(i)) };
    }
    crate::sysreg::clean_dcache_range(p as usize, 4096);
    log::debug!("DMA canary at PA {:#x}", p as usize);
}

/// Whether the canary still holds what [`arm_canary`] wrote.
pub fn canary_intact() -> bool {
    let p = core::ptr::addr_of!(DMA_CANARY).cast::<u8>();
    // SAFETY: as in `arm_canary`; reads only (a stray DMA write is what we look for).
    (0..4096).all(|i| unsafe { p.add(i).read_volatile() } == canary_byte(i))
}
