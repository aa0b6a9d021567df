//! The modern virtio-pci transport (virtio 1.2, 4.1) as a [`vbus::PciFunction`].
//!
//! No legacy interface: vendor 0x1af4, device 0x1040 + device type, revision
//! 1 (4.1.2.1). One 64-bit prefetchable memory BAR (BAR 0, [`BAR_SIZE`]),
//! trapped, holds four structures, each named by a vendor capability
//! (4.1.4): common configuration at [`COMMON_OFFSET`], ISR status at
//! [`ISR_OFFSET`], device-specific configuration at [`DEVICE_OFFSET`] and
//! notifications at [`NOTIFY_OFFSET`] (queue `n` at `n * NOTIFY_OFF_MULTIPLIER`).
//! A fifth capability, `VIRTIO_PCI_CAP_PCI_CFG`, is the window into the BAR
//! through config space (4.1.4.9).
//!
//! Interrupts (4.1.5.3, 4.1.5.4): an MSI-X capability (PCI Local Bus 3.0,
//! 6.8.2) with one vector per queue plus one for configuration changes, its
//! table at [`MSIX_TABLE_OFFSET`] and PBA at [`MSIX_PBA_OFFSET`] in the same
//! trapped BAR ([`vbus::msix`] emulates them). While MSI-X is disabled the
//! device sets ISR status and drives INTx; while it is enabled INTx stays
//! low and each event goes to the vector `config_msix_vector` /
//! `queue_msix_vector` names, or nowhere if that is `VIRTIO_MSI_NO_VECTOR`
//! (4.1.5.1.2). The messages leave through [`PciFunction::take_msi`]; the
//! segment decides whether they reach the guest's interrupt controller.
//!
//! Accesses the spec does not allow (4.1.3.1: each field at its natural
//! width; 64-bit fields also as two 32-bit halves) read 0 and are dropped,
//! and counted in [`TransportStats`].

use crate::device::{feature, VirtioDevice};
use crate::memory::GuestMemory;
use crate::queue::{Queue, QueueError};
use alloc::vec::Vec;
use arch_emu::addr::Ipa;
use vbus::config::{command, reg, status, ConfigSpace};
use vbus::function::{BarBacking, BarInfo, Intx, PciFunction, Request};
use vbus::msix::{MsiMessage, Msix, MsixLayout, MsixStats};

/// The PCI vendor ID of every virtio device (4.1.2).
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type (4.1.2).
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
/// The BAR holding every structure.
pub const BAR_INDEX: u8 = 0;
/// Common configuration structure (4.1.4.3) offset in the BAR.
pub const COMMON_OFFSET: u64 = 0x0000;
/// Its length (through `queue_reset`).
pub const COMMON_LEN: u64 = 0x3c;
/// ISR status (4.1.4.5) offset in the BAR.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device-specific configuration (4.1.4.6) offset in the BAR.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Notification area (4.1.4.4) offset in the BAR.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// `notify_off_multiplier`: queue `n` is notified at `NOTIFY_OFFSET + 4 * n`.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// The MSI-X table (PCI Local Bus 3.0, 6.8.2.4) offset in the BAR: a 4 KiB
/// page of its own (up to 256 entries; those past the last vector read all ones).
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// The MSI-X Pending Bit Array (6.8.2.5) offset in the BAR, a page of its own.
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// The bytes reserved for each of the table and the PBA.
pub const MSIX_REGION_LEN: u64 = 0x1000;
/// `config_msix_vector` / `queue_msix_vector`: no vector (4.1.5.1.2).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

/// `cfg_type` of the virtio vendor capabilities (4.1.4).
pub mod cap {
    /// `VIRTIO_PCI_CAP_COMMON_CFG`.
    pub const COMMON_CFG: u8 = 1;
    /// `VIRTIO_PCI_CAP_NOTIFY_CFG`.
    pub const NOTIFY_CFG: u8 = 2;
    /// `VIRTIO_PCI_CAP_ISR_CFG`.
    pub const ISR_CFG: u8 = 3;
    /// `VIRTIO_PCI_CAP_DEVICE_CFG`.
    pub const DEVICE_CFG: u8 = 4;
    /// `VIRTIO_PCI_CAP_PCI_CFG`.
    pub const PCI_CFG: u8 = 5;
    /// The vendor-specific capability ID.
    pub const VENDOR_SPECIFIC: u8 = 0x09;
}

/// Device status bits (virtio 1.2, 2.1).
pub mod device_status {
    /// ACKNOWLEDGE.
    pub const ACKNOWLEDGE: u8 = 1;
    /// DRIVER.
    pub const DRIVER: u8 = 2;
    /// DRIVER_OK.
    pub const DRIVER_OK: u8 = 4;
    /// FEATURES_OK.
    pub const FEATURES_OK: u8 = 8;
    /// DEVICE_NEEDS_RESET.
    pub const NEEDS_RESET: u8 = 0x40;
    /// FAILED.
    pub const FAILED: u8 = 0x80;
}

/// ISR status bits (4.1.4.5).
pub mod isr {
    /// A used buffer notification is pending.
    pub const QUEUE: u8 = 1;
    /// A configuration change notification is pending.
    pub const CONFIG: u8 = 2;
}

/// Common configuration register offsets (4.1.4.3).
pub mod common {
    #![allow(missing_docs)]
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
    pub const QUEUE_NOTIFY_DATA: u64 = 0x38;
    pub const QUEUE_RESET: u64 = 0x3a;
}

/// Counters of driver mistakes, each answered as the spec says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// BAR accesses at a width, alignment or offset no field allows (read 0, dropped).
    pub bad_access: u64,
    /// Status writes that clear bits or skip a step of 3.1.1 (ignored).
    pub bad_status: u64,
    /// FEATURES_OK refused: features not offered, or no VERSION_1 (3.1.1).
    pub features_refused: u64,
    /// Feature writes after FEATURES_OK (ignored).
    pub late_feature_writes: u64,
    /// Queue register accesses with `queue_select` out of range.
    pub bad_queue_select: u64,
    /// Queue configuration writes while the queue is enabled (ignored).
    pub queue_write_while_enabled: u64,
    /// `queue_enable` writes refused (0 written, or a bad geometry).
    pub bad_queue_enable: u64,
    /// `queue_reset` writes without `VIRTIO_F_RING_RESET` (ignored).
    pub bad_queue_reset: u64,
    /// Notifications of a queue that is not live, or before DRIVER_OK.
    pub bad_notify: u64,
    /// Malformed chains or rings: DEVICE_NEEDS_RESET set.
    pub queue_errors: u64,
    /// `VIRTIO_PCI_CAP_PCI_CFG` window accesses naming no valid BAR range.
    pub bad_pci_cfg_window: u64,
    /// Status writes other than 0 while a reset waits for requests still in
    /// flight (ignored: 4.1.4.3.2, the driver waits for 0 first).
    pub write_during_reset: u64,
}

/// A virtio device on the modern PCI transport, over guest memory `M`.
pub struct VirtioPci<D, M> {
    cs: ConfigSpace,
    bars: [BarInfo; 1],
    device: D,
    mem: M,
    queues: Vec<Queue>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    /// What `device_status` reads while a reset waits for the device's
    /// requests to leave guest memory (`None`: no reset pending).
    resetting: Option<u8>,
    config_generation: u8,
    queue_select: u16,
    isr: u8,
    pci_cfg_cap: u16,
    last_error: Option<QueueError>,
    stats: TransportStats,
    msix: Option<Msix>,
    /// `config_msix_vector`.
    config_vector: u16,
    /// `queue_msix_vector` of each queue.
    queue_vectors: Vec<u16>,
    /// Messages sent and not yet taken by the segment.
    msi_out: Vec<MsiMessage>,
}

const BAR: BarInfo = BarInfo {
    index: BAR_INDEX,
    size: BAR_SIZE,
    is_64bit: true,
    prefetchable: true,
    backing: BarBacking::Trapped,
};

fn natural(off: u64, size: u8, width: u8) -> bool {
    size == width && off % u64::from(width) == 0
}

impl<D: VirtioDevice, M: GuestMemory> VirtioPci<D, M> {
    /// `device` on the transport, reaching guest RAM through `mem`.
    pub fn new(device: D, mem: M) -> Self {
        let queues = (0..device.num_queues())
            .map(|_| Queue::new(device.queue_max_size()))
            .collect();
        let num_queues = usize::from(device.num_queues());
        let mut t = VirtioPci {
            cs: ConfigSpace::new(),
            bars: [BAR],
            device,
            mem,
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            resetting: None,
            config_generation: 0,
            queue_select: 0,
            isr: 0,
            pci_cfg_cap: 0,
            last_error: None,
            stats: TransportStats::default(),
            msix: None,
            config_vector: VIRTIO_MSI_NO_VECTOR,
            queue_vectors: alloc::vec![VIRTIO_MSI_NO_VECTOR; num_queues],
            msi_out: Vec::new(),
        };
        t.build_config_space();
        t
    }

    fn build_config_space(&mut self) {
        let mut cs = ConfigSpace::new();
        let device_id = VIRTIO_PCI_DEVICE_BASE.wrapping_add(self.device.device_type());
        cs.set_u16(reg::VENDOR_ID, VIRTIO_PCI_VENDOR);
        cs.set_u16(reg::DEVICE_ID, device_id);
        cs.set_u32(0x08, (self.device.pci_class() & 0x00ff_ffff) << 8 | 1);
        cs.set_u16(0x2c, VIRTIO_PCI_VENDOR);
        cs.set_u16(0x2e, device_id);
        cs.set_writable(
            reg::COMMAND,
            2,
            u32::from(command::MEMORY_SPACE | command::BUS_MASTER | command::INTERRUPT_DISABLE),
        );
        let off = reg::BAR0 + 4 * u16::from(BAR_INDEX);
        cs.set_u32(off, 0b1100);
        cs.set_writable(off, 4, !(BAR_SIZE as u32 - 1) & !0xf);
        cs.set_writable(off + 4, 4, 0xffff_ffff);
        cs.set_writable(reg::INTERRUPT_LINE, 1, 0xff);
        cs.set_u8(reg::INTERRUPT_PIN, 1);
        let notify_len = u64::from(self.device.num_queues()) * u64::from(NOTIFY_OFF_MULTIPLIER);
        let structures = [
            (cap::COMMON_CFG, COMMON_OFFSET, COMMON_LEN, 16u8),
            (cap::NOTIFY_CFG, NOTIFY_OFFSET, notify_len, 20),
            (cap::ISR_CFG, ISR_OFFSET, 1, 16),
            (
                cap::DEVICE_CFG,
                DEVICE_OFFSET,
                self.device.config_len() as u64,
                16,
            ),
        ];
        for (cfg_type, offset, length, cap_len) in structures {
            if let Ok(at) = cs.add_capability(cap::VENDOR_SPECIFIC, cap_len) {
                Self::fill_cap(&mut cs, at, cap_len, cfg_type, offset as u32, length as u32);
                if cfg_type == cap::NOTIFY_CFG {
                    cs.set_u32(at + 16, NOTIFY_OFF_MULTIPLIER);
                }
            }
        }
        if let Ok(at) = cs.add_capability(cap::VENDOR_SPECIFIC, 20) {
            Self::fill_cap(&mut cs, at, 20, cap::PCI_CFG, 0, 0);
            cs.set_writable(at + 4, 1, 0xff);
            cs.set_writable(at + 8, 4, 0xffff_ffff);
            cs.set_writable(at + 12, 4, 0xffff_ffff);
            cs.set_writable(at + 16, 4, 0xffff_ffff);
            self.pci_cfg_cap = at;
        }
        // One vector per queue and one for configuration changes.
        let layout = MsixLayout {
            vectors: self.device.num_queues().saturating_add(1),
            table_bar: BAR_INDEX,
            table_offset: MSIX_TABLE_OFFSET as u32,
            pba_bar: BAR_INDEX,
            pba_offset: MSIX_PBA_OFFSET as u32,
        };
        self.msix = Msix::add_to(&mut cs, layout).ok();
        self.cs = cs;
    }

    /// `struct virtio_pci_cap` (4.1.4): cap_len, cfg_type, bar, id, offset, length.
    fn fill_cap(
        cs: &mut ConfigSpace,
        at: u16,
        cap_len: u8,
        cfg_type: u8,
        offset: u32,
        length: u32,
    ) {
        cs.set_u8(at + 2, cap_len);
        cs.set_u8(at + 3, cfg_type);
        cs.set_u8(at + 4, BAR_INDEX);
        cs.set_u8(at + 5, 0);
        cs.set_u32(at + 8, offset);
        cs.set_u32(at + 12, length);
    }

    /// The device type behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device type behind the transport, mutably (for its owner's setup).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Counters of driver mistakes.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Counters of the MSI-X table: messages sent, interrupts held pending
    /// while masked, bad table/PBA accesses.
    pub fn msix_stats(&self) -> Option<MsixStats> {
        self.msix.as_ref().map(Msix::stats)
    }

    /// Whether MSI-X is enabled (Message Control.MSI-X Enable).
    pub fn msix_enabled(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| m.enabled(&self.cs))
    }

    /// The device status byte (2.1).
    pub fn device_status(&self) -> u8 {
        self.status
    }

    /// The features the driver negotiated (valid once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The queue error that set DEVICE_NEEDS_RESET, if any.
    pub fn last_error(&self) -> Option<QueueError> {
        self.last_error
    }

    /// Every feature offered: the device type's plus the transport's.
    pub fn offered_features(&self) -> u64 {
        self.device.device_features()
            | feature::VERSION_1
            | feature::INDIRECT_DESC
            | feature::EVENT_IDX
            | feature::RING_RESET
    }

    /// The device-specific configuration changed (device side): bump
    /// `config_generation` and send a configuration change notification (4.1.4.5).
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & device_status::DRIVER_OK != 0 {
            self.signal_config();
        }
    }

    /// Finishes asynchronously completed backend work; the owner calls this
    /// when a backend signals completion, then re-reads [`PciFunction::intx`]
    /// (`Segment::refresh_intx`). Returns whether an interrupt is now pending.
    pub fn poll(&mut self) -> bool {
        if self.live() {
            let r = self.device.poll(&mut self.queues, &self.mem);
            let r = r.and_then(|()| self.rearm_notifications());
            self.after_processing(r);
        } else if self.resetting.is_some() {
            // Completions of requests from before the reset: dropped by the
            // device, they only let the reset finish.
            let _ = self.device.poll(&mut self.queues, &self.mem);
            self.finish_reset();
        }
        self.isr != 0
    }

    /// Ends a pending reset once no request uses guest memory any more.
    fn finish_reset(&mut self) {
        if self.device.quiesced() {
            self.resetting = None;
        }
    }

    fn live(&self) -> bool {
        self.status & device_status::DRIVER_OK != 0
            && self.status & (device_status::NEEDS_RESET | device_status::FAILED) == 0
    }

    fn raise_isr(&mut self, bits: u8) {
        self.isr |= bits;
        self.sync_interrupt_status();
    }

    /// A used buffer notification for queue `index` (4.1.5.3): ISR and INTx
    /// with MSI-X disabled; with it enabled, the queue's vector, if any.
    fn signal_queue(&mut self, index: usize) {
        if !self.msix_enabled() {
            self.raise_isr(isr::QUEUE);
            return;
        }
        let vector = self
            .queue_vectors
            .get(index)
            .copied()
            .unwrap_or(VIRTIO_MSI_NO_VECTOR);
        self.fire(vector);
    }

    /// A configuration change notification (4.1.5.4): the ISR bit is set
    /// either way (4.1.4.5.1); with MSI-X enabled, `config_msix_vector`'s
    /// message is sent instead of INTx, if it names a vector.
    fn signal_config(&mut self) {
        self.raise_isr(isr::CONFIG);
        if self.msix_enabled() {
            self.fire(self.config_vector);
        }
    }

    fn fire(&mut self, vector: u16) {
        if vector == VIRTIO_MSI_NO_VECTOR {
            return;
        }
        if let Some(m) = self.msix.as_mut() {
            let _ = m.fire(&self.cs, vector, &mut self.msi_out);
        }
    }

    /// A vector written to `config_msix_vector` / `queue_msix_vector`: kept
    /// if it names a table entry, else the mapping fails and the field reads
    /// `VIRTIO_MSI_NO_VECTOR` (4.1.5.1.2.1).
    fn valid_vector(&self, v: u16) -> u16 {
        match &self.msix {
            Some(m) if v < m.vectors() => v,
            _ => VIRTIO_MSI_NO_VECTOR,
        }
    }

    /// Status.Interrupt Status mirrors the pending INTx (PCI Express Base 6.0,
    /// 7.5.1.1.4), only while MSI-X is disabled (virtio 1.2, 4.1.4.5.1).
    fn sync_interrupt_status(&mut self) {
        let st = self.cs.raw(reg::STATUS, 2) as u16;
        let st = if self.isr != 0 && !self.msix_enabled() {
            st | status::INTERRUPT_STATUS
        } else {
            st & !status::INTERRUPT_STATUS
        };
        self.cs.set_u16(reg::STATUS, st);
    }

    /// Device reset (2.4): status 0, features and queues forgotten.
    fn device_reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        self.isr = 0;
        self.last_error = None;
        // 4.1.5.1.2.1: every event unmapped on reset.
        self.config_vector = VIRTIO_MSI_NO_VECTOR;
        self.queue_vectors.fill(VIRTIO_MSI_NO_VECTOR);
        self.sync_interrupt_status();
    }

    fn needs_reset(&mut self, e: QueueError) {
        self.stats.queue_errors += 1;
        self.last_error = Some(e);
        self.status |= device_status::NEEDS_RESET;
        if self.status & device_status::DRIVER_OK != 0 {
            // 2.1.2: after setting DEVICE_NEEDS_RESET with DRIVER_OK, send a
            // configuration change notification.
            self.signal_config();
        }
    }

    fn after_processing(&mut self, r: Result<(), QueueError>) {
        if let Err(e) = r {
            self.needs_reset(e);
            return;
        }
        // Bit i: queue i needs a used buffer notification (at most 64 queues
        // are notified per round; virtio-blk has one).
        let mut notify = 0u64;
        for (i, q) in self.queues.iter_mut().enumerate().take(64) {
            if !q.ready {
                continue;
            }
            match q.needs_notification(&self.mem) {
                Ok(n) => notify |= u64::from(n) << i,
                Err(e) => {
                    self.needs_reset(e);
                    return;
                }
            }
        }
        // Lowest queue first; one step per queue to notify, not per bit.
        while notify != 0 {
            self.signal_queue(notify.trailing_zeros() as usize);
            notify &= notify - 1;
        }
    }

    fn notify(&mut self, index: u16) {
        let ready = self.queues.get(usize::from(index)).is_some_and(|q| q.ready);
        if !self.live() || !ready {
            self.stats.bad_notify += 1;
            return;
        }
        let r = self.process_and_rearm(index);
        self.after_processing(r);
    }

    /// Processes queue `index`, then settles its notifications (2.7.10):
    /// while the device [`polls`](VirtioDevice::polls) it (requests in
    /// flight, whose completion processes it again), the driver is asked
    /// not to notify, which saves it a trap per request under a
    /// hypervisor; otherwise notifications are re-armed and the queue looked
    /// at again, as the driver may have added buffers without notifying
    /// while the device worked. Bounded so a guest cannot hold the trap
    /// forever; it will notify again.
    fn process_and_rearm(&mut self, index: u16) -> Result<(), QueueError> {
        for _ in 0..4 {
            self.device
                .process_queue(index, &mut self.queues, &self.mem)?;
            if !self.rearm(index)? {
                break;
            }
        }
        Ok(())
    }

    /// Settles queue `index`'s notifications: disabled while the device
    /// polls it; else enabled, returning whether buffers are already
    /// available (to be processed now).
    fn rearm(&mut self, index: u16) -> Result<bool, QueueError> {
        let polls = self.device.polls(index);
        match self.queues.get_mut(usize::from(index)) {
            Some(q) if q.ready && polls => q.disable_notification(&self.mem).map(|()| false),
            Some(q) if q.ready => q.enable_notification(&self.mem),
            _ => Ok(false),
        }
    }

    /// After completions: each ready queue's notifications settled again
    /// (a queue whose last request completed asks for notifications again
    /// and is processed if the driver made buffers available meanwhile).
    fn rearm_notifications(&mut self) -> Result<(), QueueError> {
        for index in 0..self.queues.len().min(usize::from(u16::MAX)) as u16 {
            if self.rearm(index)? {
                self.process_and_rearm(index)?;
            }
        }
        Ok(())
    }

    fn write_status(&mut self, v: u8) {
        use device_status::*;
        if v == 0 {
            // 2.4.1 / 4.1.4.3.2: the reset is complete (device_status reads 0)
            // only when no request still uses guest memory; until then it
            // reads what it read before.
            let before = self.resetting.unwrap_or(self.status);
            self.device_reset();
            self.resetting = (!self.device.quiesced()).then_some(before.max(1));
            return;
        }
        if self.resetting.is_some() {
            self.stats.write_during_reset += 1;
            return;
        }
        let old = self.status;
        let v = (v & !NEEDS_RESET) | (old & NEEDS_RESET);
        let in_order = (v & DRIVER == 0 || v & ACKNOWLEDGE != 0)
            && (v & FEATURES_OK == 0 || v & DRIVER != 0)
            && (v & DRIVER_OK == 0 || v & FEATURES_OK != 0);
        if v & old != old || !in_order {
            self.stats.bad_status += 1;
            return;
        }
        let mut new = v;
        if v & FEATURES_OK != 0 && old & FEATURES_OK == 0 {
            let f = self.driver_features;
            if f & !self.offered_features() != 0 || f & feature::VERSION_1 == 0 {
                self.stats.features_refused += 1;
                new &= !(FEATURES_OK | DRIVER_OK);
            }
        }
        if new & DRIVER_OK != 0 && old & DRIVER_OK == 0 {
            self.device.activate(self.driver_features);
        }
        self.status = new;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        let q = self.queues.get_mut(usize::from(self.queue_select));
        if q.is_none() {
            self.stats.bad_queue_select += 1;
        }
        q
    }

    fn common_read(&mut self, off: u64, size: u8) -> u64 {
        use common::*;
        let q = self.queues.get(usize::from(self.queue_select));
        let v: u64 = match off {
            DEVICE_FEATURE_SELECT if natural(off, size, 4) => self.device_feature_select.into(),
            DEVICE_FEATURE if natural(off, size, 4) => match self.device_feature_select {
                0 => self.offered_features() & 0xffff_ffff,
                1 => self.offered_features() >> 32,
                _ => 0,
            },
            DRIVER_FEATURE_SELECT if natural(off, size, 4) => self.driver_feature_select.into(),
            DRIVER_FEATURE if natural(off, size, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            CONFIG_MSIX_VECTOR if natural(off, size, 2) => self.config_vector.into(),
            NUM_QUEUES if natural(off, size, 2) => self.queues.len() as u64,
            DEVICE_STATUS if natural(off, size, 1) => self.resetting.unwrap_or(self.status).into(),
            CONFIG_GENERATION if natural(off, size, 1) => self.config_generation.into(),
            QUEUE_SELECT if natural(off, size, 2) => self.queue_select.into(),
            QUEUE_SIZE if natural(off, size, 2) => q.map_or(0, |q| q.size).into(),
            QUEUE_MSIX_VECTOR if natural(off, size, 2) => {
                if q.is_some() {
                    self.queue_vectors
                        .get(usize::from(self.queue_select))
                        .copied()
                        .unwrap_or(VIRTIO_MSI_NO_VECTOR)
                        .into()
                } else {
                    0
                }
            }
            QUEUE_ENABLE if natural(off, size, 2) => q.map_or(0, |q| u64::from(q.ready)),
            QUEUE_NOTIFY_OFF if natural(off, size, 2) => {
                if q.is_some() {
                    self.queue_select.into()
                } else {
                    0
                }
            }
            QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE if natural(off, size, 8) => {
                q.map_or(0, |q| Self::queue_addr(q, off))
            }
            0x20..=0x37 if natural(off, size, 4) => {
                let full = q.map_or(0, |q| Self::queue_addr(q, off & !7));
                if off % 8 == 0 {
                    full & 0xffff_ffff
                } else {
                    full >> 32
                }
            }
            QUEUE_NOTIFY_DATA if natural(off, size, 2) => 0,
            QUEUE_RESET if natural(off, size, 2) => 0,
            _ => {
                self.stats.bad_access += 1;
                0
            }
        };
        v
    }

    fn queue_addr(q: &Queue, reg: u64) -> u64 {
        match reg {
            common::QUEUE_DESC => q.desc_table.0,
            common::QUEUE_DRIVER => q.avail_ring.0,
            _ => q.used_ring.0,
        }
    }

    fn common_write(&mut self, off: u64, size: u8, value: u64) {
        use common::*;
        match off {
            DEVICE_FEATURE_SELECT if natural(off, size, 4) => {
                self.device_feature_select = value as u32
            }
            DRIVER_FEATURE_SELECT if natural(off, size, 4) => {
                self.driver_feature_select = value as u32
            }
            DRIVER_FEATURE if natural(off, size, 4) => {
                if self.status & device_status::FEATURES_OK != 0 {
                    self.stats.late_feature_writes += 1;
                    return;
                }
                let v = value & 0xffff_ffff;
                match self.driver_feature_select {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | v << 32,
                    // Only 64 feature bits exist here; a set bit above them
                    // can never be acceptable.
                    _ if v != 0 => self.driver_features |= 1 << 63,
                    _ => {}
                }
            }
            CONFIG_MSIX_VECTOR if natural(off, size, 2) => {
                self.config_vector = self.valid_vector(value as u16)
            }
            QUEUE_MSIX_VECTOR if natural(off, size, 2) => {
                let v = self.valid_vector(value as u16);
                match self.queue_vectors.get_mut(usize::from(self.queue_select)) {
                    Some(slot) => *slot = v,
                    None => self.stats.bad_queue_select += 1,
                }
            }
            DEVICE_STATUS if natural(off, size, 1) => self.write_status(value as u8),
            QUEUE_SELECT if natural(off, size, 2) => self.queue_select = value as u16,
            QUEUE_SIZE if natural(off, size, 2) => self.queue_config(|q| q.size = value as u16),
            QUEUE_ENABLE if natural(off, size, 2) => self.queue_enable(value as u16),
            QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE if natural(off, size, 8) => {
                self.queue_config(|q| Self::set_queue_addr(q, off, value))
            }
            0x20..=0x37 if natural(off, size, 4) => {
                let reg = off & !7;
                let high = off % 8 != 0;
                self.queue_config(|q| {
                    let old = Self::queue_addr(q, reg);
                    let v = if high {
                        (old & 0xffff_ffff) | (value & 0xffff_ffff) << 32
                    } else {
                        (old & !0xffff_ffff) | (value & 0xffff_ffff)
                    };
                    Self::set_queue_addr(q, reg, v);
                })
            }
            QUEUE_RESET if natural(off, size, 2) => self.queue_reset(value as u16),
            // Read-only fields at their natural width: the write is dropped.
            DEVICE_FEATURE if natural(off, size, 4) => {}
            NUM_QUEUES | QUEUE_NOTIFY_OFF | QUEUE_NOTIFY_DATA if natural(off, size, 2) => {}
            CONFIG_GENERATION if natural(off, size, 1) => {}
            _ => self.stats.bad_access += 1,
        }
    }

    fn set_queue_addr(q: &mut Queue, reg: u64, v: u64) {
        match reg {
            common::QUEUE_DESC => q.desc_table = Ipa(v),
            common::QUEUE_DRIVER => q.avail_ring = Ipa(v),
            _ => q.used_ring = Ipa(v),
        }
    }

    /// A write to a queue's configuration, allowed only while it is disabled
    /// (4.1.4.3.2).
    fn queue_config(&mut self, f: impl FnOnce(&mut Queue)) {
        let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
            self.stats.bad_queue_select += 1;
            return;
        };
        if q.ready {
            self.stats.queue_write_while_enabled += 1;
            return;
        }
        f(q);
    }

    fn queue_enable(&mut self, v: u16) {
        let features = self.driver_features;
        let mem = &self.mem;
        let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
            self.stats.bad_queue_select += 1;
            return;
        };
        // 4.1.4.3.2: the driver MUST NOT write 0 to queue_enable.
        if v != 1 || q.ready || q.validate(mem).is_err() {
            self.stats.bad_queue_enable += 1;
            return;
        }
        q.set_features(
            features & feature::EVENT_IDX != 0,
            features & feature::INDIRECT_DESC != 0,
        );
        q.ready = true;
    }

    fn queue_reset(&mut self, v: u16) {
        if self.driver_features & feature::RING_RESET == 0 || v != 1 {
            self.stats.bad_queue_reset += 1;
            return;
        }
        let index = self.queue_select;
        if let Some(q) = self.selected() {
            q.reset();
            self.device.queue_reset(index);
        }
    }

    fn device_cfg_access(&mut self, off: u64, size: u8) -> Option<usize> {
        let len = self.device.config_len() as u64;
        let ok = matches!(size, 1 | 2 | 4)
            && off % u64::from(size) == 0
            && off.checked_add(u64::from(size)).is_some_and(|e| e <= len);
        if ok {
            Some(off as usize)
        } else {
            self.stats.bad_access += 1;
            None
        }
    }

    fn read_bar(&mut self, offset: u64, size: u8) -> u64 {
        if !matches!(size, 1 | 2 | 4 | 8) {
            self.stats.bad_access += 1;
            return 0;
        }
        match offset {
            o if o < ISR_OFFSET => self.common_read(o - COMMON_OFFSET, size),
            o if o == ISR_OFFSET && size == 1 => {
                // 4.1.4.5: reading ISR status clears it and de-asserts INTx.
                let v = self.isr;
                self.isr = 0;
                self.sync_interrupt_status();
                v.into()
            }
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + MSIX_REGION_LEN).contains(&o) => {
                match self.msix.as_mut() {
                    Some(m) => m.table_read(o - MSIX_TABLE_OFFSET, size),
                    None => u64::MAX,
                }
            }
            o if (MSIX_PBA_OFFSET..MSIX_PBA_OFFSET + MSIX_REGION_LEN).contains(&o) => {
                match self.msix.as_mut() {
                    Some(m) => m.pba_read(o - MSIX_PBA_OFFSET, size),
                    None => u64::MAX,
                }
            }
            o if (DEVICE_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                match self.device_cfg_access(o - DEVICE_OFFSET, size) {
                    Some(at) => {
                        let mut b = [0u8; 4];
                        let n = usize::from(size);
                        if let Some(buf) = b.get_mut(..n) {
                            self.device.read_config(at, buf);
                        }
                        u32::from_le_bytes(b).into()
                    }
                    None => 0,
                }
            }
            // The notification area and the rest read 0.
            _ => {
                self.stats.bad_access += 1;
                0
            }
        }
    }

    fn write_bar(&mut self, offset: u64, size: u8, value: u64) {
        if !matches!(size, 1 | 2 | 4 | 8) {
            self.stats.bad_access += 1;
            return;
        }
        match offset {
            o if o < ISR_OFFSET => self.common_write(o - COMMON_OFFSET, size, value),
            o if (DEVICE_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                if let Some(at) = self.device_cfg_access(o - DEVICE_OFFSET, size) {
                    let b = (value as u32).to_le_bytes();
                    if let Some(data) = b.get(..usize::from(size)) {
                        self.device.write_config(at, data);
                    }
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + MSIX_REGION_LEN).contains(&o) => {
                if let Some(m) = self.msix.as_mut() {
                    m.table_write(
                        &self.cs,
                        o - MSIX_TABLE_OFFSET,
                        size,
                        value,
                        &mut self.msi_out,
                    );
                }
            }
            o if (MSIX_PBA_OFFSET..MSIX_PBA_OFFSET + MSIX_REGION_LEN).contains(&o) => {
                if let Some(m) = self.msix.as_mut() {
                    m.pba_write(o - MSIX_PBA_OFFSET, size);
                }
            }
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                let rel = o - NOTIFY_OFFSET;
                let index = rel / u64::from(NOTIFY_OFF_MULTIPLIER);
                // 4.1.4.4: a 16-bit write of the queue index (no
                // VIRTIO_F_NOTIFICATION_DATA offered).
                if size == 2
                    && rel % u64::from(NOTIFY_OFF_MULTIPLIER) == 0
                    && index < self.queues.len() as u64
                {
                    self.notify(index as u16);
                } else {
                    self.stats.bad_access += 1;
                }
            }
            _ => self.stats.bad_access += 1,
        }
    }

    /// The `VIRTIO_PCI_CAP_PCI_CFG` window as programmed: (BAR offset,
    /// length) if it names `cap.length` bytes inside our BAR, aligned
    /// (4.1.4.9.1); a window longer than `pci_cfg_data` gets nothing.
    fn pci_cfg_window(&mut self) -> Option<(u64, u8)> {
        let at = self.pci_cfg_cap;
        let bar = self.cs.raw(at + 4, 1) as u8;
        let offset = u64::from(self.cs.raw(at + 8, 4));
        let length = self.cs.raw(at + 12, 4);
        let ok = bar == BAR_INDEX
            && matches!(length, 1 | 2 | 4)
            && offset % u64::from(length) == 0
            && offset + u64::from(length) <= BAR_SIZE;
        if ok {
            Some((offset, length as u8))
        } else {
            self.stats.bad_pci_cfg_window += 1;
            None
        }
    }

    fn touches_pci_cfg_data(&self, offset: u16, size: u8) -> bool {
        let data = self.pci_cfg_cap + 16;
        self.pci_cfg_cap != 0 && offset < data + 4 && data < offset.saturating_add(u16::from(size))
    }
}

impl<D: VirtioDevice, M: GuestMemory> PciFunction for VirtioPci<D, M> {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        if self.touches_pci_cfg_data(offset, size) {
            let data = self.pci_cfg_cap + 16;
            let v = match self.pci_cfg_window() {
                Some((off, len)) => self.read_bar(off, len) as u32,
                None => 0,
            };
            self.cs.set_u32(data, v);
        }
        self.cs.read(offset, size)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32, _: &mut Vec<Request>) {
        self.cs.write(offset, size, value);
        if let Some(m) = self.msix.as_mut() {
            if m.touches_control(offset, size) {
                // Enable or Function Mask changed: INTx follows, and vectors
                // no longer masked send what they held (PCI 6.8.2.9).
                m.deliver_unmasked(&self.cs, &mut self.msi_out);
                self.sync_interrupt_status();
            }
        }
        if self.touches_pci_cfg_data(offset, size) {
            let data = self.cs.raw(self.pci_cfg_cap + 16, 4);
            if let Some((off, len)) = self.pci_cfg_window() {
                let mask = if len == 4 {
                    u32::MAX
                } else {
                    (1u32 << (8 * len)) - 1
                };
                self.write_bar(off, len, u64::from(data & mask));
            }
        }
    }

    fn config_space(&self) -> &ConfigSpace {
        &self.cs
    }

    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        None
    }

    fn bars(&self) -> &[BarInfo] {
        &self.bars
    }

    fn bar_read(&mut self, bar: u8, offset: u64, size: u8, _: &mut Vec<Request>) -> u64 {
        if bar != BAR_INDEX
            || offset
                .checked_add(u64::from(size))
                .is_none_or(|e| e > BAR_SIZE)
        {
            self.stats.bad_access += 1;
            return 0;
        }
        self.read_bar(offset, size)
    }

    fn bar_write(&mut self, bar: u8, offset: u64, size: u8, value: u64, _: &mut Vec<Request>) {
        if bar != BAR_INDEX
            || offset
                .checked_add(u64::from(size))
                .is_none_or(|e| e > BAR_SIZE)
        {
            self.stats.bad_access += 1;
            return;
        }
        self.write_bar(offset, size, value);
    }

    fn reset(&mut self) {
        self.device_reset();
        self.build_config_space();
        self.msi_out.clear();
    }

    fn intx(&self) -> Intx {
        let disabled = self.cs.raw(reg::COMMAND, 2) as u16 & command::INTERRUPT_DISABLE != 0;
        Intx::Level(self.isr != 0 && !disabled && !self.msix_enabled())
    }

    fn take_msi(&mut self, out: &mut Vec<MsiMessage>) {
        out.append(&mut self.msi_out);
    }

    fn msix_stats(&self) -> Option<MsixStats> {
        VirtioPci::msix_stats(self)
    }

    fn msix_layout(&self) -> Option<MsixLayout> {
        self.msix.as_ref().map(Msix::layout)
    }

    fn poll(&mut self) {
        VirtioPci::poll(self);
    }
}
