//! The config-space register model: values, a writable mask and a
//! write-1-to-clear mask, applied byte by byte, plus the capability-chain builder.
//!
//! Every access width and alignment behaves as on hardware because the masks are
//! per byte: a 1-byte write to the upper half of a 16-bit register touches only
//! that byte. Bytes with neither mask bit set are read-only. Space that no
//! register or capability occupies reads 0: PCI Local Bus 6.1 requires reserved
//! registers to read 0, and PCI Express Base 7.6.1 makes an extended-capability
//! header of 0 at 0x100 mean "no extended capabilities".

use alloc::boxed::Box;

/// Size of one function's config space (PCI Express extended config space).
pub const CONFIG_SPACE_SIZE: usize = 4096;

/// Standard register offsets shared by type-0 and type-1 headers.
pub mod reg {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Status (16 bits).
    pub const STATUS: u16 = 0x06;
    /// Revision ID (8 bits).
    pub const REVISION_ID: u16 = 0x08;
    /// Class code: programming interface (8 bits), sub-class, base class.
    pub const CLASS_PROG_IF: u16 = 0x09;
    /// Cache line size (8 bits).
    pub const CACHE_LINE_SIZE: u16 = 0x0c;
    /// Header type (8 bits).
    pub const HEADER_TYPE: u16 = 0x0e;
    /// Base address register 0.
    pub const BAR0: u16 = 0x10;
    /// Capabilities pointer (8 bits).
    pub const CAPABILITIES_POINTER: u16 = 0x34;
    /// Interrupt line (8 bits).
    pub const INTERRUPT_LINE: u16 = 0x3c;
    /// Interrupt pin (8 bits).
    pub const INTERRUPT_PIN: u16 = 0x3d;
    /// First byte of the extended config space.
    pub const EXTENDED_START: u16 = 0x100;
}

/// Command register bits (PCI Express Base 7.5.1.1.3).
pub mod command {
    /// I/O Space Enable.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Memory Space Enable.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// Bus Master Enable.
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity Error Response.
    pub const PARITY_ERROR_RESPONSE: u16 = 1 << 6;
    /// SERR# Enable.
    pub const SERR_ENABLE: u16 = 1 << 8;
    /// Interrupt Disable.
    pub const INTERRUPT_DISABLE: u16 = 1 << 10;
}

/// Status register bits (PCI Express Base 7.5.1.1.4).
pub mod status {
    /// Interrupt Status.
    pub const INTERRUPT_STATUS: u16 = 1 << 3;
    /// Capabilities List.
    pub const CAPABILITIES_LIST: u16 = 1 << 4;
    /// Master Data Parity Error (RW1C).
    pub const MASTER_DATA_PARITY_ERROR: u16 = 1 << 8;
    /// Signaled Target Abort (RW1C).
    pub const SIGNALED_TARGET_ABORT: u16 = 1 << 11;
    /// Received Target Abort (RW1C).
    pub const RECEIVED_TARGET_ABORT: u16 = 1 << 12;
    /// Received Master Abort (RW1C).
    pub const RECEIVED_MASTER_ABORT: u16 = 1 << 13;
    /// Signaled System Error (RW1C).
    pub const SIGNALED_SYSTEM_ERROR: u16 = 1 << 14;
    /// Detected Parity Error (RW1C).
    pub const DETECTED_PARITY_ERROR: u16 = 1 << 15;
    /// All RW1C error bits of the Status and Secondary Status registers.
    pub const RW1C_ERRORS: u16 = MASTER_DATA_PARITY_ERROR
        | SIGNALED_TARGET_ABORT
        | RECEIVED_TARGET_ABORT
        | RECEIVED_MASTER_ABORT
        | SIGNALED_SYSTEM_ERROR
        | DETECTED_PARITY_ERROR;
}

/// Why a capability could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityError {
    /// The capability does not fit in the space left.
    NoSpace,
    /// A standard capability body must be at least its 2-byte header.
    TooShort,
}

/// One function's 4 KiB config space.
#[derive(Clone)]
pub struct ConfigSpace {
    value: Box<[u8; CONFIG_SPACE_SIZE]>,
    writable: Box<[u8; CONFIG_SPACE_SIZE]>,
    w1c: Box<[u8; CONFIG_SPACE_SIZE]>,
    last_cap: Option<u16>,
    next_cap: u16,
    last_ext_cap: Option<u16>,
    next_ext_cap: u16,
}

impl core::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor", &self.raw(reg::VENDOR_ID, 2))
            .field("device", &self.raw(reg::DEVICE_ID, 2))
            .finish_non_exhaustive()
    }
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}

fn in_range(offset: u16, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && usize::from(offset) + usize::from(size) <= CONFIG_SPACE_SIZE
}

fn ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

impl ConfigSpace {
    /// All zeros, nothing writable; standard capabilities are placed from 0x40.
    pub fn new() -> Self {
        ConfigSpace {
            value: Box::new([0; CONFIG_SPACE_SIZE]),
            writable: Box::new([0; CONFIG_SPACE_SIZE]),
            w1c: Box::new([0; CONFIG_SPACE_SIZE]),
            last_cap: None,
            next_cap: 0x40,
            last_ext_cap: None,
            next_ext_cap: reg::EXTENDED_START,
        }
    }

    /// A guest read. Sizes other than 1, 2, 4 or a range past 4 KiB read all ones.
    pub fn read(&self, offset: u16, size: u8) -> u32 {
        if !in_range(offset, size) {
            return ones(size);
        }
        self.raw(offset, size)
    }

    /// A guest write, applied through the masks byte by byte. Out-of-range or
    /// badly sized writes are ignored.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        if !in_range(offset, size) {
            return;
        }
        for i in 0..usize::from(size) {
            let at = usize::from(offset) + i;
            let v = (value >> (8 * i)) as u8;
            let w = self.writable[at];
            let c = self.w1c[at];
            self.value[at] = ((self.value[at] & !w) | (v & w)) & !(v & c);
        }
    }

    /// The current value, bypassing nothing (for device models and dumps).
    /// Out of range reads 0.
    pub fn raw(&self, offset: u16, size: u8) -> u32 {
        if !in_range(offset, size) {
            return 0;
        }
        let mut v = 0u32;
        for i in 0..usize::from(size) {
            v |= u32::from(self.value[usize::from(offset) + i]) << (8 * i);
        }
        v
    }

    fn set(&mut self, offset: u16, size: u8, value: u32) {
        if !in_range(offset, size) {
            return;
        }
        for i in 0..usize::from(size) {
            self.value[usize::from(offset) + i] = (value >> (8 * i)) as u8;
        }
    }

    /// Sets a byte's value directly (device-side, masks bypassed).
    pub fn set_u8(&mut self, offset: u16, value: u8) {
        self.set(offset, 1, value.into());
    }

    /// Sets a 16-bit value directly (device-side, masks bypassed).
    pub fn set_u16(&mut self, offset: u16, value: u16) {
        self.set(offset, 2, value.into());
    }

    /// Sets a 32-bit value directly (device-side, masks bypassed).
    pub fn set_u32(&mut self, offset: u16, value: u32) {
        self.set(offset, 4, value);
    }

    fn set_mask(mask: &mut [u8; CONFIG_SPACE_SIZE], offset: u16, size: u8, bits: u32) {
        // Device models declare masks at construction, never from guest input: a
        // size other than 1/2/4 or an offset past the end is a model bug, caught
        // by every debug build (tests) and ignored in release.
        debug_assert!(
            in_range(offset, size),
            "mask for {offset:#x}/{size} is not a 1-, 2- or 4-byte register in config space"
        );
        if !in_range(offset, size) {
            return;
        }
        for i in 0..usize::from(size) {
            mask[usize::from(offset) + i] = (bits >> (8 * i)) as u8;
        }
    }

    /// Declares which bits of a register the guest may write.
    pub fn set_writable(&mut self, offset: u16, size: u8, bits: u32) {
        Self::set_mask(&mut self.writable, offset, size, bits);
    }

    /// Declares which bits of a register are write-1-to-clear.
    pub fn set_w1c(&mut self, offset: u16, size: u8, bits: u32) {
        Self::set_mask(&mut self.w1c, offset, size, bits);
    }

    /// The writable mask of a register.
    pub fn writable(&self, offset: u16, size: u8) -> u32 {
        self.mask_of(&self.writable, offset, size)
    }

    /// The write-1-to-clear mask of a register.
    pub fn w1c(&self, offset: u16, size: u8) -> u32 {
        self.mask_of(&self.w1c, offset, size)
    }

    fn mask_of(&self, mask: &[u8; CONFIG_SPACE_SIZE], offset: u16, size: u8) -> u32 {
        if !in_range(offset, size) {
            return 0;
        }
        (0..usize::from(size)).fold(0, |v, i| {
            v | u32::from(mask[usize::from(offset) + i]) << (8 * i)
        })
    }

    /// Sets RW1C bits directly (device-side: an event happened).
    pub fn raise(&mut self, offset: u16, size: u8, bits: u32) {
        let v = self.raw(offset, size) | bits;
        self.set(offset, size, v);
    }

    /// All 4096 bytes, for dumps.
    pub fn bytes(&self) -> &[u8; CONFIG_SPACE_SIZE] {
        &self.value
    }

    /// Appends a standard capability with `body_len` bytes (header included) to the
    /// chain that starts at the Capabilities Pointer (0x34), sets Status.Capabilities
    /// List, and returns its dword-aligned offset.
    pub fn add_capability(&mut self, id: u8, body_len: u8) -> Result<u16, CapabilityError> {
        if body_len < 2 {
            return Err(CapabilityError::TooShort);
        }
        let at = self.next_cap;
        let end = at + u16::from(body_len);
        if end > reg::EXTENDED_START {
            return Err(CapabilityError::NoSpace);
        }
        self.set_u8(at, id);
        self.set_u8(at + 1, 0);
        match self.last_cap {
            None => self.set_u8(reg::CAPABILITIES_POINTER, at as u8),
            Some(prev) => self.set_u8(prev + 1, at as u8),
        }
        self.last_cap = Some(at);
        self.next_cap = (end + 3) & !3;
        let st = self.raw(reg::STATUS, 2) as u16 | status::CAPABILITIES_LIST;
        self.set_u16(reg::STATUS, st);
        Ok(at)
    }

    /// Appends an extended capability (PCI Express Base 7.6.3: ID in bits 15:0,
    /// version in 19:16, next offset in 31:20) from 0x100 on, returning its offset.
    pub fn add_ext_capability(
        &mut self,
        id: u16,
        version: u8,
        body_len: u16,
    ) -> Result<u16, CapabilityError> {
        if body_len < 4 {
            return Err(CapabilityError::TooShort);
        }
        let at = self.next_ext_cap;
        let end = usize::from(at) + usize::from(body_len);
        if end > CONFIG_SPACE_SIZE {
            return Err(CapabilityError::NoSpace);
        }
        self.set_u32(at, u32::from(id) | (u32::from(version & 0xf) << 16));
        if let Some(prev) = self.last_ext_cap {
            let h = self.raw(prev, 4) & 0x000f_ffff;
            self.set_u32(prev, h | (u32::from(at) << 20));
        }
        self.last_ext_cap = Some(at);
        self.next_ext_cap = ((end + 3) & !3) as u16;
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_bytes_ignore_writes() {
        let mut c = ConfigSpace::new();
        c.set_u16(0, 0x1b36);
        c.write(0, 4, 0xffff_ffff);
        assert_eq!(c.read(0, 2), 0x1b36);
    }

    #[test]
    fn writable_mask_is_applied_per_bit() {
        let mut c = ConfigSpace::new();
        c.set_writable(4, 2, 0x0546);
        c.write(4, 2, 0xffff);
        assert_eq!(c.read(4, 2), 0x0546);
    }

    #[test]
    fn byte_write_touches_only_its_byte() {
        let mut c = ConfigSpace::new();
        c.set_writable(0x18, 4, 0x00ff_ffff);
        c.write(0x18, 4, 0x0003_0201);
        c.write(0x19, 1, 0x55);
        assert_eq!(c.read(0x18, 4), 0x0003_5501);
    }

    #[test]
    fn w1c_bits_clear_on_one_and_survive_zero() {
        let mut c = ConfigSpace::new();
        c.set_w1c(6, 2, 0xf900);
        c.raise(6, 2, 0x3000);
        c.write(6, 2, 0x1000);
        assert_eq!(c.read(6, 2), 0x2000);
        c.write(6, 2, 0);
        assert_eq!(c.read(6, 2), 0x2000);
    }

    #[test]
    fn unaligned_word_read_spans_bytes() {
        let mut c = ConfigSpace::new();
        c.set_u32(0, 0x4433_2211);
        assert_eq!(c.read(1, 2), 0x3322);
        assert_eq!(c.read(3, 1), 0x44);
    }

    #[test]
    fn out_of_range_read_is_all_ones_and_write_ignored() {
        let mut c = ConfigSpace::new();
        assert_eq!(c.read(4094, 4), 0xffff_ffff);
        assert_eq!(c.read(0, 3), 0xffff_ffff);
        c.write(4095, 2, 0);
    }

    #[test]
    fn capabilities_are_chained_from_0x34_and_status_says_so() {
        let mut c = ConfigSpace::new();
        let a = c.add_capability(0x01, 8).unwrap();
        let b = c.add_capability(0x10, 0x3c).unwrap();
        assert_eq!(c.read(0x34, 1), u32::from(a));
        assert_eq!(c.read(u16::from(a as u8) + 1, 1), u32::from(b));
        assert_eq!(c.read(b + 1, 1), 0);
        assert_eq!(c.read(b, 1), 0x10);
        assert_ne!(c.read(6, 2) & u32::from(status::CAPABILITIES_LIST), 0);
        assert_eq!(b % 4, 0);
    }

    #[test]
    fn standard_capability_past_0x100_is_refused() {
        let mut c = ConfigSpace::new();
        c.add_capability(0x10, 0xb0).unwrap();
        assert_eq!(c.add_capability(0x01, 0x20), Err(CapabilityError::NoSpace));
    }

    #[test]
    fn extended_capabilities_start_at_0x100_with_12_bit_next() {
        let mut c = ConfigSpace::new();
        assert_eq!(c.read(0x100, 4), 0);
        let a = c.add_ext_capability(0x000d, 1, 8).unwrap();
        let b = c.add_ext_capability(0x0001, 2, 0x48).unwrap();
        assert_eq!(a, 0x100);
        assert_eq!(c.read(a, 4), 0x000d | (1 << 16) | (u32::from(b) << 20));
        assert_eq!(c.read(b, 4), 0x0001 | (2 << 16));
    }
}
