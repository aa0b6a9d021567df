//! The host disk: a host virtio-blk PCI function (`host-disk=SSSS:BB:DD.F`)
//! the hypervisor drives itself with the `virtio-drivers` crate, to back the
//! guest's emulated virtio-blk with zero-copy DMA. It is never shown to a
//! guest.
//!
//! * Config access: `virtio-drivers`' `ConfigurationAccess` over our ECAM
//!   ([`crate::pci::HostEcam`]); its segment is enumerated and assigned by
//!   [`crate::assign::prepare`] like a passthrough device's.
//! * Transport and queue: `PciTransport` + one `VirtQueue` (the pieces
//!   `VirtIOBlk` is made of). `VirtIOBlk` itself is not used: its
//!   non-blocking calls take one contiguous buffer (a guest request is a
//!   scatter list of guest pages) and its blocking ones spin without a bound.
//!   The request header and status byte follow virtio 1.2, 5.2.6.
//! * [`Hal`]: DMA memory from the heap (page-aligned, zeroed); physical =
//!   virtual (EL2 maps RAM and the BARs identity); `share`/`unshare` need
//!   no copy and no cache maintenance because the host bridge must be
//!   `dma-coherent` (checked at probe: the virtqueue rings live in cacheable
//!   heap memory and `virtio-drivers` reads them without cache maintenance,
//!   so a non-coherent bridge is refused rather than half-supported; QEMU's
//!   `virt` says `dma-coherent`, and TCG models no caches anyway).
//! * DMA: the disk's StreamID gets a bypass STE (see [`HostDisk::probe`]).
//! * Data path: [`HostDisk::submit`] gives the device the caller's physical
//!   pages directly (no copy), at most [`QUEUE_SIZE`] requests in flight;
//!   the device's interrupt makes the IRQ exit call [`HostDisk::complete`],
//!   whose (token, status) list is queued for the caller
//!   ([`take_completed`]).
//! * Interrupts ([`Signal`]): MSI-X through the host ITS when the host has
//!   one and the device has the capability (virtio 1.2, 4.1.4.3 and 4.1.5.1.2:
//!   queue 0 on vector 0, configuration changes on vector 1; each table entry
//!   holds GITS_TRANSLATER's address and the vector's EventID; the LPIs
//!   belong to [`crate::its::LpiOwner::HostDisk`]). Otherwise its INTx
//!   ([`crate::vm::IrqOwner::HostDisk`]). With a bypass STE the MSI write
//!   reaches the doorbell untranslated.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use passthrough::ConfigAccess;
use vbus::{Bdf, Ipa, MemRange, Pa, Sbdf};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::assign::DiskSite;
use crate::pci::HostEcam;

/// Descriptors in the one request queue: the bound on requests in flight
/// (with indirect descriptors, one each; without, header + data + status).
pub const QUEUE_SIZE: usize = 256;
/// A sector (virtio 1.2, 5.2.6: requests count 512-byte sectors).
pub const SECTOR: u64 = 512;
/// Longest the boot self-test waits for one request, in microseconds.
const SELFTEST_TIMEOUT_US: u64 = 5_000_000;
/// The first bytes of a disk image whose last sector the self-test may
/// overwrite (it restores it after).
pub const SCRATCH_MAGIC: &[u8] = b"SYNTHPCI-HOSTDISK-SCRATCH-LAST\n";

// virtio-blk feature bits (virtio 1.2, 5.2.3, 6).
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_INDIRECT_DESC: u64 = 1 << 28;
const F_VERSION_1: u64 = 1 << 32;

// Request types (5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;

bitflags::bitflags! {
    /// The features this driver accepts (the rest are declined).
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
    struct Features: u64 {
        const SEG_MAX = F_SEG_MAX;
        const RO = F_RO;
        const FLUSH = F_FLUSH;
        const INDIRECT_DESC = F_INDIRECT_DESC;
        const VERSION_1 = F_VERSION_1;
    }
}

/// `virtio-drivers`' config access over a host segment's ECAM.
struct Cam(HostEcam);

fn bdf_of(df: DeviceFunction) -> Option<Bdf> {
    Bdf::new(df.bus, df.device, df.function).ok()
}

impl ConfigurationAccess for Cam {
    fn read_word(&self, df: DeviceFunction, register_offset: u8) -> u32 {
        let mut e = self.0;
        bdf_of(df).map_or(u32::MAX, |b| e.read32(b, u16::from(register_offset)))
    }

    fn write_word(&mut self, df: DeviceFunction, register_offset: u8, data: u32) {
        if let Some(b) = bdf_of(df) {
            self.0.write32(b, u16::from(register_offset), data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Cam(self.0)
    }
}

/// The `Hal` of the hypervisor's own virtio devices: identity-mapped heap
/// memory, coherent DMA.
pub struct DiskHal;

fn pages_layout(pages: usize) -> Option<Layout> {
    let size = pages.checked_mul(PAGE_SIZE)?.max(PAGE_SIZE);
    Layout::from_size_align(size, PAGE_SIZE).ok()
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory no one else
// uses until `dma_dealloc`; EL2 maps the heap identity (its virtual address
// is the physical address the device uses); BARs are identity-mapped Device
// memory; `share` hands out the buffer's own (identity) address and the
// bridge is DMA-coherent, so nothing needs copying or cache maintenance.
unsafe impl Hal for DiskHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = pages_layout(pages) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        match NonNull::new(p) {
            Some(nn) => (p as u64, nn),
            // A zero address makes `virtio-drivers` report a DMA error.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Some(layout) = pages_layout(pages) else {
            return -1;
        };
        // SAFETY: the caller passes what `dma_alloc` returned for `pages`
        // (virtio-drivers' contract), allocated with this very layout.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // EL2's identity map covers the BARs (checked at probe against
        // `mmu::EL2_MAP_END`); `virtio-drivers` refuses BAR address 0.
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as usize as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// A request's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Device to memory.
    Read,
    /// Memory to device.
    Write,
    /// Make written data durable (no segments).
    Flush,
}

/// Why [`HostDisk::submit`] did not take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: retry after a completion.
    Busy,
    /// The request is malformed or not allowed (never reaches the device).
    Invalid(&'static str),
    /// The device refused the buffers.
    Device,
}

/// How the device completed a request (virtio 1.2, 5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// VIRTIO_BLK_S_OK.
    Ok,
    /// VIRTIO_BLK_S_IOERR.
    IoError,
    /// VIRTIO_BLK_S_UNSUPP.
    Unsupported,
    /// Any other status byte (a device bug).
    Other(u8),
}

/// One completed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The caller's token from [`HostDisk::submit`].
    pub token: u64,
    /// The device's verdict.
    pub status: Status,
}

/// A request the device holds: everything `pop_used` needs back.
struct InFlight {
    token: u64,
    op: Op,
    header: Box<[u8; 16]>,
    status: Box<[u8; 1]>,
    segments: Vec<(u64, usize)>,
}

/// How the host disk signals completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// MSI-X through ITS `its` as DeviceID `device_id`: queue 0 raises
    /// LPI `queue`, configuration changes LPI `config` (if a second vector).
    Lpi {
        /// The ITS (index).
        its: usize,
        /// Its DeviceID.
        device_id: u32,
        /// The queue's LPI.
        queue: u32,
        /// The configuration change LPI.
        config: Option<u32>,
    },
    /// Its INTx, this SPI.
    Intx(u32),
    /// None (polling only: the self-test).
    None,
}

impl core::fmt::Display for Signal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Signal::Lpi {
                its,
                device_id,
                queue,
                ..
            } => write!(f, "MSI-X (ITS #{its} DeviceID {device_id:#x}, LPI {queue})"),
            Signal::Intx(i) => write!(f, "INTx INTID {i}"),
            Signal::None => write!(f, "no interrupt"),
        }
    }
}

/// virtio PCI capability (virtio 1.2, 4.1.4): vendor-specific capability
/// ID, and its cfg_type for the common configuration.
const CAP_VENDOR: u8 = 0x09;
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// cfg_type of the notification capability (4.1.4.4).
const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
// virtio_pci_common_cfg offsets (4.1.4.3).
const COMMON_MSIX_CONFIG: usize = 0x10;
const COMMON_QUEUE_SELECT: usize = 0x16;
const COMMON_QUEUE_MSIX_VECTOR: usize = 0x1a;
const COMMON_QUEUE_NOTIFY_OFF: usize = 0x1e;
/// VIRTIO_MSI_NO_VECTOR (4.1.4.3).
const NO_VECTOR: u16 = 0xffff;
/// MSI-X Message Control (the high half of the capability's first dword):
/// MSI-X Enable (bit 15) and Function Mask (bit 14) (PCI Express Base 6.0, 7.7.2.2).
const MSIX_ENABLE: u32 = 1 << 31;
const MSIX_FUNCTION_MASK: u32 = 1 << 30;

fn mmio_w16(a: usize, v: u16) {
    // SAFETY: `a` is inside one of the host disk's memory BARs (its virtio
    // common configuration or queue 0's notification register, both found
    // through `bar_address`), checked inside the EL2 identity map (Device
    // memory) at probe; the hypervisor alone drives the device.
    unsafe { core::ptr::write_volatile(a as *mut u16, v) }
}
fn mmio_r16(a: usize) -> u16 {
    // SAFETY: as for `mmio_w16`.
    unsafe { core::ptr::read_volatile(a as *const u16) }
}
fn mmio_w32(a: usize, v: u32) {
    // SAFETY: as for `mmio_w16` (the MSI-X table, in a BAR of the device).
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}

/// The host CPU address of `offset` in BAR `bar` of `site`.
fn bar_address(site: &DiskSite, bar: u8, offset: u64, len: u64) -> Option<usize> {
    let b = site.layout.bars.iter().find(|b| b.index == bar)?;
    (offset.checked_add(len)? <= b.size).then_some((b.cpu.0 + offset) as usize)
}

/// The virtio common configuration's address (its PCI capability, 4.1.4.3).
fn common_cfg(site: &DiskSite) -> Option<usize> {
    let mut ecam = site.ecam;
    let bdf = site.sbdf.bdf;
    site.layout
        .capabilities
        .iter()
        .filter(|c| c.id == CAP_VENDOR)
        .find_map(|c| {
            let head = ecam.read32(bdf, c.offset);
            if (head >> 24) as u8 != VIRTIO_PCI_CAP_COMMON_CFG {
                return None;
            }
            let bar = ecam.read32(bdf, c.offset + 4) as u8;
            let offset = ecam.read32(bdf, c.offset + 8);
            bar_address(site, bar, u64::from(offset), 0x38)
        })
}

/// Queue 0's notification address (virtio 1.2, 4.1.4.4): `cap.offset +
/// queue_notify_off * notify_off_multiplier` in the notification
/// capability's BAR, `queue_notify_off` read from the common configuration
/// with queue 0 selected. `None` without a notification capability in a
/// memory BAR.
fn queue0_notify_address(site: &DiskSite, common: usize) -> Option<usize> {
    let mut ecam = site.ecam;
    let bdf = site.sbdf.bdf;
    let cap = site
        .layout
        .capabilities
        .iter()
        .filter(|c| c.id == CAP_VENDOR)
        .find(|c| (ecam.read32(bdf, c.offset) >> 24) as u8 == VIRTIO_PCI_CAP_NOTIFY_CFG)?;
    let bar = ecam.read32(bdf, cap.offset + 4) as u8;
    let offset = u64::from(ecam.read32(bdf, cap.offset + 8));
    let multiplier = u64::from(ecam.read32(bdf, cap.offset + 16));
    mmio_w16(common + COMMON_QUEUE_SELECT, 0);
    let queue_off = u64::from(mmio_r16(common + COMMON_QUEUE_NOTIFY_OFF));
    bar_address(site, bar, offset + queue_off * multiplier, 2)
}

/// Sets up MSI-X through the ITS (before the queue is set up, 4.1.5.1.3):
/// the ITS maps (DeviceID, EventID 0/1) to LPIs, the table entries get the
/// doorbell and EventIDs, MSI-X is enabled, and the device takes the
/// vectors (read back: NO_VECTOR means it refused). On error everything is
/// undone and the error says what failed.
fn setup_msix(site: &DiskSite, its: usize, device_id: u32) -> Result<Signal, String> {
    use crate::its::{self, LpiOwner};
    use alloc::string::ToString;
    let m = site.layout.msix.ok_or("no MSI-X capability")?;
    let common = common_cfg(site).ok_or("no virtio common configuration in a memory BAR")?;
    let vectors = u32::from(m.vectors).min(2);
    let table = bar_address(
        site,
        m.table.bar,
        u64::from(m.table.offset),
        u64::from(vectors) * 16,
    )
    .ok_or("the MSI-X table is not in a memory BAR")?;
    let doorbell = its::doorbell(its).map_err(|e| e.to_string())?;
    its::map_device(its, device_id, vectors).map_err(|e| format!("MAPD: {e}"))?;
    let mut lpis = Vec::new();
    for ev in 0..vectors {
        match its::map_event(its, device_id, ev, LpiOwner::HostDisk, 0) {
            Ok(l) => lpis.push(l),
            Err(e) => {
                for done in 0..ev {
                    let _ = its::unmap_event(its, device_id, done);
                }
                return Err(format!("MAPTI of EventID {ev}: {e}"));
            }
        }
    }
    // Table entries: Message Address (low, high), Message Data = EventID,
    // Vector Control = 0 (unmasked) (PCI Express Base 6.0, 7.7.2.9).
    for ev in 0..vectors as usize {
        let e = table + ev * 16;
        mmio_w32(e, doorbell as u32);
        mmio_w32(e + 4, (doorbell >> 32) as u32);
        mmio_w32(e + 8, ev as u32);
        mmio_w32(e + 12, 0);
    }
    let mut ecam = site.ecam;
    let bdf = site.sbdf.bdf;
    let ctl = ecam.read32(bdf, m.capability);
    ecam.write32(bdf, m.capability, (ctl | MSIX_ENABLE) & !MSIX_FUNCTION_MASK);
    let config_vector = if vectors > 1 { 1 } else { NO_VECTOR };
    mmio_w16(common + COMMON_MSIX_CONFIG, config_vector);
    mmio_w16(common + COMMON_QUEUE_SELECT, 0);
    mmio_w16(common + COMMON_QUEUE_MSIX_VECTOR, 0);
    let got = (
        mmio_r16(common + COMMON_MSIX_CONFIG),
        mmio_r16(common + COMMON_QUEUE_MSIX_VECTOR),
    );
    if got != (config_vector, 0) {
        mmio_w16(common + COMMON_MSIX_CONFIG, NO_VECTOR);
        mmio_w16(common + COMMON_QUEUE_MSIX_VECTOR, NO_VECTOR);
        ecam.write32(bdf, m.capability, ctl & !MSIX_ENABLE);
        for ev in 0..vectors {
            let _ = its::unmap_event(its, device_id, ev);
        }
        return Err(format!(
            "the device refused the vectors (config {:#x}, queue 0 {:#x} read back)",
            got.0, got.1
        ));
    }
    Ok(Signal::Lpi {
        its,
        device_id,
        queue: lpis[0],
        config: lpis.get(1).copied(),
    })
}

/// The driven host disk.
pub struct HostDisk {
    sbdf: Sbdf,
    transport: PciTransport,
    /// On the heap: with its shadow descriptor table it is several KiB,
    /// too much to move around on a 64 KiB EL2 stack.
    queue: Box<VirtQueue<DiskHal, QUEUE_SIZE>>,
    capacity: u64,
    readonly: bool,
    flush: bool,
    max_segments: usize,
    in_flight: BTreeMap<u16, InFlight>,
    /// Physical ranges (start, end) a caller's segments may lie in.
    dma_ok: Vec<(u64, u64)>,
    /// The self-test's copy of sector 0 and its interrupt-driven read's
    /// buffer (`start_irq_selftest`), checked at shutdown.
    selftest: Option<SelfTest>,
    /// How completions are signalled.
    signal: Signal,
}

/// What the boot self-test leaves for the shutdown check.
struct SelfTest {
    /// Sector 0 as read synchronously.
    sector0: Vec<u8>,
    /// The buffer of the read completed through the INTx.
    irq_read: Option<Box<[u8; 512]>>,
}

/// The token of the self-test's read completed through the INTx.
const IRQ_SELFTEST_TOKEN: u64 = 0x5e1f_0001;

/// Builds the request's buffer lists over the header, the data segments and
/// the status byte, and runs `f` on them.
///
/// The data slices alias memory outside Rust's knowledge (guest RAM, or a
/// self-test buffer): they are never read or written through, only handed
/// to `virtio-drivers`, which takes their addresses and lengths (`share`,
/// `unshare`).
fn with_buffers<R>(
    op: Op,
    header: &[u8; 16],
    status: &mut [u8; 1],
    segments: &[(u64, usize)],
    f: impl for<'a> FnOnce(&'a [&'a [u8]], &'a mut [&'a mut [u8]]) -> R,
) -> R {
    let mut inputs: Vec<&[u8]> = Vec::with_capacity(segments.len() + 1);
    let mut outputs: Vec<&mut [u8]> = Vec::with_capacity(segments.len() + 1);
    inputs.push(&header[..]);
    for &(pa, len) in segments {
        match op {
            // SAFETY: `submit` checked that [pa, pa + len) lies in a range the
            // owner declared DMA-able (guest RAM, identity-mapped Normal
            // memory), or it is the self-test's heap buffer; the slice is only
            // used for its address and length (see above), so concurrent guest
            // accesses are what the device sees anyway, as on hardware.
            Op::Write => inputs.push(unsafe { core::slice::from_raw_parts(pa as *const u8, len) }),
            Op::Read => {
                // SAFETY: as for writes.
                outputs.push(unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, len) })
            }
            Op::Flush => {}
        }
    }
    outputs.push(&mut status[..]);
    f(&inputs, &mut outputs)
}

impl HostDisk {
    /// Claims the disk at `site`: BARs checked against the EL2 map, memory
    /// decoding and bus mastering on, its stream bypassing the SMMU, the
    /// virtio transport found, features negotiated, the queue set up.
    /// Errors name the device.
    pub fn probe(site: &DiskSite) -> Result<HostDisk, String> {
        let sbdf = site.sbdf;
        let err = |what: String| format!("host-disk={sbdf}: {what}");
        if !site.coherent {
            return Err(err(String::from(
                "its host bridge is not `dma-coherent`; the virtqueues need coherent DMA",
            )));
        }
        for b in &site.layout.bars {
            if b.cpu.0.saturating_add(b.size) > crate::mmu::EL2_MAP_END {
                return Err(err(format!(
                    "BAR{} at {:#x} is outside the EL2 identity map",
                    b.index, b.cpu.0
                )));
            }
        }
        // DMA. The hypervisor alone drives this device and chooses every
        // address it is given (its own heap for the rings, and guest pages
        // checked against `dma_ok` by `submit`), so a bypass STE lets through
        // only what the hypervisor asked for; the device cannot be reached by
        // the guest (never shown, its BARs not in the guest's stage 2). A
        // stricter design would confine it too: an SMMU stage-2 identity map
        // of guest RAM plus the hypervisor's DMA buffers, so that a bug in the
        // hypervisor or the device could not reach the rest of host memory.
        let dma = match site.stream {
            Some((i, sid)) => crate::smmu::with(i, |s| s.set_bypass(sid).map(|()| s.node.clone()))
                .ok_or_else(|| err(format!("no SMMU #{i}")))?
                .map(|node| format!("DMA bypass through {node} StreamID {sid:#x}"))
                .map_err(|e| err(format!("SMMU bypass: {e}")))?,
            None => String::from("DMA untranslated (no SMMU on its path)"),
        };
        let mut ecam = site.ecam;
        let bdf = sbdf.bdf;
        let df = DeviceFunction {
            bus: bdf.bus(),
            device: bdf.dev(),
            function: bdf.func(),
        };
        let mut root = PciRoot::new(Cam(ecam));
        let mut transport = PciTransport::new::<DiskHal, Cam>(&mut root, df)
            .map_err(|e| err(format!("virtio transport: {e}")))?;
        if transport.device_type() != DeviceType::Block {
            return Err(err(format!(
                "a virtio {:?} device, not a block device",
                transport.device_type()
            )));
        }
        // Command: Memory Space and Bus Master on, INTx not disabled.
        let cmd = ecam.read32(bdf, 4);
        ecam.write32(bdf, 4, (cmd & 0xffff & !(1 << 10)) | 0b110);
        // Virtio 1.2, 3.1.1: reset, acknowledge, negotiate, queues, DRIVER_OK.
        let features = transport.begin_init(
            Features::SEG_MAX
                | Features::RO
                | Features::FLUSH
                | Features::INDIRECT_DESC
                | Features::VERSION_1,
        );
        let capacity = transport
            .read_consistent(|| {
                let lo: u32 = transport.read_config_space(0)?;
                let hi: u32 = transport.read_config_space(4)?;
                Ok(u64::from(lo) | u64::from(hi) << 32)
            })
            .map_err(|e| err(format!("config space: {e}")))?;
        let seg_max = if features.contains(Features::SEG_MAX) {
            transport
                .read_config_space::<u32>(12)
                .map_err(|e| err(format!("config space: {e}")))?
        } else {
            1
        };
        let indirect = features.contains(Features::INDIRECT_DESC);
        // Interrupts: MSI-X through the ITS if possible (set before the
        // queue, 4.1.5.1.3), else the INTx.
        let intx = site.intid.map_or(Signal::None, Signal::Intx);
        let signal = match site.msi {
            Some((its, device_id)) if crate::its::present(its) => {
                match setup_msix(site, its, device_id) {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("host disk {sbdf}: MSI-X through the ITS: {e}; {intx} used");
                        intx
                    }
                }
            }
            _ => intx,
        };
        let queue = VirtQueue::<DiskHal, QUEUE_SIZE>::new(&mut transport, 0, indirect, false)
            .map(Box::new)
            .map_err(|e| {
                transport.set_status(DeviceStatus::FAILED);
                err(format!("queue 0 of {QUEUE_SIZE} entries: {e}"))
            })?;
        transport.finish_init();
        // Notifications are written by `notify_if_due` once the exit that
        // added requests has released its locks (one write, no lock).
        let notify_at = common_cfg(site).and_then(|c| queue0_notify_address(site, c));
        NOTIFY_AT.store(notify_at.unwrap_or(0), Ordering::Release);
        // One descriptor table (direct or indirect) holds header + data +
        // status: at most QUEUE_SIZE descriptors (2.7.5.3.1).
        let max_segments = (seg_max.max(1) as usize).min(QUEUE_SIZE - 2);
        let disk = HostDisk {
            sbdf,
            transport,
            queue,
            capacity,
            readonly: features.contains(Features::RO),
            flush: features.contains(Features::FLUSH),
            max_segments,
            in_flight: BTreeMap::new(),
            dma_ok: Vec::new(),
            selftest: None,
            signal,
        };
        log::info!(
            "host disk {sbdf}: virtio-blk, {capacity} sectors, {}, {}flush, {} segments per request, queue {QUEUE_SIZE}{}, {}, {dma}",
            if disk.readonly { "read-only" } else { "read-write" },
            if disk.flush { "" } else { "no " },
            max_segments,
            if indirect { " (indirect)" } else { "" },
            disk.signal,
        );
        Ok(disk)
    }

    /// How it signals completions.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    #[allow(dead_code)] // data-path API: the emulated virtio-blk calls it once wired
    /// Its host address.
    pub fn sbdf(&self) -> Sbdf {
        self.sbdf
    }

    #[allow(dead_code)] // data-path API: the emulated virtio-blk calls it once wired
    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    #[allow(dead_code)] // data-path API: the emulated virtio-blk calls it once wired
    /// Whether the device refuses writes.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    #[allow(dead_code)] // data-path API: the emulated virtio-blk calls it once wired
    /// Most data segments one request may carry.
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    #[allow(dead_code)] // data-path API: the emulated virtio-blk calls it once wired
    /// Requests given to the device and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Lets [`HostDisk::submit`] accept segments in host physical
    /// `[base, base + len)` (guest RAM as stage 2 maps it). Nothing else is
    /// accepted: the disk bypasses the SMMU.
    pub fn allow_dma(&mut self, base: Pa, len: u64) {
        if let Some(end) = base.0.checked_add(len) {
            self.dma_ok.push((base.0, end));
        }
    }

    #[allow(dead_code)] // data-path API: the emulated virtio-blk calls it once wired
    /// Gives the device a request: `op` at `sector` over `segments`
    /// (host physical address, length; together a multiple of 512 bytes,
    /// each inside a range [`HostDisk::allow_dma`] allowed), its data moved
    /// by the device straight from/to those pages. `token` comes back in a
    /// [`Completion`] from [`HostDisk::complete`]; the pages belong to the
    /// device until then. `Busy` when the queue is full.
    pub fn submit(
        &mut self,
        op: Op,
        sector: u64,
        segments: &[(Pa, usize)],
        token: u64,
    ) -> Result<(), SubmitError> {
        for &(pa, len) in segments {
            let end = pa.0.checked_add(len as u64);
            let inside = end.is_some_and(|e| self.dma_ok.iter().any(|&(b, l)| pa.0 >= b && e <= l));
            if !inside {
                return Err(SubmitError::Invalid("segment outside the DMA-able ranges"));
            }
        }
        let segs: Vec<(u64, usize)> = segments.iter().map(|&(p, l)| (p.0, l)).collect();
        self.submit_checked(op, sector, segs, token)
    }

    /// [`HostDisk::submit`] after the ranges check.
    fn submit_checked(
        &mut self,
        op: Op,
        sector: u64,
        segments: Vec<(u64, usize)>,
        token: u64,
    ) -> Result<(), SubmitError> {
        let kind = match op {
            Op::Flush => {
                if !segments.is_empty() {
                    return Err(SubmitError::Invalid("a flush carries no data"));
                }
                if !self.flush {
                    return Err(SubmitError::Invalid("the device has no flush"));
                }
                T_FLUSH
            }
            Op::Read | Op::Write => {
                if segments.is_empty() || segments.len() > self.max_segments {
                    return Err(SubmitError::Invalid("segment count"));
                }
                if segments
                    .iter()
                    .any(|&(_, l)| l == 0 || l > u32::MAX as usize)
                {
                    return Err(SubmitError::Invalid("segment length"));
                }
                let bytes = segments
                    .iter()
                    .try_fold(0u64, |a, &(_, l)| a.checked_add(l as u64))
                    .ok_or(SubmitError::Invalid("length"))?;
                if bytes % SECTOR != 0 {
                    return Err(SubmitError::Invalid("length not a multiple of 512"));
                }
                if sector
                    .checked_add(bytes / SECTOR)
                    .is_none_or(|end| end > self.capacity)
                {
                    return Err(SubmitError::Invalid("beyond the disk's capacity"));
                }
                if op == Op::Write && self.readonly {
                    return Err(SubmitError::Invalid("the disk is read-only"));
                }
                if op == Op::Read {
                    T_IN
                } else {
                    T_OUT
                }
            }
        };
        if self.in_flight.len() >= QUEUE_SIZE {
            return Err(SubmitError::Busy);
        }
        let mut header = Box::new([0u8; 16]);
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&(if op == Op::Flush { 0 } else { sector }).to_le_bytes());
        // An impossible status: a completion that leaves it is a device bug.
        let mut status = Box::new([0xffu8]);
        let queue = &mut self.queue;
        let r = with_buffers(op, &header, &mut status, &segments, |i, o| {
            // SAFETY: the header and status live in boxes kept in `in_flight`
            // until `complete` pops the request; the data pages belong to the
            // device until then (`submit`'s contract with its caller).
            unsafe { queue.add(i, o) }
        });
        let head = match r {
            Ok(h) => h,
            Err(virtio_drivers::Error::QueueFull) => return Err(SubmitError::Busy),
            Err(e) => {
                log::debug!("host disk {}: add: {e}", self.sbdf);
                return Err(SubmitError::Device);
            }
        };
        self.in_flight.insert(
            head,
            InFlight {
                token,
                op,
                header,
                status,
                segments,
            },
        );
        if self.queue.should_notify() {
            if NOTIFY_AT.load(Ordering::Acquire) != 0 {
                NOTIFY_DUE.store(true, Ordering::Release);
            } else {
                self.transport.notify(0);
            }
        }
        Ok(())
    }

    /// Acknowledges the device's interrupt (reading ISR deasserts its INTx)
    /// and pops every completed request: (token, status) in completion order.
    pub fn complete(&mut self) -> Vec<Completion> {
        // With MSI-X the ISR is not used for queue interrupts, and the
        // driver should not read it (virtio 1.2, 4.1.4.5.2): a read is an
        // access to the device for nothing.
        if !matches!(self.signal, Signal::Lpi { .. }) {
            let _ = self.transport.ack_interrupt();
        }
        let mut done = Vec::new();
        for _ in 0..QUEUE_SIZE {
            let Some(head) = self.queue.peek_used() else {
                break;
            };
            let Some(mut f) = self.in_flight.remove(&head) else {
                log::error!(
                    "host disk {}: the device completed descriptor {head}, which it was not given",
                    self.sbdf
                );
                break;
            };
            let queue = &mut self.queue;
            let r = with_buffers(f.op, &f.header, &mut f.status, &f.segments, |i, o| {
                // SAFETY: the same buffers `submit` added under this head.
                unsafe { queue.pop_used(head, i, o) }
            });
            let status = match r {
                // SAFETY: the status byte is a live box the device wrote before
                // putting the request in the used ring (read after `pop_used`'s
                // barrier).
                Ok(_) => match unsafe { core::ptr::read_volatile(&f.status[0]) } {
                    0 => Status::Ok,
                    1 => Status::IoError,
                    2 => Status::Unsupported,
                    s => Status::Other(s),
                },
                Err(e) => {
                    log::error!("host disk {}: pop_used: {e}", self.sbdf);
                    Status::IoError
                }
            };
            done.push(Completion {
                token: f.token,
                status,
            });
        }
        done
    }

    /// After [`HostDisk::selftest`], once the INTx is routed: reads sector 0
    /// again without waiting; the interrupt path completes it and
    /// [`shutdown`] checks it (the data path as the guest's disk will use it).
    pub fn start_irq_selftest(&mut self) -> Result<(), String> {
        let Some(t) = self.selftest.as_mut() else {
            return Ok(());
        };
        let buf = t.irq_read.insert(Box::new([0u8; 512]));
        let seg = alloc::vec![(buf.as_mut_ptr() as u64, buf.len())];
        let r = self
            .submit_checked(Op::Read, 0, seg, IRQ_SELFTEST_TOKEN)
            .map_err(|e| format!("interrupt-driven read: {e:?}"));
        notify_if_due();
        r
    }

    /// Stops the device (virtio reset: no more DMA), e.g. at shutdown.
    pub fn reset(&mut self) {
        self.transport.set_status(DeviceStatus::empty());
    }

    /// One request on a heap buffer, waited for by polling (boot only, bounded).
    fn sync(&mut self, op: Op, sector: u64, buf: &mut [u8]) -> Result<Status, String> {
        let token = 0x5e1f_7e57;
        let segs = if op == Op::Flush {
            Vec::new()
        } else {
            alloc::vec![(buf.as_mut_ptr() as u64, buf.len())]
        };
        self.submit_checked(op, sector, segs, token)
            .map_err(|e| format!("submit: {e:?}"))?;
        notify_if_due();
        let freq = crate::sysreg::read_sysreg!("cntfrq_el0").max(1);
        let ticks = SELFTEST_TIMEOUT_US.saturating_mul(freq) / 1_000_000;
        let start = crate::sysreg::read_sysreg!("cntpct_el0");
        loop {
            if let Some(c) = self.complete().into_iter().find(|c| c.token == token) {
                return Ok(c.status);
            }
            if crate::sysreg::read_sysreg!("cntpct_el0").wrapping_sub(start) > ticks {
                return Err(format!(
                    "no completion in {} ms",
                    SELFTEST_TIMEOUT_US / 1000
                ));
            }
            core::hint::spin_loop();
        }
    }

    /// The boot self-test (`host-disk-selftest`): reads sector 0 and the
    /// last sector; when sector 0 starts with [`SCRATCH_MAGIC`], writes a
    /// pattern to the last sector, reads it back, and restores it. One line
    /// per step; the error says which step failed.
    pub fn selftest(&mut self) -> Result<(), String> {
        if self.capacity == 0 {
            return Err(String::from("empty disk"));
        }
        let last = self.capacity - 1;
        let mut first = alloc::vec![0u8; SECTOR as usize];
        let mut tail = alloc::vec![0u8; SECTOR as usize];
        let hex = |b: &[u8]| {
            b.iter().take(16).fold(String::new(), |mut s, x| {
                s.push_str(&format!("{x:02x}"));
                s
            })
        };
        let check = |what: &str, s: Status| {
            if s == Status::Ok {
                Ok(())
            } else {
                Err(format!("{what}: status {s:?}"))
            }
        };
        check("read sector 0", self.sync(Op::Read, 0, &mut first)?)?;
        log::info!("host disk selftest: sector 0: {}", hex(&first));
        self.selftest = Some(SelfTest {
            sector0: first.clone(),
            irq_read: None,
        });
        check("read last sector", self.sync(Op::Read, last, &mut tail)?)?;
        log::info!("host disk selftest: sector {last}: {}", hex(&tail));
        if !first.starts_with(SCRATCH_MAGIC) {
            log::info!("host disk selftest: no scratch marker in sector 0: read-only test passed");
            return Ok(());
        }
        if self.readonly {
            return Err(String::from("scratch marker but the disk is read-only"));
        }
        let mut pattern: Vec<u8> = (0..SECTOR as usize)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(0xa5))
            .collect();
        let original = tail.clone();
        check(
            "write scratch sector",
            self.sync(Op::Write, last, &mut pattern)?,
        )?;
        let mut back = alloc::vec![0u8; SECTOR as usize];
        check(
            "read scratch sector back",
            self.sync(Op::Read, last, &mut back)?,
        )?;
        if back != pattern {
            return Err(format!(
                "scratch sector {last} read back {} after writing {}",
                hex(&back),
                hex(&pattern)
            ));
        }
        let mut restore = original;
        check(
            "restore scratch sector",
            self.sync(Op::Write, last, &mut restore)?,
        )?;
        if self.flush {
            check("flush", self.sync(Op::Flush, 0, &mut [])?)?;
        }
        log::info!("host disk selftest: scratch sector {last} written, read back and restored: ok");
        Ok(())
    }
}

/// Queue 0's notification register (host address), once probed; 0: none
/// found, notifications go through the transport while the disk is locked.
static NOTIFY_AT: AtomicUsize = AtomicUsize::new(0);
/// Requests were made available that the device has not been notified of.
static NOTIFY_DUE: AtomicBool = AtomicBool::new(false);

/// Notifies the host disk of the requests made available since the last
/// notification (virtio 1.2, 4.1.5.2), if any: one write of the queue index
/// to its notification register, with no lock held. Every exit that may
/// have submitted requests calls this once it has released its locks, so
/// that a guest notification that made several requests available becomes
/// one host notification, and the write (a trap into the device model
/// under QEMU) never happens while another CPU waits for a lock this one
/// holds.
pub fn notify_if_due() {
    if !NOTIFY_DUE.load(Ordering::Relaxed) || !NOTIFY_DUE.swap(false, Ordering::AcqRel) {
        return;
    }
    let at = NOTIFY_AT.load(Ordering::Acquire);
    if at != 0 {
        // The ring updates reach the device before the notification.
        crate::sysreg::dsb_sy();
        mmio_w16(at, 0);
    }
}

/// The host disk, once probed (boot CPU); then reached from any CPU's exits.
pub static HOST_DISK: spin::Once<spin::Mutex<HostDisk>> = spin::Once::new();

/// Completions the interrupt path popped, for the disk's user (the emulated
/// virtio-blk) to take.
static COMPLETED: spin::Mutex<Vec<Completion>> = spin::Mutex::new(Vec::new());

/// The host disk's INTx (from the IRQ exit): pops what completed and
/// queues it for [`take_completed`]; returns how many.
pub fn handle_irq() -> usize {
    let Some(d) = HOST_DISK.get() else { return 0 };
    IRQS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let done = d.lock().complete();
    let n = done.len();
    if n > 0 {
        COMPLETED.lock().extend(done);
    }
    n
}

#[allow(dead_code)] // data-path API: the emulated virtio-blk calls it once wired
/// The completions the interrupt path collected since the last call.
pub fn take_completed() -> Vec<Completion> {
    core::mem::take(&mut *COMPLETED.lock())
}

/// Requests the host disk has not completed yet (0 without a host disk).
pub fn in_flight() -> usize {
    HOST_DISK.get().map_or(0, |d| d.lock().in_flight())
}

/// At shutdown: resets the host disk so it stops all DMA; reports its
/// interrupts; after a self-test, reports its interrupt-driven read.
pub fn shutdown() {
    let Some(d) = HOST_DISK.get() else { return };
    let Some(mut d) = d.try_lock() else { return };
    d.reset();
    log::info!(
        "host disk: {} interrupts through {}",
        IRQS.load(core::sync::atomic::Ordering::Relaxed),
        d.signal
    );
    let Some(SelfTest {
        sector0: first,
        irq_read: Some(buf),
    }) = d.selftest.as_ref()
    else {
        return;
    };
    let done = COMPLETED
        .try_lock()
        .and_then(|c| c.iter().find(|c| c.token == IRQ_SELFTEST_TOKEN).copied());
    // SAFETY: a live box; the device is done with it (reset above), and a
    // volatile read sees what its DMA wrote.
    let same = (0..512).all(|i| unsafe { core::ptr::read_volatile(&buf[i]) } == first[i]);
    let via = d.signal;
    match done {
        Some(c) if c.status == Status::Ok && same => {
            log::info!(
                "host disk selftest: read completed through {via} ({} interrupts): ok",
                IRQS.load(core::sync::atomic::Ordering::Relaxed)
            )
        }
        Some(c) => log::error!(
            "host disk selftest: read through {via}: status {:?}, data {}",
            c.status,
            if same { "matches" } else { "differs" }
        ),
        None => log::error!("host disk selftest: read through {via} never completed"),
    }
}

/// Host disk interrupts taken.
static IRQS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// A guest request waiting for room in the host queue: its id, operation,
/// first sector and host segments.
type Waiting = (virtio_devs::blk::RequestId, Op, u64, Vec<(Pa, usize)>);

/// The host disk as the storage behind the guest's emulated virtio-blk
/// (`virtio-blk=host`): a guest request's pages go to the host device as they
/// are (zero-copy: IPA → PA through the guest's RAM runs, split where pages
/// are not contiguous), and it completes when the host device's interrupt
/// says so ([`handle_irq`] queues the completion; the segment's poll brings it
/// here). Requests the host queue cannot take yet wait in a backlog that the
/// virtio-blk device bounds by its queue size.
pub struct HostDiskBackend {
    backlog: alloc::collections::VecDeque<Waiting>,
    done: alloc::collections::VecDeque<Completion>,
}

impl HostDiskBackend {
    /// The backend over [`HOST_DISK`]; `None` when no host disk was claimed.
    pub fn new() -> Option<Self> {
        HOST_DISK.get()?;
        Some(HostDiskBackend {
            backlog: alloc::collections::VecDeque::new(),
            done: alloc::collections::VecDeque::new(),
        })
    }

    fn disk() -> Option<&'static spin::Mutex<HostDisk>> {
        HOST_DISK.get()
    }

    /// Gives the device what waits in the backlog, in order, until it is busy.
    fn drain_backlog(&mut self) {
        let Some(d) = Self::disk() else { return };
        while let Some((id, op, sector, segs)) = self.backlog.pop_front() {
            match d.lock().submit(op, sector, &segs, id.0) {
                Ok(()) => {}
                Err(SubmitError::Busy) => {
                    self.backlog.push_front((id, op, sector, segs));
                    return;
                }
                Err(_) => self.done.push_back(Completion {
                    token: id.0,
                    status: Status::IoError,
                }),
            }
        }
    }
}

impl virtio_devs::blk::BlockBackend for HostDiskBackend {
    /// The host device's limit, less two: a guest segment that crosses from
    /// one run of guest RAM to the next becomes two host segments.
    fn max_segments(&self) -> u32 {
        Self::disk().map_or(1, |d| {
            (d.lock().max_segments().saturating_sub(2)).max(1) as u32
        })
    }

    fn capacity(&self) -> u64 {
        Self::disk().map_or(0, |d| d.lock().capacity().saturating_mul(512))
    }

    fn block_size(&self) -> u32 {
        512
    }

    fn read_only(&self) -> bool {
        Self::disk().is_none_or(|d| d.lock().readonly())
    }

    fn supports_discard(&self) -> bool {
        false
    }

    fn supports_write_zeroes(&self) -> bool {
        false
    }

    fn device_id(&self) -> [u8; virtio_devs::blk::VIRTIO_BLK_ID_BYTES] {
        let mut id = [0u8; virtio_devs::blk::VIRTIO_BLK_ID_BYTES];
        for (d, s) in id.iter_mut().zip(b"synthetic-pci-hostdisk") {
            *d = *s;
        }
        id
    }

    fn submit(
        &mut self,
        id: virtio_devs::blk::RequestId,
        op: virtio_devs::blk::BlockOp,
        segments: &[MemRange<Ipa>],
        mem: &dyn virtio_devs::GuestMemory,
    ) -> virtio_devs::blk::Submission {
        use virtio_devs::blk::{BlockError, BlockOp, Submission};
        let (op, offset) = match op {
            BlockOp::Read { offset } => (Op::Read, offset),
            BlockOp::Write { offset } => (Op::Write, offset),
            BlockOp::Flush => (Op::Flush, 0),
            _ => return Submission::Done(Err(BlockError::Unsupported)),
        };
        if offset % 512 != 0 {
            return Submission::Done(Err(BlockError::Io));
        }
        let mut host = Vec::new();
        for s in segments {
            if mem.host_ranges(*s, &mut host).is_err() {
                return Submission::Done(Err(BlockError::Io));
            }
        }
        let segs: Vec<(Pa, usize)> = host.iter().map(|r| (r.base, r.size as usize)).collect();
        if self.backlog.is_empty() {
            let Some(d) = Self::disk() else {
                return Submission::Done(Err(BlockError::Io));
            };
            // Refused requests are answered now: nothing else would wake the
            // guest up if no other request is in flight.
            match d.lock().submit(op, offset / 512, &segs, id.0) {
                Ok(()) => return Submission::Pending,
                Err(SubmitError::Busy) => {}
                Err(_) => return Submission::Done(Err(BlockError::Io)),
            }
        }
        self.backlog.push_back((id, op, offset / 512, segs));
        Submission::Pending
    }

    fn poll(
        &mut self,
        _mem: &dyn virtio_devs::GuestMemory,
    ) -> Option<(
        virtio_devs::blk::RequestId,
        Result<(), virtio_devs::blk::BlockError>,
    )> {
        use virtio_devs::blk::{BlockError, RequestId};
        if self.done.is_empty() {
            self.done.extend(take_completed());
            self.drain_backlog();
        }
        let c = self.done.pop_front()?;
        let r = match c.status {
            Status::Ok => Ok(()),
            Status::Unsupported => Err(BlockError::Unsupported),
            Status::IoError | Status::Other(_) => Err(BlockError::Io),
        };
        Some((RequestId(c.token), r))
    }
}
