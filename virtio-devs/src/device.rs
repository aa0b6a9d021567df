//! What a VirtIO device type implements for the transport (virtio 1.2, 2):
//! its ID, feature bits, configuration space and queue processing.

use crate::memory::GuestMemory;
use crate::queue::{Queue, QueueError};

/// Feature bits the transport owns (virtio 1.2, 6).
pub mod feature {
    /// `VIRTIO_F_INDIRECT_DESC` (28): indirect descriptor tables (2.7.5.3).
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `VIRTIO_F_EVENT_IDX` (29): `used_event` / `avail_event` (2.7.10).
    pub const EVENT_IDX: u64 = 1 << 29;
    /// `VIRTIO_F_VERSION_1` (32): a modern device; required here (no legacy).
    pub const VERSION_1: u64 = 1 << 32;
    /// `VIRTIO_F_RING_RESET` (40): per-queue reset through `queue_reset`.
    pub const RING_RESET: u64 = 1 << 40;
}

/// A device type behind the transport. The transport owns the queues'
/// registers and guest memory and calls in when the driver notifies.
pub trait VirtioDevice: Send {
    /// The virtio device ID (virtio 1.2, 5: 2 for block).
    fn device_type(&self) -> u16;

    /// The 24-bit PCI class code (base class, sub-class, programming interface).
    fn pci_class(&self) -> u32;

    /// The device-type feature bits offered (bits 0..=23 and 50..=127 are
    /// device-specific, 6); the transport adds its own.
    fn device_features(&self) -> u64;

    /// How many virtqueues.
    fn num_queues(&self) -> u16;

    /// The largest size of each queue (a power of two).
    fn queue_max_size(&self) -> u16;

    /// Length in bytes of the device-specific configuration structure.
    fn config_len(&self) -> usize;

    /// Reads `data.len()` bytes of the configuration structure at `offset`
    /// (the transport has checked that they lie inside it).
    fn read_config(&self, offset: usize, data: &mut [u8]);

    /// A driver write to the configuration structure (already bounds-checked).
    fn write_config(&mut self, offset: usize, data: &[u8]);

    /// The driver set DRIVER_OK with these negotiated features (3.1.1).
    fn activate(&mut self, features: u64);

    /// Device reset (2.4): drop all state derived from the driver.
    fn reset(&mut self);

    /// The driver reset queue `index` (`queue_reset`, 2.6.1): forget its
    /// in-flight buffers.
    fn queue_reset(&mut self, index: u16);

    /// The driver notified queue `index`: consume what is available. An
    /// error means the driver broke the queue rules; the transport then sets
    /// DEVICE_NEEDS_RESET.
    fn process_queue(
        &mut self,
        index: u16,
        queues: &mut [Queue],
        mem: &dyn GuestMemory,
    ) -> Result<(), QueueError>;

    /// Finishes work the backend completed asynchronously since the last call
    /// (and resumes queues that were waiting for room).
    fn poll(&mut self, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<(), QueueError>;

    /// Whether the device will process queue `index` again by itself, with
    /// no notification from the driver: it has requests in flight there,
    /// and [`VirtioDevice::poll`] takes what is available once one
    /// completes. The transport then asks the driver not to notify that
    /// queue (2.7.10), and asks again once this no longer holds.
    fn polls(&self, _index: u16) -> bool {
        false
    }

    /// Whether no request is still using guest memory (a backend may be
    /// writing into the guest's pages until it completes). A device reset is
    /// complete, and `device_status` reads 0, only once this holds (2.4.1).
    fn quiesced(&self) -> bool {
        true
    }
}
