//! MSI of an assigned function (PCI Local Bus 3.0, 6.8.1; PCI Express Base
//! 6.0, 7.7.1): the guest's capability is a shadow, the device's holds only
//! what the hypervisor chose.
//!
//! * The guest programs a shadow capability (config filter rules
//!   [`crate::filter::MSI_32`] and its siblings): Message Control (MSI
//!   Enable, Multiple Message Enable), Message Address, Message Upper
//!   Address (64-bit capable functions), Message Data, and Mask Bits
//!   (per-vector masking capable functions). None of it is written to the
//!   device. Multiple Message Capable is the device's; a Multiple Message
//!   Enable above it is kept at it. Extended Message Data is not offered.
//! * The device's capability holds the host ITS doorbell
//!   ([`MsiRoute::doorbell`]) and, as Message Data, the first of
//!   consecutive EventIDs ([`EventIds::msi_base`], aligned so that the
//!   device's `data | vector` is `base + vector`, 6.8.1.6), written at
//!   assignment and after every reset.
//! * The device's MSI is enabled, with the guest's Multiple Message Enable,
//!   only while the guest has MSI enabled, MSI-X disabled (the two are never
//!   enabled together at the device), and a valid message: its address the
//!   guest's doorbell (GICD_SETSPI_NSR) and the data of every allocated
//!   vector an SPI of the guest's MBI range ([`MsiRoute::guest`]). A guest
//!   that enables MSI with anything else keeps the device's MSI disabled
//!   and is counted ([`MsiCapabilityStats::forged_messages`]). The guest's
//!   Mask Bits are mirrored to the device, which then holds its own pending
//!   bits; the guest reads them, with ours, as Pending Bits.
//! * The device's message arrives as an LPI; the hypervisor hands its
//!   EventID to [`AssignedMsi::fire`], which sends the guest's message for
//!   that vector (the data with the vector in its low bits), or sets its
//!   pending bit while the guest masks it (sent on unmask). The segment
//!   checks the message against the guest's doorbell and range again.

use crate::access::ConfigAccess;
use crate::filter::{self, Rule};
use crate::layout::{HostFunction, MsiLayout};
use crate::msix::MsiRoute;
use alloc::vec::Vec;
use vbus::config::msi::{control, MAX_VECTORS, MESSAGE_ADDRESS, MESSAGE_UPPER_ADDRESS};
use vbus::{Bdf, ConfigSpace, MsiCapabilityStats, MsiMessage};

/// The EventIDs (ITS, IHI 0069 5.1) an assigned function's device sends:
/// MSI-X vector `v` is EventID `v`, MSI vector `v` is EventID
/// `msi_base + v`. Apart, so that an event says which capability sent it;
/// `msi_base` is a multiple of the MSI vector count, as the device's data
/// field takes the vector in its low bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventIds {
    /// MSI-X vectors (EventIDs `0..msix`).
    pub msix: u32,
    /// The first MSI EventID.
    pub msi_base: u32,
    /// MSI vectors routed (EventIDs `msi_base..msi_base + msi`): what
    /// Multiple Message Capable asks for, 1 to 32.
    pub msi: u32,
}

impl EventIds {
    /// The EventIDs of `f`'s MSI-X and MSI (0 vectors for what it lacks).
    pub fn of(f: &HostFunction) -> EventIds {
        let msix = f.msix.map_or(0, |m| u32::from(m.vectors));
        let msi = f
            .msi
            .map_or(0, |m| 1u32 << m.multiple_message_capable())
            .min(MAX_VECTORS);
        let msi_base = if msi == 0 {
            msix
        } else {
            msix.div_ceil(msi) * msi
        };
        EventIds {
            msix,
            msi_base,
            msi,
        }
    }

    /// EventIDs in all (the size of the device's ITT: `0..total`).
    pub fn total(&self) -> u32 {
        self.msi_base + self.msi
    }
}

/// The device's MSI state as the hypervisor last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Device {
    enabled: bool,
    /// Multiple Message Enable.
    mme: u8,
    /// Mask Bits (per-vector masking capable devices).
    mask: u32,
}

/// An assigned function's MSI: the guest's capability in the function's
/// shadow config space, and the device's as the hypervisor programs it.
#[derive(Debug, Clone)]
pub struct AssignedMsi {
    layout: MsiLayout,
    route: MsiRoute,
    base: u32,
    /// log2 of the vectors routed (Multiple Message Capable as shown).
    mmc: u8,
    device: Device,
    /// Counted as forged since the guest's message last became valid or
    /// MSI was disabled.
    forged: bool,
    /// Counted as enabled together with MSI-X since one of them went off.
    both: bool,
    /// Shadow pending bits: interrupts taken while the guest masked them.
    pending: u32,
    out: Vec<MsiMessage>,
    stats: MsiCapabilityStats,
}

/// `MSI Enable` and `Multiple Message Enable` of Message Control, set on
/// the device's dword at the capability (Message Control is its upper half).
fn control_dword(cur: u32, enabled: bool, mme: u8) -> u32 {
    let field = control::ENABLE | control::MULTIPLE_MESSAGE_ENABLE | control::EXTENDED_DATA_ENABLE;
    let clear = u32::from(field) << 16;
    (cur & !clear) | (u32::from(enabled) | u32::from(mme) << 4) << 16
}

impl AssignedMsi {
    /// The MSI of `f`, routed by `route`, its EventIDs from `msi_base`;
    /// `None` if `f` has no MSI, or its device cannot hold the doorbell (32-bit
    /// addresses only and the doorbell above 4 GiB) or the EventIDs (16-bit data).
    pub fn new(f: &HostFunction, route: MsiRoute, events: EventIds) -> Option<AssignedMsi> {
        let layout = f.msi?;
        if !layout.is_64bit() && route.doorbell.0 > u64::from(u32::MAX) {
            return None;
        }
        if route.doorbell.0 & 3 != 0 || events.msi == 0 || events.total() > 0x1_0000 {
            return None;
        }
        Some(AssignedMsi {
            layout,
            route,
            base: events.msi_base,
            mmc: layout.multiple_message_capable(),
            device: Device {
                enabled: false,
                mme: 0,
                mask: 0,
            },
            forged: false,
            both: false,
            pending: 0,
            out: Vec::new(),
            stats: MsiCapabilityStats::default(),
        })
    }

    /// The capability's offset in config space.
    pub fn cap_offset(&self) -> u16 {
        self.layout.capability
    }

    /// Whether an access of `size` bytes at `offset` touches the capability.
    pub fn touches(&self, offset: u16, size: u8) -> bool {
        let at = self.layout.capability;
        offset < at + self.layout.capability_len() && at < offset + u16::from(size)
    }

    /// The filter rules of the capability's registers.
    pub fn rules(&self) -> &'static [Rule] {
        filter::msi(self.layout.is_64bit(), self.layout.per_vector_masking())
    }

    /// Number of vectors the guest can allocate (Multiple Message Capable as shown).
    pub fn vectors(&self) -> u32 {
        1 << self.mmc
    }

    /// The first EventID (vector `v` is `base + v`).
    pub fn event_base(&self) -> u32 {
        self.base
    }

    /// Counters.
    pub fn stats(&self) -> MsiCapabilityStats {
        self.stats
    }

    /// Moves the messages sent since the last call to `out`.
    pub fn take(&mut self, out: &mut Vec<MsiMessage>) {
        out.append(&mut self.out);
    }

    /// Bits of the vectors shown.
    fn vector_bits(&self) -> u32 {
        u32::MAX >> (32 - self.vectors())
    }

    /// Sets what the filter rules cannot say: Multiple Message Capable as
    /// routed, and one writable Mask Bit per vector (the rest reserved).
    pub fn shape(&self, cs: &mut ConfigSpace) {
        let at = self.layout.capability + vbus::config::msi::MESSAGE_CONTROL;
        let c = cs.raw(at, 2) as u16 & !control::MULTIPLE_MESSAGE_CAPABLE;
        cs.set_u16(at, c | u16::from(self.mmc) << 1);
        if let Some(m) = self.layout.mask_bits() {
            cs.set_writable(m, 4, self.vector_bits());
        }
    }

    fn control(&self, cs: &ConfigSpace) -> u16 {
        cs.raw(
            self.layout.capability + vbus::config::msi::MESSAGE_CONTROL,
            2,
        ) as u16
    }

    /// Whether the guest has MSI enabled.
    pub fn guest_enabled(&self, cs: &ConfigSpace) -> bool {
        self.control(cs) & control::ENABLE != 0
    }

    /// The guest's Multiple Message Enable (at most what is shown).
    fn guest_mme(&self, cs: &ConfigSpace) -> u8 {
        (((self.control(cs) & control::MULTIPLE_MESSAGE_ENABLE) >> 4) as u8).min(self.mmc)
    }

    /// The guest's Mask Bits (0 without per-vector masking).
    fn guest_mask(&self, cs: &ConfigSpace) -> u32 {
        self.layout
            .mask_bits()
            .map_or(0, |m| cs.raw(m, 4) & self.vector_bits())
    }

    /// The guest's message for vector `v`: its address, and its data with
    /// `v` in the low Multiple Message Enable bits (6.8.1.6); `None` past
    /// the vectors it allocated.
    pub fn message(&self, cs: &ConfigSpace, v: u32) -> Option<MsiMessage> {
        let n = 1u32 << self.guest_mme(cs);
        if v >= n {
            return None;
        }
        let at = self.layout.capability;
        let lo = u64::from(cs.raw(at + MESSAGE_ADDRESS, 4));
        let hi = if self.layout.is_64bit() {
            u64::from(cs.raw(at + MESSAGE_UPPER_ADDRESS, 4))
        } else {
            0
        };
        let data = cs.raw(self.layout.data(), 2);
        Some(MsiMessage {
            address: lo | hi << 32,
            data: (data & !(n - 1)) | v,
        })
    }

    /// Whether every allocated vector's message names the guest's doorbell
    /// and an SPI of its MBI range.
    fn valid(&self, cs: &ConfigSpace) -> bool {
        let t = self.route.guest;
        let n = 1u32 << self.guest_mme(cs);
        (0..n).all(|v| {
            self.message(cs, v)
                .is_some_and(|m| m.address == t.doorbell.0 && t.spis.contains(m.data))
        })
    }

    /// Whether the device's MSI is enabled now (for tests).
    pub fn device_enabled(&self) -> bool {
        self.device.enabled
    }

    fn write_device_control<H: ConfigAccess>(&mut self, host: &mut H, bdf: Bdf, on: bool, mme: u8) {
        let at = self.layout.capability;
        let cur = host.read32(bdf, at);
        host.write32(bdf, at, control_dword(cur, on, mme));
        self.device.enabled = on;
        self.device.mme = mme;
    }

    fn write_device_mask<H: ConfigAccess>(&mut self, host: &mut H, bdf: Bdf, mask: u32) {
        if let Some(m) = self.layout.mask_bits() {
            host.write32(bdf, m, mask);
            self.device.mask = mask;
        }
    }

    /// Programs the device's capability with the doorbell and the first
    /// EventID, MSI disabled and every vector masked (at assignment and
    /// after a reset of the device).
    pub fn program_device<H: ConfigAccess>(&mut self, host: &mut H, bdf: Bdf) {
        let at = self.layout.capability;
        self.write_device_control(host, bdf, false, 0);
        let db = self.route.doorbell.0;
        host.write32(bdf, at + MESSAGE_ADDRESS, db as u32);
        if self.layout.is_64bit() {
            host.write32(bdf, at + MESSAGE_UPPER_ADDRESS, (db >> 32) as u32);
        }
        // Message Data (08h or 0Ch: dword-aligned in both layouts) is 16
        // bits; the upper half, Extended Message Data, is written 0.
        host.write32(bdf, self.layout.data(), self.base & 0xffff);
        self.write_device_mask(host, bdf, u32::MAX);
    }

    /// Back to the reset state (nothing pending, nothing counted as in
    /// progress) and the device programmed again.
    pub fn reset<H: ConfigAccess>(&mut self, host: &mut H, bdf: Bdf) {
        self.pending = 0;
        self.forged = false;
        self.both = false;
        self.out.clear();
        self.program_device(host, bdf);
    }

    /// Brings the device's MSI in line with the guest's capability after a
    /// write to it, to MSI-X's Message Control or to Command (`msix_on`: the
    /// guest has MSI-X enabled): a Multiple Message Enable above what is
    /// shown is kept at it; the device is disabled first when it must be,
    /// its Mask Bits mirrored, then enabled; a forged message and MSI
    /// enabled with MSI-X are counted once each time they start; pending
    /// vectors the guest no longer masks are sent.
    pub fn sync<H: ConfigAccess>(
        &mut self,
        host: &mut H,
        bdf: Bdf,
        cs: &mut ConfigSpace,
        msix_on: bool,
    ) {
        let at = self.layout.capability + vbus::config::msi::MESSAGE_CONTROL;
        let c = self.control(cs);
        let mme = self.guest_mme(cs);
        if (c & control::MULTIPLE_MESSAGE_ENABLE) >> 4 != u16::from(mme) {
            let fixed = c & !control::MULTIPLE_MESSAGE_ENABLE | u16::from(mme) << 4;
            cs.set_u16(at, fixed);
        }
        let enabled = self.guest_enabled(cs);
        let valid = self.valid(cs);
        // Message Address 0 is no message: Linux writes it when it tears a
        // vector down, before it clears MSI Enable.
        let forged = enabled && !valid && self.message(cs, 0).is_some_and(|m| m.address != 0);
        if forged && !self.forged {
            self.stats.forged_messages += 1;
        }
        self.forged = forged;
        let both = enabled && msix_on;
        if both && !self.both {
            self.stats.both_enabled += 1;
        }
        self.both = both;
        if !enabled {
            // A disabled function sends nothing: what was pending is gone.
            self.pending = 0;
        }
        let want_on = enabled && valid && !msix_on;
        if self.device.enabled && (!want_on || self.device.mme != mme) {
            self.write_device_control(host, bdf, false, self.device.mme);
        }
        let mask = self.guest_mask(cs);
        if self.layout.per_vector_masking() && self.device.mask != mask {
            self.write_device_mask(host, bdf, mask);
        }
        if want_on && !self.device.enabled {
            self.write_device_control(host, bdf, true, mme);
        }
        self.deliver_unmasked(cs);
    }

    /// The device signalled vector `v` (its EventID less [`Self::event_base`]):
    /// the guest's message is sent, or its pending bit set while the guest
    /// masks the vector; nothing while MSI is disabled (counted) or past the
    /// vectors the guest allocated.
    pub fn fire(&mut self, cs: &ConfigSpace, v: u32) {
        if v >= self.vectors() {
            self.stats.spurious += 1;
            return;
        }
        if !self.guest_enabled(cs) {
            self.stats.disabled += 1;
            return;
        }
        let Some(m) = self.message(cs, v) else {
            self.stats.spurious += 1;
            return;
        };
        if self.guest_mask(cs) & 1 << v != 0 {
            self.pending |= 1 << v;
            self.stats.masked_pending += 1;
            return;
        }
        self.stats.sent += 1;
        self.out.push(m);
    }

    /// Sends every pending vector the guest no longer masks.
    pub fn deliver_unmasked(&mut self, cs: &ConfigSpace) {
        if self.pending == 0 || !self.guest_enabled(cs) {
            return;
        }
        let ready = self.pending & !self.guest_mask(cs);
        for v in 0..self.vectors() {
            if ready & 1 << v != 0 {
                self.pending &= !(1 << v);
                if let Some(m) = self.message(cs, v) {
                    self.stats.sent += 1;
                    self.out.push(m);
                }
            }
        }
    }

    /// The Pending Bits the guest reads: the device's own (it holds a
    /// vector the guest masks) and ours, for the vectors shown; `None`
    /// without per-vector masking.
    pub fn pending_bits<H: ConfigAccess>(&self, host: &mut H, bdf: Bdf) -> Option<u32> {
        let p = self.layout.pending_bits()?;
        Some((host.read32(bdf, p) | self.pending) & self.vector_bits())
    }

    /// Offset of the Pending Bits register, if there is one.
    pub fn pending_offset(&self) -> Option<u16> {
        self.layout.pending_bits()
    }
}

#[cfg(test)]
mod tests;
